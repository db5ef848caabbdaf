package nbd

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
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
	// later reads (on any connection) once WriteAt returns. An error that
	// is a syscall.Errno (errors.As) answers its NBD error: ENOSPC, as a
	// write refused because the repository's filesystem is full
	// (store.ErrNoSpace) is, answers NBD_ENOSPC; an unknown one NBD_EIO.
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

	// HandshakeTimeout bounds the time from accept until the client has
	// chosen an export (NBD_OPT_GO or NBD_OPT_EXPORT_NAME answered),
	// TLS included; a client still haggling then is disconnected.
	// 0 means 10 s.
	HandshakeTimeout time.Duration
	// MaxConns caps the connections served at once, in the handshake or
	// in transmission; 0 means 64. MaxHandshakes caps those still in the
	// handshake; 0 means 8. A connection beyond either cap is closed as
	// soon as it is accepted, before anything is sent; the connections
	// already served are not disturbed.
	MaxConns, MaxHandshakes int
	// AllowUID says which local users are served over a Unix socket: the
	// peer's uid (SO_PEERCRED) of every accepted Unix connection is
	// checked, and a refused one is closed before anything is sent. nil
	// allows the server's effective uid (the socket's owner) and root.
	AllowUID func(uid uint32) bool
}

// Defaults of Options.
const (
	DefaultHandshakeTimeout = 10 * time.Second
	DefaultMaxConns         = 64
	DefaultMaxHandshakes    = 8
)

// Server serves NBD exports. Its connection caps are shared by every
// listener it serves.
type Server struct {
	opt Options
	// conns and handshakes are semaphores: a slot is held by each
	// connection served, and by each still in its handshake.
	conns, handshakes chan struct{}
	// refusals logs refused and failed connections at a bounded rate.
	refusals *rateLog
}

// NewServer returns a server for opt. Options are checked by Serve.
func NewServer(opt Options) *Server {
	if opt.MinBlock == 0 {
		opt.MinBlock = 512
	}
	if opt.Logf == nil {
		opt.Logf = func(string, ...any) {}
	}
	if opt.HandshakeTimeout <= 0 {
		opt.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if opt.MaxConns <= 0 {
		opt.MaxConns = DefaultMaxConns
	}
	if opt.MaxHandshakes <= 0 {
		opt.MaxHandshakes = DefaultMaxHandshakes
	}
	if opt.AllowUID == nil {
		opt.AllowUID = ownerOrRoot(os.Geteuid())
	}
	return &Server{
		opt:        opt,
		conns:      make(chan struct{}, opt.MaxConns),
		handshakes: make(chan struct{}, opt.MaxHandshakes),
		refusals:   newRateLog(opt.Logf, refusalLogInterval),
	}
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
		// The deadline runs from accept, before anything is checked.
		deadline := time.Now().Add(s.opt.HandshakeTimeout)
		peer, ok := s.admit(nc)
		if !ok {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-s.conns }()
			s.serveConn(ctx, nc, peer, deadline)
		}()
	}
}

// admit checks a new connection's peer and the caps. It returns a name for
// the peer in log lines and true when the connection is to be served,
// holding a connection slot and a handshake slot; otherwise it has closed
// the connection and logged why (at a bounded rate), logging first so that
// the line exists by the time the peer sees its connection end.
func (s *Server) admit(nc net.Conn) (peer string, ok bool) {
	if a := nc.RemoteAddr(); a != nil {
		peer = a.String()
	}
	cred, err := peerCred(nc)
	switch {
	case err != nil:
		s.refusals.log("refused: no peer credentials", "nbd: refused a connection: %v", err)
		nc.Close()
		return peer, false
	case cred != nil && !s.opt.AllowUID(cred.Uid):
		s.refusals.log("refused: not the owner", "nbd: refused a connection from uid %d (pid %d): that user may not use this server (by default it serves its own uid %d and root)", cred.Uid, cred.Pid, os.Geteuid())
		nc.Close()
		return peer, false
	case cred != nil:
		peer = fmt.Sprintf("uid %d pid %d", cred.Uid, cred.Pid)
	}
	select {
	case s.conns <- struct{}{}:
	default:
		s.refusals.log("refused: too many connections", "nbd: %s: refused: %d connections already served (the cap)", peer, s.opt.MaxConns)
		nc.Close()
		return peer, false
	}
	select {
	case s.handshakes <- struct{}{}:
	default:
		<-s.conns
		s.refusals.log("refused: too many handshakes", "nbd: %s: refused: %d connections already in the handshake (the cap)", peer, s.opt.MaxHandshakes)
		nc.Close()
		return peer, false
	}
	return peer, true
}

// shutdownDeadlines unblocks nc's reader and bounds the remaining replies.
func shutdownDeadlines(nc net.Conn) {
	nc.SetReadDeadline(time.Now())
	nc.SetWriteDeadline(time.Now().Add(shutdownGrace))
}

// serveConn runs one connection admitted with a handshake slot: the
// handshake until deadline, then transmission. It returns once the
// connection is closed and no request of it is in flight.
func (s *Server) serveConn(ctx context.Context, nc net.Conn, peer string, deadline time.Time) {
	// Deadlines set on the raw connection also apply beneath TLS.
	nc.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { shutdownDeadlines(nc) })
	defer stop()

	h := &handshake{s: s, nc: nc, peer: peer, tlsRequired: s.opt.TLS != nil}
	h.br = newReader(nc)
	exp, err := h.run(ctx)
	<-s.handshakes
	if err != nil {
		switch {
		case ctx.Err() != nil, errors.Is(err, errAborted):
		case errors.Is(err, os.ErrDeadlineExceeded):
			s.refusals.log("dropped: handshake timeout", "nbd: %s: no export chosen within %v; disconnected", peer, s.opt.HandshakeTimeout)
		default:
			s.refusals.log("handshake failures", "nbd: %s: handshake: %v", peer, err)
		}
		h.nc.Close()
		return
	}
	nc.SetDeadline(time.Time{})
	if ctx.Err() != nil {
		// Shutdown began during the handshake: its deadlines were just
		// cleared (the AfterFunc has run or is running).
		shutdownDeadlines(nc)
	}
	remote := peer
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
