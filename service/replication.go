package service

import (
	"context"
	"fmt"
	"net"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/hindsight-cdp/hindsight/cdp/replica"
	"github.com/hindsight-cdp/hindsight/store"
)

// Replication: the service streams a disk's or group's journal to a second
// site (one replica.Sender per replication, recorded in R/service.json so
// that a restart resumes it) and, with a replication listener, takes such
// streams into replicas (one replica.Server).

// ReplicateSpec is a replication the service runs and records.
type ReplicateSpec struct {
	Name string `json:"name"` // a disk or group of the repository
	To   string `json:"to"`   // hs://host:port
	// CA and TokenFile are paths the service reads (absolute): the
	// certificate authority the target's certificate must chain to, and
	// the bearer token the target knows this source by.
	CA        string `json:"ca,omitempty"`
	TokenFile string `json:"token_file"`
	Insecure  bool   `json:"insecure,omitempty"` // plain TCP to a loopback target
	Bandwidth int64  `json:"bandwidth,omitempty"`
	Sync      bool   `json:"sync,omitempty"`
	// OnLinkLoss is what a --sync flush does when the replica does not
	// answer within SyncTimeout: stall (the default) or async.
	OnLinkLoss  replica.LinkLoss `json:"on_link_loss,omitempty"`
	SyncTimeout time.Duration    `json:"sync_timeout,omitempty"`
	Failback    bool             `json:"failback,omitempty"`
}

func (spec *ReplicateSpec) check() error {
	if spec.Name == "" {
		return fmt.Errorf("%w: name the disk or group to replicate", ErrBadSpec)
	}
	if _, err := replica.ParseURL(spec.To); err != nil {
		return fmt.Errorf("%w: %v", ErrBadSpec, err)
	}
	switch {
	case spec.TokenFile == "":
		return fmt.Errorf("%w: --token-file: the target needs this source's token", ErrBadSpec)
	case spec.CA == "" && !spec.Insecure:
		return fmt.Errorf("%w: --ca: the certificate authority of the target's certificate (or --insecure, on loopback only)", ErrBadSpec)
	case spec.Bandwidth < 0 || spec.SyncTimeout < 0:
		return fmt.Errorf("%w: --bandwidth and --sync-timeout must not be negative", ErrBadSpec)
	}
	switch spec.OnLinkLoss {
	case "":
		spec.OnLinkLoss = replica.Stall
	case replica.Stall, replica.Async:
	default:
		return fmt.Errorf("%w: --on-link-loss %q: want stall or async", ErrBadSpec, spec.OnLinkLoss)
	}
	return nil
}

// ReplicationStatus is a replication as `hindsight replications` shows it.
type ReplicationStatus struct {
	Spec ReplicateSpec `json:"spec"`
	replica.Status
}

// replication is a running Sender.
type replication struct {
	spec   ReplicateSpec
	tl     uint32
	sender *replica.Sender
	cancel context.CancelFunc
	done   chan struct{}
}

// holdName is what a replication's hold against prune is called.
func holdName(name string) string { return "replicate " + name }

// Replicate starts a replication and records it.
func (s *Service) Replicate(ctx context.Context, spec ReplicateSpec) (ReplicationStatus, error) {
	if err := spec.check(); err != nil {
		return ReplicationStatus{}, err
	}
	rp, err := s.startReplication(spec)
	if err != nil {
		return ReplicationStatus{}, err
	}
	if err := s.state.update(func(d *desired) { d.Replications = putReplication(d.Replications, spec) }); err != nil {
		s.endReplication(spec.Name)
		return ReplicationStatus{}, err
	}
	return ReplicationStatus{Spec: spec, Status: rp.sender.Status()}, nil
}

