package replica

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/hindsight-cdp/hindsight/store"
)

// frameType is a frame's first byte (doc.go).
type frameType uint8

const (
	frameHello   frameType = 1
	frameWelcome frameType = 2
	frameRefuse  frameType = 3
	frameAsk     frameType = 4
	frameHave    frameType = 5
	frameSteps   frameType = 6
	frameAck     frameType = 7
	framePing    frameType = 8
	framePong    frameType = 9
	frameMarks   frameType = 10
)

func (t frameType) String() string {
	names := [...]string{"", "HELLO", "WELCOME", "REFUSE", "ASK", "HAVE", "STEPS", "ACK", "PING", "PONG", "MARKS"}
	if int(t) < len(names) && t != 0 {
		return names[t]
	}
	return fmt.Sprintf("frame type %d", uint8(t))
}

// Bounds a decoder checks, so that no frame makes it allocate much more
// than the frame's own size: the sender stays well below them.
const (
	frameHeader    = 5
	maxFrameSteps  = 4096    // steps in one STEPS frame
	maxFrameBlocks = 4096    // blocks in one STEPS frame, all steps together
	maxFrameMarks  = 1024    // bookmarks in one STEPS or MARKS frame
	maxAsk         = 4096    // hashes in one ASK (and bits in one HAVE)
	maxMarkJSON    = 1 << 20 // one bookmark's JSON
	maxHelloFrame  = 1 << 20 // any frame before the stream is authenticated, and any frame to the sender
)

// Block kinds in a STEPS frame.
const (
	kindZeros = 0
	kindHeld  = 1
	kindRaw   = 2
	kindZstd  = 3
)

// Step parts and STEPS flags.
const (
	partWhole = 0
	partMore  = 1
	partLast  = 2

	flagSync = 1
)

var (
	// errBadFrame: a frame does not follow the protocol.
	errBadFrame = errors.New("replica: malformed frame")
	// errFrameTooLarge: a frame's length is beyond what the reader takes.
	errFrameTooLarge = errors.New("replica: frame too large")
)

// readFrame reads one frame of at most limit payload bytes. The payload is
// read in pieces as it arrives: a peer that announces a large frame and
// sends little makes the reader hold little.
func readFrame(r io.Reader, limit int) (frameType, []byte, error) {
	var h [frameHeader]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return 0, nil, err
	}
	t := frameType(h[0])
	if t < frameHello || t > frameMarks {
		return 0, nil, fmt.Errorf("%w: unknown %v", errBadFrame, t)
	}
	n := int64(binary.BigEndian.Uint32(h[1:]))
	if n > int64(limit) {
		return 0, nil, fmt.Errorf("%w: %v of %d bytes, at most %d here", errFrameTooLarge, t, n, limit)
	}
	const piece = 1 << 20
	buf := make([]byte, 0, min(n, piece))
	for int64(len(buf)) < n {
		k := min(n-int64(len(buf)), max(int64(len(buf)), piece))
		if int64(cap(buf)) < int64(len(buf))+k {
			buf = append(make([]byte, 0, int64(len(buf))+k), buf...)
		}
		m, err := io.ReadFull(r, buf[len(buf):int64(len(buf))+k])
		buf = buf[:len(buf)+m]
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return 0, nil, fmt.Errorf("%v payload: %w", t, err)
		}
	}
	return t, buf, nil
}

// newFrame starts a frame of type t in buf (reused): its header, then the
// payload appended by the caller, then endFrame.
func newFrame(buf []byte, t frameType) []byte { return append(buf[:0], byte(t), 0, 0, 0, 0) }

// endFrame fills in the frame's length.
func endFrame(f []byte) ([]byte, error) {
	n := len(f) - frameHeader
	if n > MaxFrame {
		return nil, fmt.Errorf("%w: %v of %d bytes", errFrameTooLarge, frameType(f[0]), n)
	}
	binary.BigEndian.PutUint32(f[1:], uint32(n))
	return f, nil
}

// endFrameOK is endFrame for a frame known to be small.
func endFrameOK(f []byte) []byte {
	f, _ = endFrame(f)
	return f
}

// jsonFrame is a frame whose payload is v as JSON.
func jsonFrame(t frameType, v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return endFrame(append(newFrame(nil, t), b...))
}

// refusal is REFUSE's payload.
type refusal struct {
	Reason string `json:"reason"`
}

func be64(b []byte, v uint64) []byte { return binary.BigEndian.AppendUint64(b, v) }
func be32(b []byte, v uint32) []byte { return binary.BigEndian.AppendUint32(b, v) }

// cursor decodes a payload; the first short read sets err and every later
// read returns zeros, so a decoder checks err once at its end or before
// trusting a count.
type cursor struct {
	b   []byte
	err error
}

