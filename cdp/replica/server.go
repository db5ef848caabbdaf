package replica

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hindsight-cdp/hindsight/store"
)

// Server applies replication streams to a writer repository.
//
// One stream per replica name at a time: a second connection for a name
// replaces the first, which is closed (a source that lost its connection
// without the target noticing comes back at once, rather than after the
// old one's IdleTimeout).
type Server struct {
	r        *store.Repo
	opt      ServerOptions
	tls      *tls.Config
	log      *slog.Logger
	refusals *refusalLog

	mu       sync.Mutex
	active   map[string]*stream        // the stream of each replica name
	replicas map[string]*replicaRecord // every replica seen, for Status
	failing  map[string]bool           // names being failed over: no stream starts
}

// stream is one accepted connection that owns its replica name.
type stream struct {
	conn     net.Conn
	done     chan struct{}
	replaced atomic.Bool
}

// replicaRecord is what Status shows of a replica; wire counts the live
// connection's bytes, added to Bytes when it ends.
type replicaRecord struct {
	ReplicaStatus
	wire *atomic.Uint64
}

// Defaults of ServerOptions.
const (
	defaultMaxConns     = 256
	defaultHelloTimeout = 10 * time.Second
	defaultIdleTimeout  = 60 * time.Second
	// groupCommit bounds how long applied steps wait for a sync while more
	// frames keep arriving.
	groupCommit = 50 * time.Millisecond
	// refusalLines bounds the refusal lines logged per second.
	refusalLines = 10
)

// logger is l, or a logger that discards: a nil Log means no logging.
func logger(l *slog.Logger) *slog.Logger {
	if l == nil {
		return slog.New(slog.DiscardHandler)
	}
	return l
}

// NewServer makes the server of streams into r.
func NewServer(r *store.Repo, opt ServerOptions) (*Server, error) {
	if opt.Tokens == nil || len(opt.Tokens.entries) == 0 {
		return nil, errors.New("replica: a server needs tokens (--tokens FILE, one line per source: SOURCE TOKEN NAME[,NAME...])")
	}
	if opt.MaxConns <= 0 {
		opt.MaxConns = defaultMaxConns
	}
	if opt.HelloTimeout <= 0 {
		opt.HelloTimeout = defaultHelloTimeout
	}
	if opt.IdleTimeout <= 0 {
		opt.IdleTimeout = defaultIdleTimeout
	}
	s := &Server{r: r, opt: opt, log: logger(opt.Log), active: map[string]*stream{}, replicas: map[string]*replicaRecord{}, failing: map[string]bool{}}
	if opt.TLS != nil {
		s.tls = serverTLS(opt.TLS)
	}
	s.refusals = &refusalLog{log: s.log}
	return s, nil
}

// Serve accepts streams on ln until ctx ends (then it returns nil, once
// every connection is closed).
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	if s.tls == nil && !loopbackListener(ln) {
		ln.Close()
		return fmt.Errorf("replica: %s is not a loopback address: streams without TLS are only served on loopback; give a certificate and key", ln.Addr())
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	slots := make(chan struct{}, s.opt.MaxConns)
	var delay time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				return fmt.Errorf("replica: accept: %w", err)
			}
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			s.log.Warn("replica: accept failed; retrying", "err", err, "in", delay)
			select {
			case <-time.After(delay):
			case <-ctx.Done():
				return nil
			}
			continue
		}
		delay = 0
		select {
		case slots <- struct{}{}:
		default:
			s.refusals.refuse(c.RemoteAddr().String(), fmt.Sprintf("more than %d connections at once", s.opt.MaxConns))
			c.Close()
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-slots }()
			s.serveConn(ctx, c)
		}()
	}
}