func (s *Service) startReplication(spec ReplicateSpec) (*replication, error) {
	if s.stopped.Err() != nil {
		return nil, errStopping
	}
	tl, _, err := s.r.Members(spec.Name)
	if err != nil {
		return nil, err
	}
	t, err := spec.target()
	if err != nil {
		return nil, err
	}
	snd, err := replica.NewSender(s.r, spec.Name, t, replica.SendOptions{
		Bandwidth: spec.Bandwidth, Sync: spec.Sync, OnLinkLoss: spec.OnLinkLoss, SyncTimeout: spec.SyncTimeout,
		Failback: spec.Failback, Log: s.log.With("replication", spec.Name, "to", spec.To),
	})
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.reps[spec.Name]; ok {
		return nil, fmt.Errorf("%w: %s is replicated already (hindsight unreplicate %s ends it)", ErrExists, spec.Name, spec.Name)
	}
	ctx, cancel := context.WithCancel(s.stopped)
	rp := &replication{spec: spec, tl: tl, sender: snd, cancel: cancel, done: make(chan struct{})}
	s.r.Hold(tl, holdName(spec.Name), 0) // everything, until the target says what it has
	s.reps[spec.Name] = rp
	s.repWG.Add(1)
	go func() {
		defer s.repWG.Done()
		defer close(rp.done)
		if err := snd.Run(ctx); err != nil && ctx.Err() == nil {
			s.log.Error("replication ended", "replication", spec.Name, "err", err)
		}
	}()
	return rp, nil
}

// target reads the files spec names.
func (spec ReplicateSpec) target() (replica.Target, error) {
	addr, err := replica.ParseURL(spec.To)
	if err != nil {
		return replica.Target{}, err
	}
	t := replica.Target{Addr: addr, Insecure: spec.Insecure}
	tok, err := os.ReadFile(spec.TokenFile)
	if err != nil {
		return replica.Target{}, fmt.Errorf("%w: token file: %v", ErrBadSpec, err)
	}
	if t.Token = strings.TrimSpace(string(tok)); t.Token == "" {
		return replica.Target{}, fmt.Errorf("%w: token file %s is empty", ErrBadSpec, spec.TokenFile)
	}
	if spec.CA != "" {
		if t.CA, err = os.ReadFile(spec.CA); err != nil {
			return replica.Target{}, fmt.Errorf("%w: CA file: %v", ErrBadSpec, err)
		}
	}
	return t, nil
}

// Unreplicate stops a replication and forgets it.
func (s *Service) Unreplicate(ctx context.Context, name string) (ReplicationStatus, error) {
	s.mu.Lock()
	rp, ok := s.reps[name]
	s.mu.Unlock()
	if !ok {
		return ReplicationStatus{}, fmt.Errorf("%w: %s is not replicated (hindsight replications lists what is)", ErrNotFound, name)
	}
	st := rp.sender.Status()
	if err := s.state.update(func(d *desired) { d.Replications = dropReplication(d.Replications, name) }); err != nil {
		return ReplicationStatus{}, err
	}
	s.endReplication(name)
	st.State = "stopped"
	return ReplicationStatus{Spec: rp.spec, Status: st}, nil
}

// endReplication stops a running replication and waits for it.
func (s *Service) endReplication(name string) {
	s.mu.Lock()
	rp := s.reps[name]
	delete(s.reps, name)
	s.mu.Unlock()
	if rp == nil {
		return
	}
	rp.cancel()
	<-rp.done
	s.r.Release(rp.tl, holdName(name))
}

// Replications lists the running replications by name.
func (s *Service) Replications() []ReplicationStatus {
	s.mu.Lock()
	out := make([]ReplicationStatus, 0, len(s.reps))
	for _, rp := range s.reps {
		out = append(out, ReplicationStatus{Spec: rp.spec, Status: rp.sender.Status()})
	}
	s.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Spec.Name < out[j].Spec.Name })
	return out
}

// refreshHolds moves each replication's hold to what its target has
// acknowledged: retention thins nothing a stream has yet to send.
func (s *Service) refreshHolds() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for name, rp := range s.reps {
		s.r.Hold(rp.tl, holdName(name), rp.sender.Acked())
	}
}

// replicated waits, after a flush of disk d made the journal durable, until
// every synchronous replication of d's timeline has it durable too.
func (s *Service) replicated(d store.Disk) error {
	seq := s.r.Durable()
	s.mu.Lock()
	var wait []*replica.Sender
	for _, rp := range s.reps {
		if rp.spec.Sync && rp.tl == d.Timeline {
			wait = append(wait, rp.sender)
		}
	}
	s.mu.Unlock()
	for _, snd := range wait {
		if err := snd.WaitAcked(s.stopped, seq); err != nil {
			return fmt.Errorf("replica of %s: %w", d.Name, err)
		}
	}
	return nil
}

