package nbd

import (
	"encoding/binary"
	"errors"
	"fmt"
	"unicode/utf8"
)

// Magic numbers (proto.md "Handshake" and "Transmission").
const (
	magicNBD        = 0x4e42444d41474943 // "NBDMAGIC"
	magicOpt        = 0x49484156454f5054 // "IHAVEOPT"
	magicOptReply   = 0x0003e889045565a9
	magicRequest    = 0x25609513
	magicSimple     = 0x67446698
	magicStructured = 0x668e33ef
)

// Handshake flags (server) and client flags.
const (
	flagFixedNewstyle   = 1 << 0
	flagNoZeroes        = 1 << 1
	clientFixedNewstyle = 1 << 0
	clientNoZeroes      = 1 << 1
)

// Transmission flags.
const (
	tflagHasFlags        = 1 << 0
	tflagSendFlush       = 1 << 2
	tflagSendFUA         = 1 << 3
	tflagSendTrim        = 1 << 5
	tflagSendWriteZeroes = 1 << 6
	tflagSendDF          = 1 << 7
	tflagCanMultiConn    = 1 << 8
	tflagSendFastZero    = 1 << 11
)

// Options.
const (
	optExportName      = 1
	optAbort           = 2
	optList            = 3
	optStartTLS        = 5
	optInfo            = 6
	optGo              = 7
	optStructuredReply = 8
)

// Option reply types.
const (
	repAck        = 1
	repServer     = 2
	repInfo       = 3
	repErrUnsup   = 1<<31 + 1
	repErrPolicy  = 1<<31 + 2
	repErrInvalid = 1<<31 + 3
	repErrTLSReqd = 1<<31 + 5
	repErrUnknown = 1<<31 + 6
)

// NBD_INFO types.
const (
	infoExport      = 0
	infoName        = 1
	infoDescription = 2
	infoBlockSize   = 3
)

// Commands and command flags.
const (
	cmdRead        = 0
	cmdWrite       = 1
	cmdDisc        = 2
	cmdFlush       = 3
	cmdTrim        = 4
	cmdWriteZeroes = 6

	cmdFlagFUA      = 1 << 0
	cmdFlagNoHole   = 1 << 1
	cmdFlagDF       = 1 << 2
	cmdFlagFastZero = 1 << 4
)

// Structured reply flags and types.
const (
	replyFlagDone       = 1 << 0
	replyTypeOffsetData = 1
	replyTypeOffsetHole = 2
	replyTypeError      = 1<<15 + 1
)

// Error values sent in replies (proto.md "Error values").
const (
	errnoPerm     = 1
	errnoIO       = 5
	errnoInval    = 22
	errnoNoSpace  = 28
	errnoShutdown = 108
)

// Limits.
const (
	maxNameLen    = 4096     // export names and messages (proto.md "strings")
	maxOptionLen  = 64 << 10 // option data accepted in one option
	maxBlock      = 32 << 20 // largest READ or WRITE payload
	preferredSize = 4096
	requestLen    = 28
	optHeaderLen  = 16
)

var (
	errBadRequestMagic = errors.New("nbd: bad request magic")
	errBadOptionMagic  = errors.New("nbd: bad option magic")
)

// request is one transmission request header.
type request struct {
	flags  uint16
	typ    uint16
	handle uint64
	off    uint64
	length uint32
}

// parseRequest decodes a 28-byte request header. A bad magic is the only
// error: the caller must then close the connection, as the stream can no
// longer be framed.
func parseRequest(b []byte) (request, error) {
	if len(b) < requestLen {
		return request{}, fmt.Errorf("nbd: short request header (%d bytes)", len(b))
	}
	if binary.BigEndian.Uint32(b[0:4]) != magicRequest {
		return request{}, errBadRequestMagic
	}
	return request{
		flags:  binary.BigEndian.Uint16(b[4:6]),
		typ:    binary.BigEndian.Uint16(b[6:8]),
		handle: binary.BigEndian.Uint64(b[8:16]),
		off:    binary.BigEndian.Uint64(b[16:24]),
		length: binary.BigEndian.Uint32(b[24:28]),
	}, nil
}

// payloadLen is the number of data bytes that follow the header on the
// wire: only NBD_CMD_WRITE carries a payload, valid or not.
func (r request) payloadLen() uint32 {
	if r.typ == cmdWrite {
		return r.length
	}
	return 0
}

// geometry is what was negotiated for one connection's export.
type geometry struct {
	size       uint64
	minBlock   uint32
	structured bool
}