// serveConn runs one connection: TLS, HELLO, then its stream.
func (s *Server) serveConn(ctx context.Context, raw net.Conn) {
	remote := raw.RemoteAddr().String()
	defer raw.Close()
	stop := context.AfterFunc(ctx, func() { raw.Close() })
	defer stop()
	wire := &atomic.Uint64{}
	var conn net.Conn = &countConn{Conn: raw, n: wire}
	raw.SetDeadline(time.Now().Add(s.opt.HelloTimeout))
	if s.tls != nil {
		tc := tls.Server(conn, s.tls)
		if err := tc.HandshakeContext(ctx); err != nil {
			s.refusals.refuse(remote, "TLS handshake failed: "+timeoutReason(err, "no TLS handshake within "+s.opt.HelloTimeout.String()))
			return
		}
		conn = tc
	}
	ss := &session{s: s, remote: remote, conn: conn, br: bufio.NewReaderSize(conn, 256<<10), wire: wire}
	st, err := ss.hello(ctx)
	if err != nil {
		ss.refuse(err)
		return
	}
	defer s.release(ss.name, st, ss)
	err = ss.run(ctx)
	switch {
	case st.replaced.Load():
		s.log.Info("replica: stream replaced by a newer connection", "replica", ss.name, "remote", remote)
	case ctx.Err() != nil:
	case errors.Is(err, errLost):
		s.log.Info("replica: stream ended", "replica", ss.name, "remote", remote, "err", err)
	default:
		ss.refuse(err)
	}
}

// errRefused marks an error whose text is the reason to give the source.
var errRefused = errors.New("refused")

// refusef is a refusal with a reason for the source and the log.
func refusef(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errRefused, fmt.Sprintf(format, args...))
}

// hello reads and checks HELLO, makes or resumes the replica and answers
// WELCOME: nothing is written to the repository for a source refused here.
func (ss *session) hello(ctx context.Context) (*stream, error) {
	s := ss.s
	t, p, err := readFrame(ss.br, maxHelloFrame)
	if err != nil {
		return nil, refusef("%s", timeoutReason(err, "no HELLO within "+s.opt.HelloTimeout.String()))
	}
	if t != frameHello {
		return nil, refusef("the first frame is %v, not HELLO", t)
	}
	var h Hello
	if err := json.Unmarshal(p, &h); err != nil {
		return nil, refusef("%v: HELLO: %v", errBadFrame, err)
	}
	if h.Version != Version {
		return nil, refusef("protocol version %d: this target speaks version %d", h.Version, Version)
	}
	if h.Token == "" {
		return nil, refusef("no token")
	}
	source, names, ok := s.opt.Tokens.lookup(h.Token)
	if !ok {
		return nil, refusef("unknown token")
	}
	if !allows(names, h.Name) {
		return nil, refusef("the token of source %q does not allow %q", source, h.Name)
	}
	if len(h.Disks) == 0 || len(h.Disks) > 1<<16 {
		return nil, refusef("%v: HELLO lists %d disks", errBadFrame, len(h.Disks))
	}
	// Checked before the name's stream is taken over: a source allowed a
	// name that another source replicates must not even close that stream.
	if _, disks, err := s.r.Members(h.Name); err == nil && len(disks) > 0 {
		if of := disks[0].Replica; of != nil && of.Source != source {
			return nil, refusef("%q here replicates %q, not %q", h.Name, of.Source, source)
		} else if of == nil && h.Failback == nil {
			return nil, refusef("%q is a writable disk here (fail back into it with replicate --failback from the other site)", h.Name)
		}
	}
	ss.name, ss.source = h.Name, source
	st := &stream{conn: ss.conn, done: make(chan struct{})}
	if err := s.claim(ctx, h.Name, st); err != nil {
		return nil, err
	}
	ok = false
	defer func() {
		if !ok {
			s.release(h.Name, st, nil)
		}
	}()
	if f := h.Failback; f != nil {
		if err := s.r.AcceptFailback(ctx, h.Name, source, f.Diverged, f.At); err != nil {
			return nil, refusef("fail back into %q: %v", h.Name, err)
		}
	}
	if ss.tl, ss.disks, err = s.r.CreateReplica(h.Name, source, h.Group, h.Disks); err != nil {
		return nil, refusef("replica %q: %v", h.Name, err)
	}
	ss.handle = ss.disks[0]
	if h.Group {
		g, err := s.r.Group(h.Name)
		if err != nil {
			return nil, err
		}
		ss.handle = g.Handle()
	}
	// What a stream before this one applied becomes durable, so the
	// position said is one a crash cannot take back.
	if err := s.r.Sync(); err != nil {
		return nil, err
	}
	pos, err := s.r.ReplicaPosition(ss.tl)
	if err != nil {
		return nil, err
	}
	f, err := jsonFrame(frameWelcome, Welcome{Position: pos})
	if err != nil {
		return nil, err
	}
	if err := ss.write(f); err != nil {
		return nil, err
	}
	s.mu.Lock()
	rec := s.replicas[h.Name]
	if rec == nil {
		rec = &replicaRecord{}
		s.replicas[h.Name] = rec
	}
	rec.Name, rec.Source, rec.Connected, rec.Remote, rec.Position, rec.wire = h.Name, source, true, ss.remote, pos, ss.wire
	s.mu.Unlock()
	s.log.Info("replica: stream started", "replica", h.Name, "source", source, "remote", ss.remote, "position", pos, "failback", h.Failback != nil)
	ok = true
	return st, nil
}

