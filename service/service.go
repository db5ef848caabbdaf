package service

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sort"
	"sync"
	"time"

	"github.com/hindsight-cdp/hindsight/cdp"
	"github.com/hindsight-cdp/hindsight/cdp/replica"
	"github.com/hindsight-cdp/hindsight/store"
)

// Errors of the service's requests. Use errors.Is.
var (
	// ErrExists: a protection or clone of that name runs already, or a
	// disk is protected by another protection.
	ErrExists = errors.New("service: already protected")
	// ErrNotFound: no protection or clone of that name.
	ErrNotFound = errors.New("service: no such protection")
)

// Options tune a Service.
type Options struct {
	// SyncInterval is how often the journal is synced and published while
	// there are writes (0: one second): what a crash can lose of writes
	// never fsynced, and how far readers in other processes lag.
	SyncInterval time.Duration
	// Record keeps the protections in the repository (R/service.json), so
	// that the next service brings them back: `hindsight serve`. A
	// foreground protect records nothing.
	Record bool
	// Logger receives the service's log; nil discards it.
	Logger *slog.Logger
	// PruneEvery is how often every retention policy is applied, then
	// garbage collected (0: never; `hindsight serve` says 1h).
	PruneEvery time.Duration
}

// Service is the one writer of a repository and every front end that
// writes to it.
type Service struct {
	r       *store.Repo
	opt     Options
	log     *slog.Logger
	state   *stateFile
	started time.Time
	metrics *metrics

	// dirty wakes the publisher after a write: no polling when idle.
	dirty chan struct{}

	spaceMu    sync.Mutex // guards spaceLevel
	spaceLevel int        // the free space's level last logged (space.go)

	pubMu      sync.Mutex // one publish at a time; guards statusPrev
	statusPrev map[string]statusSample

	mu    sync.Mutex
	prots map[string]*protection // by name; nil while being started
	inst  map[string]*instant
	reps  map[string]*replication // streams to other sites, by name
	// replicaSrv takes streams from other sites, if the service listens.
	replicaSrv *replica.Server
	repWG      sync.WaitGroup // the running senders

	// retSlot holds one retention job (prune or gc, asked or scheduled)
	// at a time; Run takes it for good once it stops.
	retSlot chan struct{}
	// stopped ends when Run stops: retention jobs asked over the socket end
	// with it, before the repository closes.
	stopped context.Context
	stop    context.CancelFunc
}

// New makes the service of the writer repository r.
func New(r *store.Repo, opt Options) (*Service, error) {
	if opt.SyncInterval <= 0 {
		opt.SyncInterval = time.Second
	}
	log := opt.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	s := &Service{r: r, opt: opt, log: log, started: time.Now(), dirty: make(chan struct{}, 1),
		prots: map[string]*protection{}, inst: map[string]*instant{}, reps: map[string]*replication{}, statusPrev: map[string]statusSample{},
		retSlot: make(chan struct{}, 1)}
	s.stopped, s.stop = context.WithCancel(context.Background())
	if opt.Record {
		st, err := loadState(r.Dir())
		if err != nil {
			return nil, err
		}
		s.state = st
	}
	s.metrics = newMetrics(s)
	return s, nil
}

// Repo is the service's repository.
func (s *Service) Repo() *store.Repo { return s.r }

// Restore brings back the recorded protections and clones. One that
// cannot start is listed as failed, with why; the others go on.
func (s *Service) Restore(ctx context.Context) {
	for _, spec := range s.state.specs() {
		if _, err := s.start(ctx, spec, false); err != nil {
			s.log.Error("could not bring back a protection", "protection", spec.Name, "err", err)
		} else {
			s.log.Info("protection back", "protection", spec.Name)
		}
	}
	s.instantsBack(ctx)
	s.replicationsBack()
}

// Run syncs and publishes the journal while there are writes, and applies
// the retention policies every PruneEvery, until ctx ends. Then it
// unmounts and closes every front end, flushes the journal, and returns.
func (s *Service) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	if s.opt.PruneEvery > 0 {
		wg.Go(func() { s.retentionLoop(ctx) })
	}
	wg.Go(func() { s.spaceLoop(ctx) })
	err := s.publishLoop(ctx)
	// Retention jobs stop at ctx's end (crash-safe at any moment), and
	// none starts after: the repository closes once Run returns.
	s.stop()
	wg.Wait()
	s.endReplications()
	s.retSlot <- struct{}{}
	return errors.Join(err, s.shutdown())
}

// shutdown stops every front end and makes everything durable.
func (s *Service) shutdown() error {
	s.mu.Lock()
	var ps []*protection
	for _, p := range s.prots {
		if p != nil {
			ps = append(ps, p)
		}
	}
	s.mu.Unlock()
	// Durable first: an unmount can wait on a busy mount.
	errs := []error{s.publish(false)}
	s.endInstants()
	for _, p := range ps {
		if err := p.stopFrontEnd(); err != nil {
			errs = append(errs, fmt.Errorf("protection %s: %w", p.spec.Name, err))
		}
	}
	errs = append(errs, s.publish(false))
	for _, p := range ps {
		p.close()
	}
	return errors.Join(errs...)
}

// Protect starts a protection and records it; it returns once its front
// end serves.
func (s *Service) Protect(ctx context.Context, spec ProtectSpec) (ProtectionStatus, error) {
	if err := spec.normalize(); err != nil {
		return ProtectionStatus{}, err
	}
	p, err := s.start(ctx, spec, true)
	if err != nil {
		return ProtectionStatus{}, err
	}
	return p.status(), nil
}

