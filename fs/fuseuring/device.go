package fuseuring

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// init answers the kernel's INIT, read from /dev/fuse, and returns the
// payload size ring entries need. INIT offers FUSE_OVER_IO_URING only while
// the kernel switch is on; go-fuse's answer accepts it because
// ExtraCapabilities asks for it.
func (s *Server) init(ctx context.Context) (payload int, err error) {
	buf := make([]byte, minPayload) // the kernel refuses smaller reads
	n, err := s.readWait(ctx, buf)
	if err != nil {
		return 0, fmt.Errorf("mount %s: read INIT: %w", s.dir, err)
	}
	le := binary.LittleEndian
	if n < inHeaderSize || le.Uint32(buf[inOpcode:]) != opcodeInit {
		return 0, fmt.Errorf("mount %s: first request is not INIT", s.dir)
	}
	var out [outHdrSize + 64]byte // fuse_out_header, fuse_init_out
	m, _ := s.ps.HandleRequest([][]byte{buf[:n]}, [][]byte{out[:]})
	if m < outHdrSize {
		return 0, fmt.Errorf("mount %s: no reply to INIT", s.dir)
	}
	if _, err := unix.Write(s.fd, out[:m]); err != nil {
		return 0, fmt.Errorf("mount %s: reply to INIT: %w", s.dir, err)
	}
	if errno := int32(le.Uint32(out[4:])); errno != 0 {
		return 0, fmt.Errorf("mount %s: INIT: %w", s.dir, unix.Errno(-errno))
	}
	// fuse_init_out: max_write at 20, max_pages at 28, flags2 at 32.
	io := out[outHdrSize:m]
	if len(io) < 36 || uint64(le.Uint32(io[32:]))<<32&capOverIOURing == 0 {
		return 0, fmt.Errorf("%w: the kernel did not offer it at INIT", ErrUnavailable)
	}
	payload = max(minPayload, int(le.Uint32(io[20:])), int(le.Uint16(io[28:]))*os.Getpagesize())
	return payload, nil
}

// readWait reads one request from /dev/fuse, giving up when ctx ends.
func (s *Server) readWait(ctx context.Context, buf []byte) (int, error) {
	for {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		pfd := []unix.PollFd{{Fd: int32(s.fd), Events: unix.POLLIN}}
		if _, err := unix.Poll(pfd, 100); err != nil && !errors.Is(err, unix.EINTR) {
			return 0, err
		}
		if pfd[0].Revents == 0 {
			continue
		}
		n, err := unix.Read(s.fd, buf)
		if errors.Is(err, unix.EINTR) || errors.Is(err, unix.EAGAIN) {
			continue
		}
		return n, err
	}
}

// readDevice serves what still comes over /dev/fuse once the rings run:
// FORGET and BATCH_FORGET, which need no reply, and INTERRUPT. Anything else
// (nothing, while the rings work) is answered here too. It returns when the
// connection ends, after cancelling the requests still being served.
func (s *Server) readDevice(payload int) {
	defer s.wg.Done()
	buf := make([]byte, payload+4096)
	for {
		n, err := unix.Read(s.fd, buf)
		switch {
		case err == nil:
		case errors.Is(err, unix.EINTR), errors.Is(err, unix.EAGAIN), errors.Is(err, unix.ENOENT):
			continue // ENOENT: the request was interrupted before we read it
		case errors.Is(err, unix.ENODEV):
			s.cancelAll() // unmounted or aborted
			return
		default:
			s.logf("fuseuring: read /dev/fuse: %v", err)
			s.cancelAll()
			return
		}
		if n < inHeaderSize {
			continue
		}
		switch binary.LittleEndian.Uint32(buf[inOpcode:]) {
		case opcodeForget, opcodeBatchForget:
			s.ps.HandleRequest([][]byte{buf[:n]}, nil)
		case opcodeInterrupt:
			go s.interrupt(append([]byte(nil), buf[:n]...))
		default:
			s.wg.Add(1)
			go s.answer(append([]byte(nil), buf[:n]...), payload)
		}
	}
}

// answer serves a request that came over /dev/fuse.
func (s *Server) answer(req []byte, payload int) {
	defer s.wg.Done()
	out := make([]byte, outHdrSize+4096+payload)
	n, _ := s.ps.HandleRequest([][]byte{req}, [][]byte{out})
	if n >= outHdrSize {
		if _, err := unix.Write(s.fd, out[:n]); err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.ENODEV) {
			s.logf("fuseuring: reply over /dev/fuse: %v", err)
		}
	}
}

// interrupt delivers an INTERRUPT: go-fuse closes the cancel channel of the
// request it names, which handlers see as their context ending. The
// request may not have reached go-fuse yet (the kernel sends INTERRUPT as
// soon as the request is on its way to a ring entry), so delivery is
// retried while a ring entry holds the request, and briefly if none does
// yet.
func (s *Server) interrupt(req []byte) {
	if len(req) < inHeaderSize+8 {
		return
	}
	target := binary.LittleEndian.Uint64(req[inHeaderSize:])
	var out [outHdrSize]byte
	unseen := time.Now().Add(20 * time.Millisecond)
	for {
		n, _ := s.ps.HandleRequest([][]byte{req}, [][]byte{out[:]})
		if n == 0 {
			return // delivered; INTERRUPT has no reply then
		}
		if !s.holds(target) && time.Now().After(unseen) {
			return // answered already, or never ours
		}
		select {
		case <-s.stopped:
			return
		case <-time.After(time.Millisecond):
		}
	}
}

// holds reports whether a ring entry holds the request unique.
func (s *Server) holds(unique uint64) bool {
	for _, q := range s.queues {
		for i := range q.ents {
			if q.ents[i].unique.Load() == unique {
				return true
			}
		}
	}
	return false
}

// cancelAll interrupts every request in the queues' hands, as go-fuse does
// when the connection dies: their replies are not wanted any more, and a
// handler that waits on its context returns.
func (s *Server) cancelAll() {
	var req [inHeaderSize + 8]byte
	var out [outHdrSize]byte
	le := binary.LittleEndian
	le.PutUint32(req[inLen:], uint32(len(req)))
	le.PutUint32(req[inOpcode:], opcodeInterrupt)
	for _, q := range s.queues {
		for i := range q.ents {
			if u := q.ents[i].unique.Load(); u != 0 {
				le.PutUint64(req[inHeaderSize:], u)
				s.ps.HandleRequest([][]byte{req[:]}, [][]byte{out[:]})
			}
		}
	}
}