// validate checks a request against the export. It returns 0 when the
// request may reach the backend, else an NBD error value and a message
// for the client. Every backend call is within [0, size) once validate
// returned 0.
func (g geometry) validate(r request) (uint32, string) {
	allowed := uint16(cmdFlagFUA)
	switch r.typ {
	case cmdRead:
		if g.structured {
			allowed |= cmdFlagDF
		}
	case cmdWrite, cmdTrim, cmdFlush, cmdDisc:
	case cmdWriteZeroes:
		allowed |= cmdFlagNoHole | cmdFlagFastZero
	default:
		return errnoInval, fmt.Sprintf("unsupported command %d", r.typ)
	}
	if r.flags&^allowed != 0 {
		return errnoInval, fmt.Sprintf("command flags %#x not valid for command %d", r.flags&^allowed, r.typ)
	}
	if r.typ == cmdFlush || r.typ == cmdDisc {
		if r.off != 0 || r.length != 0 {
			return errnoInval, "offset and length must be zero"
		}
		return 0, ""
	}
	if r.length == 0 {
		return errnoInval, "zero length"
	}
	if (r.typ == cmdRead || r.typ == cmdWrite) && r.length > maxBlock {
		return errnoInval, fmt.Sprintf("length %d exceeds the maximum block size %d", r.length, maxBlock)
	}
	end := r.off + uint64(r.length)
	if end < r.off || end > g.size {
		e := uint32(errnoInval)
		if r.typ == cmdWrite || r.typ == cmdWriteZeroes {
			e = errnoNoSpace
		}
		return e, fmt.Sprintf("range %d+%d beyond the export size %d", r.off, r.length, g.size)
	}
	mb := uint64(g.minBlock)
	if r.off%mb != 0 || (uint64(r.length)%mb != 0 && end != g.size) {
		return errnoInval, fmt.Sprintf("range %d+%d not aligned to the minimum block size %d", r.off, r.length, g.minBlock)
	}
	return 0, ""
}

// transmissionFlags are the flags sent with the export: everything this
// server implements. NBD_FLAG_SEND_DF only when structured replies were
// negotiated, as the protocol requires.
func transmissionFlags(structured bool) uint16 {
	f := uint16(tflagHasFlags | tflagSendFlush | tflagSendFUA | tflagSendTrim |
		tflagSendWriteZeroes | tflagCanMultiConn | tflagSendFastZero)
	if structured {
		f |= tflagSendDF
	}
	return f
}

// parseOptionHeader decodes the 16-byte header of an option.
func parseOptionHeader(b []byte) (opt, length uint32, err error) {
	if len(b) < optHeaderLen {
		return 0, 0, fmt.Errorf("nbd: short option header (%d bytes)", len(b))
	}
	if binary.BigEndian.Uint64(b[0:8]) != magicOpt {
		return 0, 0, errBadOptionMagic
	}
	return binary.BigEndian.Uint32(b[8:12]), binary.BigEndian.Uint32(b[12:16]), nil
}

// infoRequest is the data of NBD_OPT_INFO and NBD_OPT_GO.
type infoRequest struct {
	name  string
	infos []uint16
}

// parseInfoRequest decodes NBD_OPT_INFO/NBD_OPT_GO data: a 32-bit name
// length, the name, a 16-bit count and that many 16-bit info types, with
// nothing left over.
func parseInfoRequest(data []byte) (infoRequest, error) {
	if len(data) < 6 {
		return infoRequest{}, errors.New("option data too short")
	}
	nl := binary.BigEndian.Uint32(data[0:4])
	if nl > maxNameLen {
		return infoRequest{}, fmt.Errorf("export name of %d bytes exceeds %d", nl, maxNameLen)
	}
	if uint64(nl)+6 > uint64(len(data)) {
		return infoRequest{}, errors.New("export name length exceeds the option data")
	}
	name := data[4 : 4+nl]
	rest := data[4+nl:]
	n := int(binary.BigEndian.Uint16(rest[0:2]))
	if len(rest) != 2+2*n {
		return infoRequest{}, fmt.Errorf("%d information requests do not match %d bytes", n, len(rest)-2)
	}
	if err := checkName(name); err != nil {
		return infoRequest{}, err
	}
	req := infoRequest{name: string(name), infos: make([]uint16, n)}
	for i := range n {
		req.infos[i] = binary.BigEndian.Uint16(rest[2+2*i:])
	}
	return req, nil
}

