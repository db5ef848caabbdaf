package replica

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hindsight-cdp/hindsight/store"
)

// ErrRefused: the target refused the stream (the reason follows); check
// with errors.Is.
var ErrRefused = errors.New("replica: refused by the target")

// Sender streams one disk or group of a writer repository to a target.
//
// Its acknowledged position (Acked) is a journal position of the source
// repository such that every point of the stream's timeline at or before
// it is durable on the target: a flush that made position p durable here
// waits for Acked ≥ p (WaitAcked), whatever other timelines wrote since.
type Sender struct {
	r      *store.Repo
	name   string
	target Target
	opt    SendOptions
	log    *slog.Logger
	tls    *tls.Config // nil: plain TCP (Insecure, loopback)
	tl     uint32
	disks  []store.Disk
	index  map[uint32]uint16 // disk ID → index in HELLO's list
	handle store.Disk        // what bookmarks are listed by
	hello  Hello
	bucket *tokenBucket // nil: unlimited

	// Tunables, set by tests.
	pingEvery, readTimeout, minBackoff, maxBackoff time.Duration
	onAck                                          func(seq uint64, t time.Time)

	wire atomic.Uint64

	mu        sync.Mutex
	st        Status
	connected bool
	covered   uint64        // Acked
	ackSeq    uint64        // the newest step the target acknowledged
	coverage  []coverMark   // passes sent, not yet acknowledged
	lag       []lagStep     // steps read, not yet acknowledged
	ackCh     chan struct{} // closed when covered moves
}

// coverMark: once step need is acknowledged, everything up to upto is.
type coverMark struct{ need, upto uint64 }

// lagStep is a step read and not acknowledged, and its logical bytes.
type lagStep struct {
	seq   uint64
	bytes int64
}

// Defaults of SendOptions and the stream's pace.
const (
	defaultSyncTimeout = 5 * time.Second
	defaultPingEvery   = 5 * time.Second
	defaultReadTimeout = 60 * time.Second
)

// NewSender prepares the replication of name (a disk or group of r).
func NewSender(r *store.Repo, name string, t Target, opt SendOptions) (*Sender, error) {
	tl, disks, err := r.Members(name)
	if err != nil {
		return nil, err
	}
	if len(disks) == 0 {
		return nil, fmt.Errorf("replica: group %q has no disks", name)
	}
	group := disks[0].Group == name
	if !group && disks[0].Group != "" {
		return nil, fmt.Errorf("replica: disk %q is in group %q: replicate the group, so that its disks stay consistent", name, disks[0].Group)
	}
	if len(disks) > 1<<16 {
		return nil, fmt.Errorf("replica: group %q has %d disks, more than a stream carries", name, len(disks))
	}
	handle, handover, of := disks[0], disks[0].Handover, disks[0].Replica
	if group {
		g, err := r.Group(name)
		if err != nil {
			return nil, err
		}
		handle, handover, of = g.Handle(), g.Handover, g.Replica
	}
	if of != nil {
		return nil, fmt.Errorf("%w: %q is a replica of %q: only its own source writes it; fail it over first ('hindsight failover %s') to replicate it from here", store.ErrReplica, name, of.Source, name)
	}
	s := &Sender{r: r, name: name, target: t, opt: opt, log: logger(opt.Log), tl: tl, disks: disks, handle: handle,
		index: map[uint32]uint16{}, pingEvery: defaultPingEvery, readTimeout: defaultReadTimeout,
		minBackoff: 500 * time.Millisecond, maxBackoff: 10 * time.Second, ackCh: make(chan struct{})}
	s.hello = Hello{Version: Version, Token: t.Token, Name: name, Group: group, Sync: opt.Sync}
	for i, d := range disks {
		if d.Base != nil {
			return nil, fmt.Errorf("replica: %q is a clone of %q: its unwritten blocks are its base's, which a stream does not carry; export it or replicate the base", d.Name, d.Base.Disk)
		}
		s.index[d.ID] = uint16(i)
		s.hello.Disks = append(s.hello.Disks, store.DiskSpec{Name: d.Name, Size: d.Size, BlockSize: d.BlockSize})
	}
	if opt.Failback {
		if handover == nil {
			return nil, fmt.Errorf("replica: %q has no handover record: --failback streams a disk that was failed over here back to its former source", name)
		}
		s.hello.Failback = &Failback{Diverged: handover.Diverged, At: handover.At}
	}
	if t.Token == "" {
		return nil, errors.New("replica: no token for the target (--token-file)")
	}
	if _, _, err := net.SplitHostPort(t.Addr); err != nil {
		return nil, fmt.Errorf("replica: target address %q: %w", t.Addr, err)
	}
	if t.Insecure {
		if !isLoopback(t.Addr) {
			return nil, fmt.Errorf("replica: --insecure (plain TCP) is only allowed to a loopback address, not %s: give the target's CA (--ca)", t.Addr)
		}
	} else if s.tls, err = clientTLS(t); err != nil {
		return nil, err
	}
	if s.opt.OnLinkLoss == "" {
		s.opt.OnLinkLoss = Stall
	}
	if s.opt.OnLinkLoss != Stall && s.opt.OnLinkLoss != Async {
		return nil, fmt.Errorf("replica: on link loss %q: use %q or %q", s.opt.OnLinkLoss, Stall, Async)
	}
	if s.opt.SyncTimeout <= 0 {
		s.opt.SyncTimeout = defaultSyncTimeout
	}
	if opt.Bandwidth > 0 {
		s.bucket = newTokenBucket(opt.Bandwidth)
	}
	s.st = Status{Name: name, Target: t.Addr, State: "connecting", Sync: opt.Sync}
	return s, nil
}