func (c *cursor) take(n int) []byte {
	if c.err != nil || n < 0 || n > len(c.b) {
		if c.err == nil {
			c.err = fmt.Errorf("%w: %d bytes wanted, %d left", errBadFrame, n, len(c.b))
		}
		return nil
	}
	v := c.b[:n:n]
	c.b = c.b[n:]
	return v
}

func (c *cursor) u8() uint8 {
	if b := c.take(1); b != nil {
		return b[0]
	}
	return 0
}

func (c *cursor) u16() uint16 {
	if b := c.take(2); b != nil {
		return binary.BigEndian.Uint16(b)
	}
	return 0
}

func (c *cursor) u32() uint32 {
	if b := c.take(4); b != nil {
		return binary.BigEndian.Uint32(b)
	}
	return 0
}

func (c *cursor) u64() uint64 {
	if b := c.take(8); b != nil {
		return binary.BigEndian.Uint64(b)
	}
	return 0
}

// count reads a count of items of at least each bytes apiece and at most
// limit, and refuses one the rest of the payload cannot hold.
func (c *cursor) count(n uint32, each, limit int, what string) int {
	if c.err == nil && (int64(n) > int64(limit) || int64(n)*int64(each) > int64(len(c.b))) {
		c.err = fmt.Errorf("%w: %d %s in %d bytes (at most %d)", errBadFrame, n, what, len(c.b), limit)
	}
	if c.err != nil {
		return 0
	}
	return int(n)
}

// end refuses bytes after the last field.
func (c *cursor) end() error {
	if c.err == nil && len(c.b) != 0 {
		c.err = fmt.Errorf("%w: %d bytes after the last field", errBadFrame, len(c.b))
	}
	return c.err
}

func wireTime(t time.Time) uint64 { return uint64(t.UnixNano()) }
func fromWire(v uint64) time.Time { return time.Unix(0, int64(v)).UTC() }

// ASK: id u64 | n u32 | hash × n.
func appendAsk(buf []byte, id uint64, hs []store.Hash) []byte {
	f := be32(be64(newFrame(buf, frameAsk), id), uint32(len(hs)))
	for i := range hs {
		f = append(f, hs[i][:]...)
	}
	return endFrameOK(f)
}

func decodeAsk(p []byte) (uint64, []store.Hash, error) {
	c := cursor{b: p}
	id := c.u64()
	n := c.count(c.u32(), len(store.Hash{}), maxAsk, "hashes")
	hs := make([]store.Hash, n)
	for i := range hs {
		copy(hs[i][:], c.take(len(store.Hash{})))
	}
	return id, hs, c.end()
}

// HAVE: id u64 | n u32 | bitmap ⌈n/8⌉ (bit i, LSB first: hash i is held).
func appendHave(buf []byte, id uint64, held []bool) []byte {
	f := be32(be64(newFrame(buf, frameHave), id), uint32(len(held)))
	bits := make([]byte, (len(held)+7)/8)
	for i, h := range held {
		if h {
			bits[i/8] |= 1 << (i % 8)
		}
	}
	return endFrameOK(append(f, bits...))
}

func decodeHave(p []byte) (uint64, []bool, error) {
	c := cursor{b: p}
	id := c.u64()
	n := c.u32()
	if c.err == nil && n > maxAsk {
		c.err = fmt.Errorf("%w: HAVE of %d hashes (at most %d)", errBadFrame, n, maxAsk)
	}
	bits := c.take((int(n) + 7) / 8)
	if err := c.end(); err != nil {
		return 0, nil, err
	}
	held := make([]bool, n)
	for i := range held {
		held[i] = bits[i/8]&(1<<(i%8)) != 0
	}
	return id, held, nil
}

// ACK: seq u64 | time i64.
func appendAck(buf []byte, seq uint64, t time.Time) []byte {
	return endFrameOK(be64(be64(newFrame(buf, frameAck), seq), wireTime(t)))
}

func decodeAck(p []byte) (uint64, time.Time, error) {
	c := cursor{b: p}
	seq, t := c.u64(), c.u64()
	return seq, fromWire(t), c.end()
}

// wireBlock is one block of a STEPS frame; Content points into the frame.
type wireBlock struct {
	Disk    uint16
	Block   uint64
	Kind    uint8
	Hash    store.Hash
	Content []byte
}

// wireStep is one step (or part of one) of a STEPS frame.
type wireStep struct {
	Seq    uint64
	Time   time.Time
	Part   uint8
	Blocks []wireBlock
	Marks  []store.Bookmark
}

// stepsMsg is a STEPS frame.
type stepsMsg struct {
	ID    uint64
	Flags uint8
	Steps []wireStep
}

