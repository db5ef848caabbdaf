package nbd

import (
	"bufio"
	"crypto/tls"
	"encoding/binary"
	"io"
	"net"
	"testing"
	"time"
)

// rawClient speaks the protocol byte by byte, to test what real clients
// never send.
type rawClient struct {
	t  testing.TB
	nc net.Conn
	br *bufio.Reader
}

// dialRaw connects over TCP, checks the greeting and sends the client
// flags.
func dialRaw(t testing.TB, addr string) *rawClient {
	t.Helper()
	return dialRawNet(t, "tcp", addr)
}

// dialRawNet is dialRaw on any network ("tcp", "unix").
func dialRawNet(t testing.TB, network, addr string) *rawClient {
	t.Helper()
	nc, err := net.DialTimeout(network, addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	nc.SetDeadline(time.Now().Add(30 * time.Second))
	c := &rawClient{t: t, nc: nc, br: bufio.NewReader(nc)}
	var g [18]byte
	c.readFull(g[:])
	if binary.BigEndian.Uint64(g[0:]) != magicNBD || binary.BigEndian.Uint64(g[8:]) != magicOpt {
		t.Fatalf("bad greeting % x", g)
	}
	if f := binary.BigEndian.Uint16(g[16:]); f != flagFixedNewstyle|flagNoZeroes {
		t.Fatalf("handshake flags %#x", f)
	}
	c.write(binary.BigEndian.AppendUint32(nil, clientFixedNewstyle|clientNoZeroes))
	return c
}

func (c *rawClient) readFull(b []byte) {
	c.t.Helper()
	if _, err := io.ReadFull(c.br, b); err != nil {
		c.t.Fatalf("read: %v", err)
	}
}

func (c *rawClient) write(b []byte) {
	c.t.Helper()
	if _, err := c.nc.Write(b); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// startTLS upgrades the connection with NBD_OPT_STARTTLS.
func (c *rawClient) startTLS(cfg *tls.Config) {
	c.t.Helper()
	c.option(optStartTLS, nil)
	if _, typ, _ := c.optReply(); typ != repAck {
		c.t.Fatalf("STARTTLS reply %#x", typ)
	}
	tc := tls.Client(c.nc, cfg)
	if err := tc.Handshake(); err != nil {
		c.t.Fatalf("TLS handshake: %v", err)
	}
	c.nc, c.br = tc, bufio.NewReader(tc)
}

func (c *rawClient) option(opt uint32, data []byte) {
	c.t.Helper()
	b := binary.BigEndian.AppendUint64(nil, magicOpt)
	b = binary.BigEndian.AppendUint32(b, opt)
	b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
	c.write(append(b, data...))
}

func (c *rawClient) optReply() (opt, typ uint32, data []byte) {
	c.t.Helper()
	var h [20]byte
	c.readFull(h[:])
	if binary.BigEndian.Uint64(h[0:]) != magicOptReply {
		c.t.Fatalf("bad option reply magic % x", h)
	}
	data = make([]byte, binary.BigEndian.Uint32(h[16:]))
	c.readFull(data)
	return binary.BigEndian.Uint32(h[8:]), binary.BigEndian.Uint32(h[12:]), data
}

func goData(name string, infos ...uint16) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(len(name)))
	b = append(b, name...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(infos)))
	for _, i := range infos {
		b = binary.BigEndian.AppendUint16(b, i)
	}
	return b
}

// goExport sends NBD_OPT_GO and returns the final reply type, with the
// size and flags of NBD_INFO_EXPORT when it succeeded.
func (c *rawClient) goExport(name string) (typ uint32, size uint64, flags uint16) {
	c.t.Helper()
	c.option(optGo, goData(name, infoBlockSize))
	for {
		_, typ, data := c.optReply()
		if typ != repInfo {
			return typ, size, flags
		}
		if binary.BigEndian.Uint16(data) == infoExport {
			size, flags = binary.BigEndian.Uint64(data[2:]), binary.BigEndian.Uint16(data[10:])
		}
	}
}

// structured negotiates structured replies.
func (c *rawClient) structured() {
	c.t.Helper()
	c.option(optStructuredReply, nil)
	if _, typ, _ := c.optReply(); typ != repAck {
		c.t.Fatalf("STRUCTURED_REPLY reply %#x", typ)
	}
}

func (c *rawClient) request(typ, flags uint16, handle, off uint64, length uint32, payload []byte) {
	c.t.Helper()
	b := binary.BigEndian.AppendUint32(nil, magicRequest)
	b = binary.BigEndian.AppendUint16(b, flags)
	b = binary.BigEndian.AppendUint16(b, typ)
	b = binary.BigEndian.AppendUint64(b, handle)
	b = binary.BigEndian.AppendUint64(b, off)
	b = binary.BigEndian.AppendUint32(b, length)
	c.write(append(b, payload...))
}

// simpleReply reads a simple reply; a successful read's data follows and
// is read with readFull by the caller.
func (c *rawClient) simpleReply() (errno uint32, handle uint64) {
	c.t.Helper()
	var h [16]byte
	c.readFull(h[:])
	if binary.BigEndian.Uint32(h[0:]) != magicSimple {
		c.t.Fatalf("bad simple reply magic % x", h)
	}
	return binary.BigEndian.Uint32(h[4:]), binary.BigEndian.Uint64(h[8:])
}

// chunk is one structured reply chunk, or a simple reply (typ 0xffff).
type chunk struct {
	flags, typ uint16
	handle     uint64
	errno      uint32
	payload    []byte
}

// reply reads the next reply of either kind; simple replies to reads are
// not used with it (their data length is not on the wire).
func (c *rawClient) reply() chunk {
	c.t.Helper()
	var m [4]byte
	c.readFull(m[:])
	switch binary.BigEndian.Uint32(m[:]) {
	case magicSimple:
		var h [12]byte
		c.readFull(h[:])
		return chunk{typ: 0xffff, errno: binary.BigEndian.Uint32(h[0:]), handle: binary.BigEndian.Uint64(h[4:])}
	case magicStructured:
		var h [16]byte
		c.readFull(h[:])
		ch := chunk{
			flags:   binary.BigEndian.Uint16(h[0:]),
			typ:     binary.BigEndian.Uint16(h[2:]),
			handle:  binary.BigEndian.Uint64(h[4:]),
			payload: make([]byte, binary.BigEndian.Uint32(h[12:])),
		}
		c.readFull(ch.payload)
		if ch.typ == replyTypeError {
			ch.errno = binary.BigEndian.Uint32(ch.payload)
		}
		return ch
	}
	c.t.Fatalf("bad reply magic % x", m)
	return chunk{}
}

// expectClosed checks that the server closes the connection without
// sending anything more.
func (c *rawClient) expectClosed() {
	c.t.Helper()
	c.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	b, err := io.ReadAll(c.br)
	if len(b) != 0 {
		c.t.Fatalf("got %d more bytes before close: % x", len(b), b[:min(len(b), 32)])
	}
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		c.t.Fatal("connection still open")
	}
}
