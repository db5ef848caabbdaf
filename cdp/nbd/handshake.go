package nbd

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
)

// errAborted ends a handshake the client closed with NBD_OPT_ABORT.
var errAborted = errors.New("nbd: client aborted the handshake")

// export is what a successful handshake hands to transmission.
type export struct {
	name    string
	backend Backend
	geo     geometry
}

// handshake is the option-haggling state of one connection.
type handshake struct {
	s           *Server
	nc          net.Conn // the raw connection, or its TLS upgrade
	peer        string   // who is at the other end, for log lines
	br          *bufio.Reader
	noZeroes    bool
	tlsRequired bool
	tlsDone     bool
	structured  bool
}

func newReader(r io.Reader) *bufio.Reader { return bufio.NewReaderSize(r, 64<<10) }

// run performs the fixed newstyle handshake and returns the export chosen
// by NBD_OPT_GO or NBD_OPT_EXPORT_NAME. An error means the connection must
// be closed.
func (h *handshake) run(ctx context.Context) (*export, error) {
	greeting := binary.BigEndian.AppendUint64(nil, magicNBD)
	greeting = binary.BigEndian.AppendUint64(greeting, magicOpt)
	greeting = binary.BigEndian.AppendUint16(greeting, flagFixedNewstyle|flagNoZeroes)
	if _, err := h.nc.Write(greeting); err != nil {
		return nil, err
	}
	var cf [4]byte
	if _, err := io.ReadFull(h.br, cf[:]); err != nil {
		return nil, fmt.Errorf("client flags: %w", err)
	}
	flags := binary.BigEndian.Uint32(cf[:])
	if flags&^(clientFixedNewstyle|clientNoZeroes) != 0 {
		return nil, fmt.Errorf("unknown client flags %#x", flags)
	}
	if h.tlsRequired && flags&clientFixedNewstyle == 0 {
		return nil, errors.New("TLS is required but the client does not speak fixed newstyle")
	}
	h.noZeroes = flags&clientNoZeroes != 0

	var hdr [optHeaderLen]byte
	for {
		if _, err := io.ReadFull(h.br, hdr[:]); err != nil {
			return nil, fmt.Errorf("option header: %w", err)
		}
		opt, n, err := parseOptionHeader(hdr[:])
		if err != nil {
			return nil, err
		}
		if n > maxOptionLen {
			// Skipping up to 4 GiB to answer would let a client keep us
			// busy; the protocol allows a hard disconnect here.
			return nil, fmt.Errorf("option %d carries %d bytes, more than %d", opt, n, maxOptionLen)
		}
		data := make([]byte, n)
		if _, err := io.ReadFull(h.br, data); err != nil {
			return nil, fmt.Errorf("option %d data: %w", opt, err)
		}
		exp, err := h.option(ctx, opt, data)
		if exp != nil || err != nil {
			return exp, err
		}
	}
}

// option answers one option. It returns an export when transmission
// starts, an error when the connection must close, or neither to go on.
func (h *handshake) option(ctx context.Context, opt uint32, data []byte) (*export, error) {
	if h.tlsRequired && !h.tlsDone {
		switch opt {
		case optStartTLS, optAbort:
		case optExportName:
			return nil, errors.New("NBD_OPT_EXPORT_NAME before STARTTLS; TLS is required")
		default:
			return nil, h.reply(opt, repErrTLSReqd, []byte("TLS is required: send NBD_OPT_STARTTLS first"))
		}
	}
	switch opt {
	case optExportName:
		return h.exportName(data)
	case optAbort:
		// The reply is a courtesy: the client may already have gone.
		h.reply(opt, repAck, nil)
		return nil, errAborted
	case optList:
		return nil, h.list(data)
	case optStartTLS:
		return nil, h.startTLS(ctx, data)
	case optInfo, optGo:
		return h.info(opt, data)
	case optStructuredReply:
		if len(data) != 0 {
			return nil, h.reply(opt, repErrInvalid, []byte("NBD_OPT_STRUCTURED_REPLY takes no data"))
		}
		h.structured = true
		return nil, h.reply(opt, repAck, nil)
	default:
		return nil, h.reply(opt, repErrUnsup, fmt.Appendf(nil, "option %d is not supported", opt))
	}
}

func (h *handshake) reply(opt, typ uint32, data []byte) error {
	_, err := h.nc.Write(appendOptReply(nil, opt, typ, data))
	return err
}