// Run streams until ctx ends, connecting again after any failure; it
// returns nil once ctx ends.
func (s *Sender) Run(ctx context.Context) error {
	backoff := s.minBackoff
	for {
		s.setState("connecting", "")
		progressed, err := s.session(ctx)
		s.mu.Lock()
		s.connected = false
		s.mu.Unlock()
		if ctx.Err() != nil {
			s.setState("stopped", "")
			return nil
		}
		if progressed {
			backoff = s.minBackoff
		}
		s.mu.Lock()
		s.st.State, s.st.LastError = "retrying", err.Error()
		s.st.Reconnects++
		s.mu.Unlock()
		wait := backoff/2 + rand.N(backoff)
		s.log.Warn("replica: stream failed; connecting again", "replica", s.name, "target", s.target.Addr, "err", err, "in", wait.Round(time.Millisecond))
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			s.setState("stopped", "")
			return nil
		}
		backoff = min(2*backoff, s.maxBackoff)
	}
}

func (s *Sender) setState(state, lastErr string) {
	s.mu.Lock()
	s.st.State = state
	if lastErr != "" {
		s.st.LastError = lastErr
	}
	s.mu.Unlock()
}

// dial connects to the target: TCP, then TLS unless Insecure.
func (s *Sender) dial(ctx context.Context) (net.Conn, error) {
	d := net.Dialer{Timeout: 10 * time.Second, KeepAlive: 15 * time.Second}
	raw, err := d.DialContext(ctx, "tcp", s.target.Addr)
	if err != nil {
		return nil, err
	}
	var c net.Conn = &countConn{Conn: raw, n: &s.wire}
	if s.bucket != nil {
		c = &limitConn{Conn: c, b: s.bucket}
	}
	if s.tls == nil {
		return c, nil
	}
	tc := tls.Client(c, s.tls)
	raw.SetDeadline(time.Now().Add(s.readTimeout))
	if err := tc.HandshakeContext(ctx); err != nil {
		raw.Close()
		return nil, fmt.Errorf("TLS handshake with %s: %w", s.target.Addr, err)
	}
	raw.SetDeadline(time.Time{})
	return tc, nil
}

