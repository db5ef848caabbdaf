package nbd

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// handshakeSeed builds a client byte stream: flags, options, requests.
type handshakeSeed []byte

func seed() handshakeSeed {
	return binary.BigEndian.AppendUint32(nil, clientFixedNewstyle|clientNoZeroes)
}

func (s handshakeSeed) opt(opt uint32, data []byte) handshakeSeed {
	s = binary.BigEndian.AppendUint64(s, magicOpt)
	s = binary.BigEndian.AppendUint32(s, opt)
	s = binary.BigEndian.AppendUint32(s, uint32(len(data)))
	return append(s, data...)
}

func (s handshakeSeed) req(typ, flags uint16, off uint64, length uint32, payload []byte) handshakeSeed {
	s = append(s, requestBytes(request{typ: typ, flags: flags, handle: 7, off: off, length: length})...)
	return append(s, payload...)
}

// FuzzOptionParsing feeds arbitrary client bytes to a connection over
// net.Pipe: the server must not panic, must close the connection once the
// input ends, and must never call the backend out of range (the model
// fails the test if it does).
func FuzzOptionParsing(f *testing.F) {
	const size = 64 << 10
	f.Add([]byte(seed().opt(optGo, goData("disk", infoBlockSize)).
		req(cmdWrite, cmdFlagFUA, 4096, 512, fill(512, 1)).req(cmdRead, 0, 0, 8192, nil).
		req(cmdFlush, 0, 0, 0, nil).req(cmdTrim, 0, 0, 4096, nil).req(cmdDisc, 0, 0, 0, nil)))
	f.Add([]byte(seed().opt(optStructuredReply, nil).opt(optGo, goData("")).
		req(cmdRead, cmdFlagDF, size-512, 512, nil).req(cmdWriteZeroes, cmdFlagFastZero, 0, size, nil).
		req(cmdWrite, 0, size-512, 1024, fill(1024, 2)).req(cmdRead, 0, 1<<63, 512, nil)))
	f.Add([]byte(seed().opt(optExportName, []byte("disk")).req(cmdWrite, 0, 0, 512, fill(100, 3))))
	f.Add([]byte(seed().opt(optList, nil).opt(optInfo, goData("nope", infoName)).
		opt(optStartTLS, nil).opt(99, []byte("x")).opt(optAbort, nil)))
	f.Add([]byte(seed().opt(optGo, []byte{0xff, 0xff, 0xff, 0xff, 0, 0})))
	f.Add([]byte(binary.BigEndian.AppendUint32(nil, 0xffffffff)))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, in []byte) {
		d := newMemDisk(t, size)
		s := NewServer(Options{
			Exports: func(name string) (Backend, error) {
				if name == "" || name == "disk" {
					return d, nil
				}
				return nil, io.EOF
			},
			List: func() []string { return []string{"disk"} },
		})
		pipe, cli := net.Pipe()
		srv := &halfClosedPipe{Conn: pipe}
		done := make(chan struct{})
		go func() {
			defer close(done)
			s.handshakes <- struct{}{} // serveConn releases it
			s.serveConn(context.Background(), srv, "fuzz", time.Now().Add(time.Minute))
		}()
		drained := make(chan struct{})
		go func() {
			defer close(drained)
			io.Copy(io.Discard, cli)
		}()
		cli.Write(in) // fails once the server has closed: that is fine
		srv.closeWrite()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("server did not close the connection")
		}
		<-drained
		cli.Close()
	})
}

// halfClosedPipe is the server end of a net.Pipe on which the client can
// half-close: once closeWrite is called (after the client's last Write
// returned, so every byte was read), reads return io.EOF while replies
// still flow to the client. The server's own read deadlines (the handshake
// deadline, cleared after it) cannot undo the half-close.
type halfClosedPipe struct {
	net.Conn
	mu  sync.Mutex
	eof atomic.Bool
}

func (p *halfClosedPipe) closeWrite() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.eof.Store(true)
	p.Conn.SetReadDeadline(time.Now())
}

func (p *halfClosedPipe) SetDeadline(t time.Time) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.eof.Load() {
		return p.Conn.SetWriteDeadline(t)
	}
	return p.Conn.SetDeadline(t)
}

func (p *halfClosedPipe) SetReadDeadline(t time.Time) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.eof.Load() {
		return nil
	}
	return p.Conn.SetReadDeadline(t)
}

func (p *halfClosedPipe) Read(b []byte) (int, error) {
	n, err := p.Conn.Read(b)
	if err != nil && p.eof.Load() && errors.Is(err, os.ErrDeadlineExceeded) {
		return n, io.EOF
	}
	return n, err
}