// appendSteps encodes m as a frame in buf (reused).
func appendSteps(buf []byte, m *stepsMsg) ([]byte, error) {
	f := be32(append(be64(newFrame(buf, frameSteps), m.ID), m.Flags), uint32(len(m.Steps)))
	for i := range m.Steps {
		st := &m.Steps[i]
		f = append(be64(be64(f, st.Seq), wireTime(st.Time)), st.Part)
		f = be32(f, uint32(len(st.Blocks)))
		for j := range st.Blocks {
			b := &st.Blocks[j]
			f = append(be64(binary.BigEndian.AppendUint16(f, b.Disk), b.Block), b.Kind)
			if b.Kind != kindZeros {
				f = append(f, b.Hash[:]...)
			}
			if b.Kind == kindRaw || b.Kind == kindZstd {
				f = append(be32(f, uint32(len(b.Content))), b.Content...)
			}
		}
		var err error
		if f, err = appendMarks(f, st.Marks); err != nil {
			return nil, err
		}
	}
	return endFrame(f)
}

// appendMarks encodes bookmarks: count u16 | (len u32 | JSON) × count.
func appendMarks(f []byte, bms []store.Bookmark) ([]byte, error) {
	if len(bms) > maxFrameMarks {
		return nil, fmt.Errorf("replica: %d bookmarks on one point (at most %d)", len(bms), maxFrameMarks)
	}
	f = binary.BigEndian.AppendUint16(f, uint16(len(bms)))
	for _, bm := range bms {
		j, err := json.Marshal(bm)
		if err != nil {
			return nil, fmt.Errorf("replica: bookmark %q: %w", bm.Name, err)
		}
		if len(j) > maxMarkJSON {
			return nil, fmt.Errorf("replica: bookmark %q is %d bytes as JSON (at most %d)", bm.Name, len(j), maxMarkJSON)
		}
		f = append(be32(f, uint32(len(j))), j...)
	}
	return f, nil
}

// decodeMarks reads bookmarks; total counts them across the frame.
func decodeMarks(c *cursor, total *int) []store.Bookmark {
	n := c.count(uint32(c.u16()), 4+2, maxFrameMarks-*total, "bookmarks")
	*total += n
	var bms []store.Bookmark
	for range n {
		j := c.take(c.count(c.u32(), 1, maxMarkJSON, "bytes of bookmark"))
		if c.err != nil {
			return nil
		}
		var bm store.Bookmark
		if err := json.Unmarshal(j, &bm); err != nil {
			c.err = fmt.Errorf("%w: bookmark: %v", errBadFrame, err)
			return nil
		}
		bms = append(bms, bm)
	}
	return bms
}

// Least encoded sizes, to bound counts by what the payload can hold.
const (
	minStep  = 8 + 8 + 1 + 4 + 2
	minBlock = 2 + 8 + 1
)

// decodeSteps decodes a STEPS payload; contents point into p.
func decodeSteps(p []byte) (*stepsMsg, error) {
	c := cursor{b: p}
	m := &stepsMsg{ID: c.u64(), Flags: c.u8()}
	n := c.count(c.u32(), minStep, maxFrameSteps, "steps")
	m.Steps = make([]wireStep, n)
	blocks, marks := 0, 0
	for i := range m.Steps {
		st := &m.Steps[i]
		st.Seq, st.Time, st.Part = c.u64(), fromWire(c.u64()), c.u8()
		if c.err == nil && st.Part > partLast {
			c.err = fmt.Errorf("%w: step part %d", errBadFrame, st.Part)
		}
		nb := c.count(c.u32(), minBlock, maxFrameBlocks-blocks, "blocks")
		blocks += nb
		st.Blocks = make([]wireBlock, nb)
		for j := range st.Blocks {
			b := &st.Blocks[j]
			b.Disk, b.Block, b.Kind = c.u16(), c.u64(), c.u8()
			switch b.Kind {
			case kindZeros:
			case kindHeld, kindRaw, kindZstd:
				copy(b.Hash[:], c.take(len(store.Hash{})))
				if b.Kind != kindHeld {
					b.Content = c.take(c.count(c.u32(), 1, store.MaxBlockSize, "bytes of content"))
				}
			default:
				if c.err == nil {
					c.err = fmt.Errorf("%w: block kind %d", errBadFrame, b.Kind)
				}
			}
			if c.err != nil {
				return nil, c.err
			}
		}
		st.Marks = decodeMarks(&c, &marks)
		if c.err != nil {
			return nil, c.err
		}
	}
	if err := c.end(); err != nil {
		return nil, err
	}
	return m, nil
}

// MARKS: bookmarks of points the target already has (count u16 | mark ×
// count), for bookmarks made after their point was sent.
func appendMarksFrame(buf []byte, bms []store.Bookmark) ([]byte, error) {
	f, err := appendMarks(newFrame(buf, frameMarks), bms)
	if err != nil {
		return nil, err
	}
	return endFrame(f)
}

func decodeMarksFrame(p []byte) ([]store.Bookmark, error) {
	c := cursor{b: p}
	total := 0
	bms := decodeMarks(&c, &total)
	return bms, c.end()
}