// claim makes st the stream of name, closing the one before it.
func (s *Server) claim(ctx context.Context, name string, st *stream) error {
	for {
		s.mu.Lock()
		if s.failing[name] {
			s.mu.Unlock()
			return refusef("%q is being failed over here", name)
		}
		old := s.active[name]
		if old == nil {
			s.active[name] = st
			s.mu.Unlock()
			return nil
		}
		s.mu.Unlock()
		old.replaced.Store(true)
		old.conn.Close()
		select {
		case <-old.done:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// release ends st's ownership of name; ss, set, is the session that ran.
func (s *Server) release(name string, st *stream, ss *session) {
	s.mu.Lock()
	if s.active[name] == st {
		delete(s.active, name)
	}
	if rec := s.replicas[name]; rec != nil && ss != nil && rec.wire == ss.wire {
		rec.Connected, rec.Bytes, rec.wire = false, rec.Bytes+ss.wire.Load(), nil
	}
	s.mu.Unlock()
	close(st.done)
}

// Failover makes the replica name writable (store.Repo.Failover) once its
// stream, if any, has ended; no stream for it starts meanwhile, and the
// source's next HELLO is refused, as the disk is no longer a replica.
func (s *Server) Failover(name string) (store.Handover, error) {
	s.mu.Lock()
	if s.failing[name] {
		s.mu.Unlock()
		return store.Handover{}, fmt.Errorf("replica: %q is already being failed over", name)
	}
	s.failing[name] = true
	old := s.active[name]
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.failing, name)
		s.mu.Unlock()
	}()
	if old != nil {
		old.replaced.Store(true)
		old.conn.Close()
		<-old.done
	}
	return s.r.Failover(name)
}

// Status reports every replica the server has seen.
func (s *Server) Status() []ReplicaStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]ReplicaStatus, 0, len(s.replicas))
	for _, rec := range s.replicas {
		st := rec.ReplicaStatus
		if rec.wire != nil {
			st.Bytes += rec.wire.Load()
		}
		out = append(out, st)
	}
	slices.SortFunc(out, func(a, b ReplicaStatus) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// timeoutReason is what to say of a read error: the timeout's own words
// for a deadline, else the error.
func timeoutReason(err error, timeout string) string {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return timeout
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return "connection closed early: " + err.Error()
	}
	return err.Error()
}

// refusalLog logs refusals at a bounded rate: at most refusalLines a
// second, then a count of those left out on the next line, so a flood of
// bad connections neither floods the log nor slows the accept loop.
type refusalLog struct {
	log        *slog.Logger
	mu         sync.Mutex
	second     time.Time
	lines      int
	suppressed int
}

func (l *refusalLog) refuse(remote, reason string) {
	l.mu.Lock()
	now := time.Now()
	if now.Sub(l.second) >= time.Second {
		l.second, l.lines = now, 0
	}
	if l.lines >= refusalLines {
		l.suppressed++
		l.mu.Unlock()
		return
	}
	l.lines++
	n := l.suppressed
	l.suppressed = 0
	l.mu.Unlock()
	args := []any{"remote", remote, "reason", reason}
	if n > 0 {
		args = append(args, "suppressed", n)
	}
	l.log.Warn("replica: refused", args...)
}

// countConn counts the bytes that cross a connection.
type countConn struct {
	net.Conn
	n *atomic.Uint64
}

func (c *countConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.n.Add(uint64(n))
	return n, err
}

func (c *countConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.n.Add(uint64(n))
	return n, err
}
