package nbd

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"

	"golang.org/x/sync/semaphore"
)

// Per-connection bounds on work in flight.
const (
	maxInFlight      = 16       // requests read but not yet answered
	maxInFlightBytes = 64 << 20 // READ and WRITE buffers held at once
)

// transmission serves the requests of one connection.
//
// One reader goroutine (run) parses requests. Reads execute concurrently,
// each in its own goroutine. Writes, TRIM, WRITE_ZEROES and FLUSH go, in
// arrival order, through one queue that a single writer goroutine
// executes: writes of a connection reach the backend in the order the
// client sent them, so overlapping writes are never reordered. A FLUSH (or
// a FUA write) calls Backend.Flush only after every mutation queued before
// it has returned from the backend, in a goroutine of its own so that
// later writes need not wait for the flush.
type transmission struct {
	nc   net.Conn
	br   *bufio.Reader
	exp  *export
	logf func(string, ...any)

	slots chan struct{}       // one per request in flight
	mem   *semaphore.Weighted // bytes of READ/WRITE buffers in flight
	queue chan *op            // mutations and flushes, in arrival order
	wg    sync.WaitGroup      // goroutines answering reads and flushes

	wmu   sync.Mutex // serializes replies
	wfail bool       // a reply could not be written: the client is gone
}

// op is one queued request, with its payload for a WRITE.
type op struct {
	req  request
	data []byte
}

func newTransmission(nc net.Conn, br *bufio.Reader, exp *export, logf func(string, ...any)) *transmission {
	return &transmission{
		nc:    nc,
		br:    br,
		exp:   exp,
		logf:  logf,
		slots: make(chan struct{}, maxInFlight),
		mem:   semaphore.NewWeighted(maxInFlightBytes),
		queue: make(chan *op, maxInFlight),
	}
}

// run reads and dispatches requests until the client disconnects, breaks
// the protocol, or ctx is done; then it waits for every request already
// read to be answered. A nil error is a clean end (NBD_CMD_DISC, the
// client hanging up between requests, or shutdown).
func (t *transmission) run(ctx context.Context) error {
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		t.writer()
	}()
	err := t.readLoop(ctx)
	close(t.queue)
	<-writerDone
	t.wg.Wait()
	return err
}

func (t *transmission) readLoop(ctx context.Context) error {
	var hdr [requestLen]byte
	for {
		if _, err := io.ReadFull(t.br, hdr[:]); err != nil {
			if err == io.EOF || ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("request header: %w", err)
		}
		r, err := parseRequest(hdr[:])
		if err != nil {
			return err
		}
		if r.typ == cmdDisc {
			return nil
		}
		if errno, msg := t.exp.geo.validate(r); errno != 0 {
			if n := r.payloadLen(); n > 0 {
				if _, err := io.CopyN(io.Discard, t.br, int64(n)); err != nil {
					return fmt.Errorf("discarding the payload of a refused write: %w", err)
				}
			}
			t.replyError(r, errno, msg)
			continue
		}
		// Bounded work: block (and stop reading) while 16 requests or
		// 64 MiB of buffers are in flight. Acquire cannot fail with a
		// background context, and a request never exceeds the capacity.
		t.slots <- struct{}{}
		switch r.typ {
		case cmdRead:
			t.mem.Acquire(context.Background(), int64(r.length))
			t.wg.Add(1)
			go t.read(r)
		case cmdWrite:
			t.mem.Acquire(context.Background(), int64(r.length))
			data := make([]byte, r.length)
			if _, err := io.ReadFull(t.br, data); err != nil {
				// A truncated write is dropped whole: never a partial write.
				t.mem.Release(int64(r.length))
				<-t.slots
				return fmt.Errorf("write payload: %w", err)
			}
			t.queue <- &op{req: r, data: data}
		default: // FLUSH, TRIM, WRITE_ZEROES
			t.queue <- &op{req: r}
		}
	}
}