// welcomed starts a connection's accounting at the target's position.
func (s *Sender) welcomed(pos time.Time) error {
	var seq uint64
	if !pos.IsZero() {
		p, err := s.r.PointAt(s.tl, pos)
		if err == nil {
			seq = p.Seq
		} else if !errors.Is(err, store.ErrNoPoint) {
			return err
		}
		if last, err := s.r.LastPoint(s.tl); err == nil && pos.After(last.Time) {
			s.log.Warn("replica: the target has points after the newest here: it will get only points after its own", "replica", s.name, "target_position", pos, "newest_here", last.Time)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.connected = true
	s.st.State = "streaming"
	s.ackSeq = seq
	s.st.AckedTime = pos
	s.coverage, s.lag, s.st.LagBytes = s.coverage[:0], s.lag[:0], 0
	s.advance(seq)
	return nil
}

// read counts a step read for the stream, not yet acknowledged.
func (s *Sender) read(seq uint64, bytes int64) {
	s.mu.Lock()
	s.lag = append(s.lag, lagStep{seq, bytes})
	s.st.LagBytes += bytes
	s.mu.Unlock()
}

// cover notes that once step need is acknowledged, the timeline is on the
// target up to position upto.
func (s *Sender) cover(need, upto uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if need <= s.ackSeq {
		s.advance(upto)
		return
	}
	s.coverage = append(s.coverage, coverMark{need, upto})
}

// acked takes an ACK: the target has step seq, at time t, durable.
func (s *Sender) acked(seq uint64, t time.Time) {
	s.mu.Lock()
	s.ackSeq, s.st.AckedTime = seq, t
	n := 0
	for n < len(s.lag) && s.lag[n].seq <= seq {
		s.st.LagBytes -= s.lag[n].bytes
		n++
	}
	s.lag = s.lag[n:]
	upto := seq
	n = 0
	for n < len(s.coverage) && s.coverage[n].need <= seq {
		upto = max(upto, s.coverage[n].upto)
		n++
	}
	s.coverage = s.coverage[n:]
	s.advance(upto)
	if s.st.Degraded && len(s.coverage) == 0 && len(s.lag) == 0 {
		s.synchronous() // everything read is acknowledged
	}
	hook := s.onAck
	s.mu.Unlock()
	if hook != nil {
		hook(seq, t)
	}
}

// advance moves Acked to upto (s.mu held) and wakes WaitAcked.
func (s *Sender) advance(upto uint64) {
	if upto <= s.covered {
		return
	}
	s.covered = upto
	close(s.ackCh)
	s.ackCh = make(chan struct{})
	if s.st.Degraded && s.covered >= s.r.Durable() {
		s.synchronous()
	}
}

// synchronous ends a degraded spell (s.mu held).
func (s *Sender) synchronous() {
	s.st.Degraded = false
	s.log.Info("replica: caught up: flushes wait for the replica again", "replica", s.name, "target", s.target.Addr)
}

// Status reports the stream's state.
func (s *Sender) Status() Status {
	durable := s.r.Durable()
	s.mu.Lock()
	st := s.st
	covered, connected := s.covered, s.connected
	s.mu.Unlock()
	st.Acked, st.WireBytes = covered, s.wire.Load()
	if covered >= durable {
		st.LagBytes = 0
		if connected {
			st.State = "caught-up"
		}
		return st
	}
	if last, err := s.r.LastPoint(s.tl); err == nil {
		ref := st.AckedTime
		if ref.IsZero() {
			if first, err := s.r.FirstPoint(s.tl); err == nil {
				ref = first.Time
			}
		}
		st.LagSeconds = max(0, last.Time.Sub(ref).Seconds())
	}
	return st
}

// Acked is the newest source position the target has durable (0: none
// known yet): retention keeps everything after it.
func (s *Sender) Acked() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.covered
}

// WaitAcked returns once the target has position seq durable: what a
// --sync flush waits for (seq must be durable here: the stream carries
// nothing else). With OnLinkLoss Async it returns nil after SyncTimeout
// and marks the stream degraded; while degraded it returns at once, until
// the stream has caught up.
func (s *Sender) WaitAcked(ctx context.Context, seq uint64) error {
	var timeout <-chan time.Time
	if s.opt.OnLinkLoss == Async {
		t := time.NewTimer(s.opt.SyncTimeout)
		defer t.Stop()
		timeout = t.C
	}
	for {
		s.mu.Lock()
		if s.covered >= seq || (s.opt.OnLinkLoss == Async && s.st.Degraded) {
			s.mu.Unlock()
			return nil
		}
		ch := s.ackCh
		s.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		case <-timeout:
			s.mu.Lock()
			if !s.st.Degraded && s.covered < seq {
				s.st.Degraded = true
				s.log.Warn("replica: no acknowledgement within the sync timeout: flushes no longer wait for the replica until it has caught up",
					"replica", s.name, "target", s.target.Addr, "timeout", s.opt.SyncTimeout)
			}
			s.mu.Unlock()
			return nil
		}
	}
}

// tokenBucket paces bytes written to a rate.
type tokenBucket struct {
	mu     sync.Mutex
	rate   float64 // bytes per second
	burst  float64
	tokens float64
	last   time.Time
}

func newTokenBucket(rate int64) *tokenBucket {
	burst := max(float64(rate)/20, 16<<10)
	return &tokenBucket{rate: float64(rate), burst: burst, tokens: burst, last: time.Now()}
}

// take waits until n bytes (at most a burst) may be written.
func (b *tokenBucket) take(n int) {
	b.mu.Lock()
	now := time.Now()
	b.tokens = min(b.burst, b.tokens+now.Sub(b.last).Seconds()*b.rate)
	b.last = now
	b.tokens -= float64(n)
	wait := time.Duration(-b.tokens / b.rate * float64(time.Second))
	b.mu.Unlock()
	if wait > 0 {
		time.Sleep(wait)
	}
}

// limitConn paces a connection's writes with a token bucket.
type limitConn struct {
	net.Conn
	b *tokenBucket
}

func (c *limitConn) Write(p []byte) (int, error) {
	written := 0
	for len(p) > 0 {
		n := min(len(p), int(c.b.burst))
		c.b.take(n)
		m, err := c.Conn.Write(p[:n])
		written += m
		if err != nil {
			return written, err
		}
		p = p[n:]
	}
	return written, nil
}
