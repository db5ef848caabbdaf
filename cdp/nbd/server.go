package nbd

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"syscall"
	"time"
)

// Backend is one export: a disk whose writes are journaled.
//
// All methods may be called concurrently, from one connection or from
// several. The Backends that Options.Exports returns for one name must
// share their state (the simplest is to return the same value): the server
// advertises NBD_FLAG_CAN_MULTI_CONN, so a Flush through one of them must
// cover every write acknowledged through any of them.
type Backend interface {
	// Size is the export size in bytes; it must not change while served.
	Size() int64
	// ReadAt reads len(p) bytes at off, which is always within the size.
	ReadAt(p []byte, off int64) (int, error)
	// WriteAt writes p at off, within the size. The data is visible to
	// later reads (on any connection) once WriteAt returns.
	WriteAt(p []byte, off int64) (int, error)
	// Flush returns once everything acknowledged before it was called is
	// durable.
	Flush() error
	// Zero makes length bytes at off read as zeros, for WRITE_ZEROES and
	// TRIM. Zero blocks cost no content, so Zero must never be slower
	// than writing the same zeros with WriteAt: NBD_CMD_FLAG_FAST_ZERO
	// requests rely on it.
	Zero(off, length int64) error
}

// Describer is optionally implemented by a Backend to answer
// NBD_INFO_DESCRIPTION with a line for humans.
type Describer interface {
	Description() string
}

// Options configure a Server.
type Options struct {
	// Exports maps an export name to its backend. An error refuses the
	// export (NBD_REP_ERR_UNKNOWN, or a closed connection for the old
	// NBD_OPT_EXPORT_NAME). The default export is the name "".
	Exports func(name string) (Backend, error)
	// List names the exports for NBD_OPT_LIST; nil refuses listing
	// (NBD_REP_ERR_POLICY).
	List func() []string
	// TLS, when non-nil, makes TLS mandatory: every option other than
	// NBD_OPT_STARTTLS and NBD_OPT_ABORT is refused until the client has
	// upgraded (the protocol's FORCEDTLS mode).
	TLS *tls.Config
	// Logf receives connection events and refusals; nil discards them.
	Logf func(format string, args ...any)
	// MinBlock is the minimum block size advertised and enforced: offsets
	// and lengths must be multiples of it (a length may also end exactly
	// at the export size). A power of two from 1 to 65536; 0 means 512.
	MinBlock uint32
}

// Server serves NBD exports. It holds no per-connection state, so one
// Server may serve several listeners.
type Server struct {
	opt Options
}

// NewServer returns a server for opt. Options are checked by Serve.
func NewServer(opt Options) *Server {
	if opt.MinBlock == 0 {
		opt.MinBlock = 512
	}
	if opt.Logf == nil {
		opt.Logf = func(string, ...any) {}
	}
	return &Server{opt: opt}
}

// ErrBadOptions is returned by Serve for unusable Options; use errors.Is.
var ErrBadOptions = errors.New("nbd: bad options")

// shutdownGrace bounds how long replies to in-flight requests may take
// to be written to a client that stopped reading, once Serve is stopping.
const shutdownGrace = 10 * time.Second

// Serve accepts connections on l and serves them until ctx is done or
// accepting fails. When ctx is done it closes l, stops reading new
// requests, lets the requests already read finish and get their replies,
// closes every connection and returns nil. A failing listener makes Serve
// shut down the same way and return the accept error.
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	if s.opt.Exports == nil {
		return fmt.Errorf("%w: Exports is nil", ErrBadOptions)
	}
	if mb := s.opt.MinBlock; mb > 1<<16 || mb&(mb-1) != 0 {
		return fmt.Errorf("%w: MinBlock %d is not a power of two up to 65536", ErrBadOptions, mb)
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { l.Close() })
	defer stop()

	var delay time.Duration
	for {
		nc, err := l.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var te interface{ Temporary() bool }
			if errors.As(err, &te) && te.Temporary() {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				s.opt.Logf("nbd: accept: %v; retrying in %v", err, delay)
				select {
				case <-time.After(delay):
				case <-ctx.Done():
					return nil
				}
				continue
			}
			return fmt.Errorf("nbd: accept: %w", err)
		}
		delay = 0
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.serveConn(ctx, nc)
		}()
	}
}

// serveConn runs one connection: handshake, then transmission. It returns
// once the connection is closed and no request of it is in flight.
func (s *Server) serveConn(ctx context.Context, nc net.Conn) {
	remote := nc.RemoteAddr()
	// On shutdown, unblock the reader and bound the remaining replies.
	// The deadline set on the raw connection also applies beneath TLS.
	stop := context.AfterFunc(ctx, func() {
		nc.SetReadDeadline(time.Now())
		nc.SetWriteDeadline(time.Now().Add(shutdownGrace))
	})
	defer stop()

	h := &handshake{s: s, nc: nc, tlsRequired: s.opt.TLS != nil}
	h.br = newReader(nc)
	exp, err := h.run(ctx)
	if err != nil {
		if ctx.Err() == nil && !errors.Is(err, errAborted) {
			s.opt.Logf("nbd: %v: handshake: %v", remote, err)
		}
		h.nc.Close()
		return
	}
	s.opt.Logf("nbd: %v: serving export %q (%d bytes, tls=%v, structured=%v)",
		remote, exp.name, exp.geo.size, h.tlsDone, exp.geo.structured)
	t := newTransmission(h.nc, h.br, exp, s.opt.Logf)
	err = t.run(ctx)
	h.nc.Close()
	if err != nil && ctx.Err() == nil {
		s.opt.Logf("nbd: %v: export %q: %v", remote, exp.name, err)
	} else {
		s.opt.Logf("nbd: %v: export %q: disconnected", remote, exp.name)
	}
}

// errnoOf maps a backend error to an NBD error value.
func errnoOf(err error) uint32 {
	var en syscall.Errno
	if errors.As(err, &en) {
		switch en {
		case syscall.EPERM, syscall.EACCES, syscall.EROFS:
			return errnoPerm
		case syscall.ENOSPC, syscall.EDQUOT, syscall.EFBIG:
			return errnoNoSpace
		case syscall.EINVAL:
			return errnoInval
		case syscall.ESHUTDOWN:
			return errnoShutdown
		}
	}
	return errnoIO
}