// replicationsBack starts the recorded replications.
func (s *Service) replicationsBack() {
	for _, spec := range s.state.replications() {
		if _, err := s.startReplication(spec); err != nil {
			s.log.Error("could not bring back a replication", "replication", spec.Name, "err", err)
		} else {
			s.log.Info("replication back", "replication", spec.Name, "to", spec.To)
		}
	}
}

// endReplications stops every replication (the service stops).
func (s *Service) endReplications() {
	s.mu.Lock()
	names := make([]string, 0, len(s.reps))
	for n := range s.reps {
		names = append(names, n)
	}
	s.mu.Unlock()
	for _, n := range names {
		s.endReplication(n)
	}
}

func putReplication(rs []ReplicateSpec, spec ReplicateSpec) []ReplicateSpec {
	rs = append(dropReplication(rs, spec.Name), spec)
	sort.Slice(rs, func(i, j int) bool { return rs[i].Name < rs[j].Name })
	return rs
}

func dropReplication(rs []ReplicateSpec, name string) []ReplicateSpec {
	out := []ReplicateSpec{}
	for _, r := range rs {
		if r.Name != name {
			out = append(out, r)
		}
	}
	return out
}

// ReplicaListen is where and how the service takes replication streams.
type ReplicaListen struct {
	Addr string
	replica.ServerOptions
}

// ServeReplicas takes replication streams into replicas until ctx ends.
func (s *Service) ServeReplicas(ctx context.Context, l ReplicaListen) (net.Addr, func() error, error) {
	if l.Log == nil {
		l.Log = s.log.With("listener", "replication")
	}
	l.ServerOptions.Failback = s.unwritten
	srv, err := replica.NewServer(s.r, l.ServerOptions)
	if err != nil {
		return nil, nil, err
	}
	ln, err := net.Listen("tcp", l.Addr)
	if err != nil {
		return nil, nil, fmt.Errorf("replication listener: %w", err)
	}
	s.mu.Lock()
	s.replicaSrv = srv
	s.mu.Unlock()
	s.log.Info("replication listener", "addr", ln.Addr().String(), "tls", l.TLS != nil)
	return ln.Addr(), func() error {
		go s.publishReplicas(ctx)
		return srv.Serve(ctx, ln)
	}, nil
}

// publishReplicas wakes the publisher whenever the journal is durable
// further, until ctx ends: replicas' steps come from the listener, not
// from a device that wakes it, and readers in other processes (export,
// mount, points, status) see them only once published.
func (s *Service) publishReplicas(ctx context.Context) {
	seen := s.r.Durable()
	for s.r.DurableWait(ctx, seen) == nil {
		seen = s.r.Durable()
		s.wake()
	}
}

// Replicas lists the replicas the listener has taken streams into.
func (s *Service) Replicas() []replica.ReplicaStatus {
	s.mu.Lock()
	srv := s.replicaSrv
	s.mu.Unlock()
	if srv == nil {
		return []replica.ReplicaStatus{}
	}
	return srv.Status()
}

// unwritten refuses a failback into name while a front end writes it.
func (s *Service) unwritten(name string) error {
	_, disks, err := s.r.Members(name)
	if err != nil {
		return err
	}
	for _, d := range disks {
		if by := s.protectedBy(d.Name); by != "" {
			return fmt.Errorf("%w: %s is protected here by %s: 'hindsight unprotect %s' first, then the failback brings it back to the divergence", ErrExists, d.Name, by, by)
		}
	}
	return nil
}

// Failover makes the replica name writable, ending its stream first when
// the listener takes one.
func (s *Service) Failover(ctx context.Context, name string) (store.Handover, error) {
	s.mu.Lock()
	srv := s.replicaSrv
	s.mu.Unlock()
	if srv != nil {
		return srv.Failover(name)
	}
	return Local{R: s.r}.Failover(ctx, name)
}

// Failover makes the replica name writable at its newest point.
func (l Local) Failover(ctx context.Context, name string) (store.Handover, error) {
	return l.R.Failover(name)
}

// writable refuses a replica: only its replication writes it.
func writable(d store.Disk) error {
	if d.Replica != nil {
		return fmt.Errorf("%w: %s replicates %s: only that stream writes it ('hindsight failover %s' makes it writable here)", store.ErrReplica, d.Name, d.Replica.Source, d.Name)
	}
	return nil
}