// checkName applies the protocol's rules for strings to an export name.
func checkName(name []byte) error {
	if len(name) > maxNameLen {
		return fmt.Errorf("export name of %d bytes exceeds %d", len(name), maxNameLen)
	}
	if !utf8.Valid(name) {
		return errors.New("export name is not UTF-8")
	}
	for _, c := range name {
		if c == 0 {
			return errors.New("export name contains NUL")
		}
	}
	return nil
}

// appendOptReply encodes a fixed-newstyle option reply.
func appendOptReply(dst []byte, opt, typ uint32, data []byte) []byte {
	dst = binary.BigEndian.AppendUint64(dst, magicOptReply)
	dst = binary.BigEndian.AppendUint32(dst, opt)
	dst = binary.BigEndian.AppendUint32(dst, typ)
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(data)))
	return append(dst, data...)
}

// infoExportData is the payload of NBD_REP_INFO/NBD_INFO_EXPORT.
func infoExportData(size uint64, flags uint16) []byte {
	b := binary.BigEndian.AppendUint16(nil, infoExport)
	b = binary.BigEndian.AppendUint64(b, size)
	return binary.BigEndian.AppendUint16(b, flags)
}

// infoBlockSizeData is the payload of NBD_REP_INFO/NBD_INFO_BLOCK_SIZE.
func infoBlockSizeData(min, preferred, max uint32) []byte {
	b := binary.BigEndian.AppendUint16(nil, infoBlockSize)
	b = binary.BigEndian.AppendUint32(b, min)
	b = binary.BigEndian.AppendUint32(b, preferred)
	return binary.BigEndian.AppendUint32(b, max)
}

// infoStringData is the payload of NBD_INFO_NAME or NBD_INFO_DESCRIPTION.
func infoStringData(typ uint16, s string) []byte {
	return append(binary.BigEndian.AppendUint16(nil, typ), truncate(s)...)
}

// serverData is the payload of NBD_REP_SERVER for NBD_OPT_LIST.
func serverData(name string) []byte {
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(name))), name...)
}

// appendSimpleReply encodes a simple reply header (data, if any, follows).
func appendSimpleReply(dst []byte, errno uint32, handle uint64) []byte {
	dst = binary.BigEndian.AppendUint32(dst, magicSimple)
	dst = binary.BigEndian.AppendUint32(dst, errno)
	return binary.BigEndian.AppendUint64(dst, handle)
}

// appendChunkHeader encodes a structured reply chunk header.
func appendChunkHeader(dst []byte, flags, typ uint16, handle uint64, length uint32) []byte {
	dst = binary.BigEndian.AppendUint32(dst, magicStructured)
	dst = binary.BigEndian.AppendUint16(dst, flags)
	dst = binary.BigEndian.AppendUint16(dst, typ)
	dst = binary.BigEndian.AppendUint64(dst, handle)
	return binary.BigEndian.AppendUint32(dst, length)
}

// appendDataChunk encodes the header and offset of a final
// NBD_REPLY_TYPE_OFFSET_DATA chunk of n data bytes (the data follows).
func appendDataChunk(dst []byte, handle, off uint64, n uint32) []byte {
	dst = appendChunkHeader(dst, replyFlagDone, replyTypeOffsetData, handle, 8+n)
	return binary.BigEndian.AppendUint64(dst, off)
}

// appendHoleChunk encodes a final NBD_REPLY_TYPE_OFFSET_HOLE chunk.
func appendHoleChunk(dst []byte, handle, off uint64, n uint32) []byte {
	dst = appendChunkHeader(dst, replyFlagDone, replyTypeOffsetHole, handle, 12)
	dst = binary.BigEndian.AppendUint64(dst, off)
	return binary.BigEndian.AppendUint32(dst, n)
}

// appendErrorChunk encodes a final NBD_REPLY_TYPE_ERROR chunk.
func appendErrorChunk(dst []byte, handle uint64, errno uint32, msg string) []byte {
	msg = truncate(msg)
	dst = appendChunkHeader(dst, replyFlagDone, replyTypeError, handle, uint32(6+len(msg)))
	dst = binary.BigEndian.AppendUint32(dst, errno)
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(msg)))
	return append(dst, msg...)
}

// truncate bounds a string sent to the client to the protocol's limit,
// cutting on a rune boundary.
func truncate(s string) string {
	if len(s) <= maxNameLen {
		return s
	}
	s = s[:maxNameLen]
	for len(s) > 0 && !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s
}