// start starts spec's front end; with record, it records spec once it
// serves. A spec that fails at start is kept, failed, so that
// protections shows why.
func (s *Service) start(ctx context.Context, spec ProtectSpec, record bool) (*protection, error) {
	if err := spec.normalize(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	if _, ok := s.prots[spec.Name]; ok {
		s.mu.Unlock()
		return nil, fmt.Errorf("%w: a protection called %s runs already (hindsight unprotect %s ends it)", ErrExists, spec.Name, spec.Name)
	}
	s.prots[spec.Name] = nil // reserved while it starts
	s.mu.Unlock()
	p, err := s.startFrontEnd(ctx, spec)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		if record {
			delete(s.prots, spec.Name)
			return nil, err
		}
		// Brought back from the record and failed: shown as failed.
		s.prots[spec.Name] = &protection{spec: spec, kind: spec.kind(), where: spec.where(), since: time.Now(), state: StateFailed, err: err, ended: closedChan()}
		return nil, err
	}
	if record {
		if err := s.state.put(spec); err != nil {
			delete(s.prots, spec.Name)
			p.stopFrontEnd()
			p.close()
			return nil, err
		}
	}
	s.prots[spec.Name] = p
	go s.watch(p)
	return p, nil
}

// watch reports a front end that ends without being asked to (an unmount
// from outside, a failed listener).
func (s *Service) watch(p *protection) {
	<-p.ended
	if p.stopping() {
		return
	}
	p.fail(fmt.Errorf("its front end at %s ended without unprotect (unmounted from outside?); 'hindsight unprotect %s' forgets it", p.where, p.spec.Name))
	s.log.Warn("protection ended", "protection", p.spec.Name, "err", p.failure())
}

// Unprotect ends a protection: it is forgotten, its front end stops, and
// everything written through it is made durable. History stays.
func (s *Service) Unprotect(ctx context.Context, name string) (ProtectionStatus, error) {
	s.mu.Lock()
	p, ok := s.prots[name]
	if !ok || p == nil {
		s.mu.Unlock()
		if !ok {
			return ProtectionStatus{}, fmt.Errorf("%w: %s (hindsight protections lists them)", ErrNotFound, name)
		}
		return ProtectionStatus{}, fmt.Errorf("%w: %s is starting; try again", ErrExists, name)
	}
	delete(s.prots, name)
	s.mu.Unlock()
	// Forgotten first: a crash from here on does not bring it back.
	if err := s.state.drop(name); err != nil {
		s.mu.Lock()
		s.prots[name] = p
		s.mu.Unlock()
		return ProtectionStatus{}, err
	}
	if err := p.stopFrontEnd(); err != nil {
		// Still serving (a busy mount): it stays, listed and recorded, and
		// unprotect can be asked again once whatever holds it lets go.
		s.mu.Lock()
		s.prots[name] = p
		s.mu.Unlock()
		return p.status(), errors.Join(fmt.Errorf("protection %s still serves: %w", name, err), s.state.put(p.spec))
	}
	err := s.publish(true)
	st := p.status()
	p.close()
	return st, err
}

// Protections reports every protection, by name.
func (s *Service) Protections() []ProtectionStatus {
	s.mu.Lock()
	var ps []*protection
	for _, p := range s.prots {
		if p != nil {
			ps = append(ps, p)
		}
	}
	s.mu.Unlock()
	out := make([]ProtectionStatus, 0, len(ps))
	for _, p := range ps {
		out = append(out, p.status())
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Ended returns a channel closed when the protection name's front end
// ends, for a foreground protect that lives as long as its protection.
func (s *Service) Ended(name string) <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p := s.prots[name]; p != nil {
		return p.ended
	}
	return closedChan()
}

// devices returns every device being served.
func (s *Service) devices() []*cdp.Device {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*cdp.Device
	for _, p := range s.prots {
		if p != nil {
			out = append(out, p.devs...)
		}
	}
	for _, in := range s.inst {
		out = append(out, in.devs()...)
	}
	return out
}

// protectedBy returns the protection serving disk, if any.
func (s *Service) protectedBy(disk string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	for name, p := range s.prots {
		if p == nil {
			continue
		}
		for _, d := range p.devs {
			if d.Disk().Name == disk {
				return name
			}
		}
	}
	return ""
}

// newDevice makes a device of disk d whose writes wake the publisher.
func (s *Service) newDevice(d store.Disk, frontEnd string) *cdp.Device {
	dev := cdp.NewDevice(s.r, d, frontEnd)
	m := s.metrics.flushObserver(d.Name)
	dev.SetHooks(cdp.Hooks{Written: s.wake, Flushed: m, Synced: func() error { return s.replicated(d) }})
	return dev
}

func (s *Service) wake() {
	select {
	case s.dirty <- struct{}{}:
	default:
	}
}

// statusSample is a device's counters when its status was last written.
type statusSample struct {
	stats cdp.DeviceStats
	at    time.Time
}

func closedChan() chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}

// logf adapts the service's logger to the printf-style loggers of the
// front ends.
func (s *Service) logf(args ...any) func(string, ...any) {
	return func(f string, a ...any) { s.log.Info(fmt.Sprintf(f, a...), args...) }
}

// PID is the service's process.
func PID() int { return os.Getpid() }