// lookup opens a named export and works out its geometry.
func (h *handshake) lookup(name string) (*export, error) {
	b, err := h.s.opt.Exports(name)
	if err != nil {
		return nil, err
	}
	if b == nil {
		return nil, fmt.Errorf("export %q has no backend", name)
	}
	size := b.Size()
	if size < 0 {
		return nil, fmt.Errorf("export %q has a negative size %d", name, size)
	}
	return &export{name: name, backend: b, geo: geometry{
		size:       uint64(size),
		minBlock:   h.s.opt.MinBlock,
		structured: h.structured,
	}}, nil
}

// exportName handles the old NBD_OPT_EXPORT_NAME, which cannot fail
// politely: a refused export closes the connection.
func (h *handshake) exportName(data []byte) (*export, error) {
	if err := checkName(data); err != nil {
		return nil, fmt.Errorf("NBD_OPT_EXPORT_NAME: %w", err)
	}
	exp, err := h.lookup(string(data))
	if err != nil {
		return nil, fmt.Errorf("NBD_OPT_EXPORT_NAME %q refused: %w", data, err)
	}
	b := binary.BigEndian.AppendUint64(nil, exp.geo.size)
	b = binary.BigEndian.AppendUint16(b, transmissionFlags(h.structured))
	if !h.noZeroes {
		b = append(b, make([]byte, 124)...)
	}
	if _, err := h.nc.Write(b); err != nil {
		return nil, err
	}
	return exp, nil
}

func (h *handshake) list(data []byte) error {
	if len(data) != 0 {
		return h.reply(optList, repErrInvalid, []byte("NBD_OPT_LIST takes no data"))
	}
	if h.s.opt.List == nil {
		return h.reply(optList, repErrPolicy, []byte("listing exports is disabled"))
	}
	var b []byte
	for _, name := range h.s.opt.List() {
		if checkName([]byte(name)) != nil {
			continue
		}
		b = appendOptReply(b, optList, repServer, serverData(name))
	}
	b = appendOptReply(b, optList, repAck, nil)
	_, err := h.nc.Write(b)
	return err
}

func (h *handshake) startTLS(ctx context.Context, data []byte) error {
	switch {
	case h.s.opt.TLS == nil:
		return h.reply(optStartTLS, repErrPolicy, []byte("this server does not offer TLS"))
	case h.tlsDone:
		return h.reply(optStartTLS, repErrInvalid, []byte("TLS is already active"))
	case len(data) != 0:
		return h.reply(optStartTLS, repErrInvalid, []byte("NBD_OPT_STARTTLS takes no data"))
	}
	if h.br.Buffered() != 0 {
		// The client must wait for our ACK before its TLS hello: bytes
		// already here were sent in the clear and cannot be trusted.
		return errors.New("data sent before the NBD_OPT_STARTTLS reply")
	}
	if err := h.reply(optStartTLS, repAck, nil); err != nil {
		return err
	}
	tc := tls.Server(h.nc, h.s.opt.TLS)
	if err := tc.HandshakeContext(ctx); err != nil {
		return fmt.Errorf("TLS handshake: %w", err)
	}
	h.nc, h.br, h.tlsDone = tc, newReader(tc), true
	// No negotiation state survives STARTTLS (proto.md NBD_OPT_STARTTLS).
	h.structured = false
	return nil
}

// info answers NBD_OPT_INFO and NBD_OPT_GO; GO returns the export.
func (h *handshake) info(opt uint32, data []byte) (*export, error) {
	req, err := parseInfoRequest(data)
	if err != nil {
		return nil, h.reply(opt, repErrInvalid, []byte(err.Error()))
	}
	exp, err := h.lookup(req.name)
	if err != nil {
		h.s.refusals.log("exports refused", "nbd: %s: export %q refused: %v", h.peer, req.name, err)
		return nil, h.reply(opt, repErrUnknown, fmt.Appendf(nil, "export %q is not available", req.name))
	}
	b := appendOptReply(nil, opt, repInfo, infoExportData(exp.geo.size, transmissionFlags(h.structured)))
	// Block sizes are sent even unasked: the client may ignore them, and
	// the server enforces them either way.
	b = appendOptReply(b, opt, repInfo, infoBlockSizeData(exp.geo.minBlock, max(preferredSize, exp.geo.minBlock), maxBlock))
	if slices.Contains(req.infos, infoName) {
		b = appendOptReply(b, opt, repInfo, infoStringData(infoName, req.name))
	}
	if d, ok := exp.backend.(Describer); ok && slices.Contains(req.infos, infoDescription) {
		if desc := d.Description(); desc != "" {
			b = appendOptReply(b, opt, repInfo, infoStringData(infoDescription, desc))
		}
	}
	b = appendOptReply(b, opt, repAck, nil)
	if _, err := h.nc.Write(b); err != nil {
		return nil, err
	}
	if opt == optGo {
		return exp, nil
	}
	return nil, nil
}