// writer executes queued mutations in arrival order.
func (t *transmission) writer() {
	b := t.exp.backend
	for o := range t.queue {
		r := o.req
		var err error
		switch r.typ {
		case cmdWrite:
			var n int
			n, err = b.WriteAt(o.data, int64(r.off))
			if err == nil && n != len(o.data) {
				err = io.ErrShortWrite
			}
			t.mem.Release(int64(r.length))
		case cmdTrim, cmdWriteZeroes:
			err = b.Zero(int64(r.off), int64(r.length))
		}
		if err != nil {
			t.replyError(r, errnoOf(err), fmt.Sprintf("command %d at %d+%d: %v", r.typ, r.off, r.length, err))
			<-t.slots
			continue
		}
		if r.typ != cmdFlush && r.flags&cmdFlagFUA == 0 {
			t.replyOK(r)
			<-t.slots
			continue
		}
		// Everything queued before this request has returned from the
		// backend, so a global Flush now covers all of it.
		t.wg.Add(1)
		go func() {
			defer t.wg.Done()
			defer func() { <-t.slots }()
			if err := b.Flush(); err != nil {
				t.replyError(r, errnoOf(err), fmt.Sprintf("flush: %v", err))
				return
			}
			t.replyOK(r)
		}()
	}
}

func (t *transmission) read(r request) {
	defer t.wg.Done()
	defer func() { <-t.slots }()
	defer t.mem.Release(int64(r.length))
	buf := make([]byte, r.length)
	n, err := t.exp.backend.ReadAt(buf, int64(r.off))
	if n == len(buf) {
		err = nil // io.EOF with a full buffer at the end of the export
	} else if err == nil {
		err = io.ErrUnexpectedEOF
	}
	if err != nil {
		t.replyError(r, errnoOf(err), fmt.Sprintf("read at %d+%d: %v", r.off, r.length, err))
		return
	}
	if !t.exp.geo.structured {
		t.send(appendSimpleReply(nil, 0, r.handle), buf)
		return
	}
	if allZero(buf) {
		t.send(appendHoleChunk(nil, r.handle, r.off, r.length), nil)
		return
	}
	t.send(appendDataChunk(nil, r.handle, r.off, r.length), buf)
}

func (t *transmission) replyOK(r request) {
	t.send(appendSimpleReply(nil, 0, r.handle), nil)
}

// replyError answers r with an error: a structured error chunk when
// structured replies were negotiated (required for reads), else a simple
// reply, which never carries data when it reports an error.
func (t *transmission) replyError(r request, errno uint32, msg string) {
	t.logf("nbd: %v: export %q: refused request: %s", t.nc.RemoteAddr(), t.exp.name, msg)
	if t.exp.geo.structured {
		t.send(appendErrorChunk(nil, r.handle, errno, msg), nil)
		return
	}
	t.send(appendSimpleReply(nil, errno, r.handle), nil)
}

// send writes one whole reply under the reply mutex. A failed write
// closes the connection, which ends the reader; later replies are
// dropped, as nobody can receive them.
func (t *transmission) send(hdr, data []byte) {
	t.wmu.Lock()
	defer t.wmu.Unlock()
	if t.wfail {
		return
	}
	bufs := net.Buffers{hdr}
	if len(data) > 0 {
		bufs = append(bufs, data)
	}
	if _, err := bufs.WriteTo(t.nc); err != nil {
		t.wfail = true
		if !errors.Is(err, net.ErrClosed) {
			t.logf("nbd: %v: export %q: writing a reply: %v", t.nc.RemoteAddr(), t.exp.name, err)
		}
		t.nc.Close()
	}
}

var zeros [4096]byte

func allZero(b []byte) bool {
	for len(b) > 0 {
		n := min(len(b), len(zeros))
		if !bytes.Equal(b[:n], zeros[:n]) {
			return false
		}
		b = b[n:]
	}
	return true
}
