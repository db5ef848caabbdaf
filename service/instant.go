package service

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/hindsight-cdp/hindsight/cdp"
	"github.com/hindsight-cdp/hindsight/fs/tap"
	"github.com/hindsight-cdp/hindsight/store"
	"github.com/hindsight-cdp/hindsight/vsphere"
)

// Instant recovery in the service
//
// POST /v1/instants (InstantRequest) clones the source's disks at the
// instant, serves the clones through taps of the service (its devices, its
// one publisher, its metrics), registers the VM from the NFS datastore, and
// answers once it is registered (vsphere.InstantReady). The instant then
// lives in the service, beside the protections, until DELETE
// /v1/instants/{vm}?keep=BOOL (vsphere.EndResult) or POST
// /v1/instants/{vm}/migrate (MigrateRequest, vsphere.Registered); GET
// /v1/instants lists them (InstantStatus).
//
// The request carries the vSphere credentials across the owner-only
// socket; the service keeps them in memory while the instant runs (to
// unregister the VM at the end) and never logs or records them.
//
// Shutdown (SIGTERM) ends every instant as instant-end would: the VM is
// unregistered, the taps unmounted, the clones dropped. A VM whose disks no
// process serves cannot run, and leaving it registered would leave the
// host a VM whose files vanish under it; a restarted service cannot bring
// it back either, since it keeps no credentials. After a kill -9 the
// instant's record stays in R/run/vsphere-instant: the next service lists
// it as orphaned, and instant-end (with a vSphere connection) ends it from
// the record: unregisters the VM, detaches the dead taps, drops the clones.

// Instant states in InstantStatus.
const (
	InstantStarting = "starting"
	InstantRunning  = "running"
	// InstantOrphaned: recorded, but no process serves it (the service
	// that did was killed); instant-end ends it.
	InstantOrphaned = "orphaned"
)

// InstantRequest asks the service for an instant recovery: what `hindsight
// vsphere instant` gathers from its flags.
type InstantRequest struct {
	// VSphere is the connection, credentials included: never logged or
	// recorded.
	VSphere vsphere.Config `json:"vsphere"`
	Source  string         `json:"source"` // a disk or a group
	At      string         `json:"at"`     // an instant spec; "" is latest
	Name    string         `json:"name"`   // the VM
	Place   vsphere.Placement
	// Hardware's zero fields come from the source's recorded VM profile,
	// else 2048 MiB and 2 CPUs.
	Hardware    vsphere.Hardware
	NFS         vsphere.NFS
	PowerOn     bool              `json:"power_on"`
	AllowOther  bool              `json:"allow_other"`
	GID         int               `json:"gid,omitempty"`         // with AllowOther: the disk files' group
	Controller  string            `json:"controller,omitempty"`  // every disk's, unless Controllers names it
	Controllers map[string]string `json:"controllers,omitempty"` // disk → controller kind
	FuseDebug   bool              `json:"fuse_debug,omitempty"`
}

// EndInstantRequest is the optional body of DELETE /v1/instants/{vm}: the
// vSphere connection, needed only when the service does not serve the
// instant itself (its server was killed) and ends it from the record.
type EndInstantRequest struct {
	VSphere *vsphere.Config `json:"vsphere,omitempty"`
}

// MigrateRequest makes an instant VM permanent (vsphere.Client.Migrate).
type MigrateRequest struct {
	VSphere  vsphere.Config `json:"vsphere"`
	Place    vsphere.Placement
	PowerOff bool `json:"power_off"`
	Keep     bool `json:"keep"`
}

// InstantStatus is one instant recovery of GET /v1/instants.
type InstantStatus struct {
	VM    string                `json:"vm"`
	State string                `json:"state"`
	Ready *vsphere.InstantReady `json:"ready,omitempty"`
	Disks []cdp.DeviceStats     `json:"disks"`
}

// instant is an instant recovery the service runs.
type instant struct {
	name string
	cfg  vsphere.Config
	c    *vsphere.Client
	run  *vsphere.Running // nil while starting

	mu      sync.Mutex
	devices []*cdp.Device
	ended   bool

	gone     chan struct{} // closed once it is ended and forgotten
	goneOnce sync.Once
}

func (in *instant) devs() []*cdp.Device {
	in.mu.Lock()
	defer in.mu.Unlock()
	return slices.Clone(in.devices)
}

// StartInstant starts an instant recovery and returns once its VM is
// registered (and powered on if asked). ctx bounds the start only: the
// instant lives in the service until ended.
func (s *Service) StartInstant(ctx context.Context, req InstantRequest) (vsphere.InstantReady, error) {
	if err := store.ValidName("VM", req.Name); err != nil {
		return vsphere.InstantReady{}, fmt.Errorf("%w: instant VM names become folder and disk names: %w", ErrBadSpec, err)
	}
	if req.Source == "" {
		return vsphere.InstantReady{}, fmt.Errorf("%w: no source: name the disk or group to run", ErrBadSpec)
	}
	in := &instant{name: req.Name, cfg: req.VSphere, gone: make(chan struct{})}
	s.mu.Lock()
	if _, ok := s.inst[req.Name]; ok {
		s.mu.Unlock()
		return vsphere.InstantReady{}, fmt.Errorf("%w: an instant recovery called %s runs already (hindsight vsphere instant-end %s ends it)", ErrExists, req.Name, req.Name)
	}
	s.inst[req.Name] = in
	s.mu.Unlock()
	ready, err := s.startInstant(ctx, in, req)
	if err != nil {
		s.forget(in)
		return ready, instantErr(err)
	}
	s.log.Info("instant recovery running", "vm", ready.VM, "source", ready.Source, "seq", ready.Seq, "clones", ready.Clones)
	go s.watchInstant(in)
	return ready, nil
}

func (s *Service) startInstant(ctx context.Context, in *instant, req InstantRequest) (vsphere.InstantReady, error) {
	at := req.At
	if at == "" {
		at = "latest"
	}
	src, err := vsphere.ResolveInstant(s.r, req.Source, at, time.Now())
	if err != nil {
		return vsphere.InstantReady{}, err
	}
	if err := src.SetControllers(req.Controller, req.Controllers); err != nil {
		return vsphere.InstantReady{}, err
	}
	cfg := req.VSphere
	cfg.Logf = s.logf("instant", req.Name)
	in.cfg = cfg
	c, err := vsphere.Connect(ctx, cfg)
	if err != nil {
		return vsphere.InstantReady{}, err
	}
	in.c = c
	ri, err := c.StartInstant(ctx, s.r, src, vsphere.InstantOptions{
		Name: req.Name, Place: req.Place, Hardware: hardware(req.Hardware, src.Profile), NFS: req.NFS,
		PowerOn: req.PowerOn, AllowOther: req.AllowOther, Serve: s.serveClone(in, req.GID, req.FuseDebug),
	})
	if err != nil {
		return vsphere.InstantReady{}, err // forget logs out
	}
	s.mu.Lock()
	in.run = ri
	s.mu.Unlock()
	return ri.Ready, nil
}

// hardware fills what the request left unset from the source's profile,
// then the defaults of `hindsight vsphere instant`.
func hardware(hw vsphere.Hardware, p *store.Profile) vsphere.Hardware {
	if p != nil {
		if hw.MemoryMB == 0 {
			hw.MemoryMB = p.MemoryMB
		}
		if hw.CPUs == 0 {
			hw.CPUs = p.CPUs
		}
		if hw.GuestID == "" {
			hw.GuestID = p.GuestID
		}
	}
	if hw.MemoryMB == 0 {
		hw.MemoryMB = 2048
	}
	if hw.CPUs == 0 {
		hw.CPUs = 2
	}
	return hw
}

// serveClone serves an instant's clones through taps of the service: the
// devices wake its publisher and count in its metrics; stopping one
// unmounts it and makes its writes durable.
func (s *Service) serveClone(in *instant, gid int, debug bool) vsphere.ServeFunc {
	return func(ctx context.Context, clone store.Disk, dir, file string, files map[string][]byte, allowOther bool) (func() error, <-chan struct{}, error) {
		if err := clearStaleTap(dir, s.logf("mount", dir)); err != nil {
			return nil, nil, err
		}
		dev := s.newDevice(clone, "vsphere-instant")
		srv, err := tap.MountAll(context.Background(), dir, []tap.File{{Name: file, Dev: dev}}, tap.Options{
			AllowOther: allowOther, GID: gid, Debug: debug, Files: files, Logf: s.logf("instant", in.name),
		})
		if err != nil {
			return nil, nil, err
		}
		in.mu.Lock()
		in.devices = append(in.devices, dev)
		in.mu.Unlock()
		ended := make(chan struct{})
		go func() { srv.Wait(); close(ended) }()
		stop := func() error {
			if err := unmountTap(srv); err != nil {
				return err
			}
			err := dev.Flush()
			// Published no more: its clone may be dropped next.
			in.mu.Lock()
			in.devices = slices.DeleteFunc(in.devices, func(d *cdp.Device) bool { return d == dev })
			in.mu.Unlock()
			return err
		}
		return stop, ended, nil
	}
}

// watchInstant ends an instant whose tap was unmounted from outside: the
// VM cannot go on without its disk.
func (s *Service) watchInstant(in *instant) {
	select {
	case <-in.run.Ended():
	case <-in.gone:
		return
	}
	in.mu.Lock()
	asked := in.ended
	in.mu.Unlock()
	if asked {
		return
	}
	s.log.Error("instant recovery lost a disk; ending it", "vm", in.name)
	if _, err := s.endInstant(context.Background(), in, false, true); err != nil {
		s.log.Error("could not end the instant recovery", "vm", in.name, "err", err)
	}
}

// EndInstant ends the instant recovery vm: it unregisters the VM, unmounts
// its disks, removes the files and drops the clones unless keep. An
// instant recorded in the repository that no process serves any more (its
// service was killed) is ended from its record, through cfg.
func (s *Service) EndInstant(ctx context.Context, vm string, keep bool, cfg *vsphere.Config) (vsphere.EndResult, error) {
	s.mu.Lock()
	in, ok := s.inst[vm]
	starting := ok && in.run == nil
	s.mu.Unlock()
	if starting {
		return vsphere.EndResult{}, fmt.Errorf("%w: instant %s is starting; try again once it runs", ErrExists, vm)
	}
	if ok {
		res, err := s.endInstant(ctx, in, keep, true)
		return res, instantErr(err)
	}
	names, err := vsphere.Instants(s.r.Dir())
	if err != nil {
		return vsphere.EndResult{}, err
	}
	if !slices.Contains(names, vm) {
		return vsphere.EndResult{}, fmt.Errorf("%w: no instant recovery called %s (hindsight vsphere instant-end needs the VM's name)", ErrNotFound, vm)
	}
	if cfg == nil || cfg.URL == "" {
		return vsphere.EndResult{VM: vm, By: "here"}, fmt.Errorf("%w: instant %s is orphaned (the process that served it is gone): ending it unregisters its VM, which needs the vSphere connection (--url or GOVC_URL)", ErrBadSpec, vm)
	}
	c2 := *cfg
	c2.Logf = s.logf("instant", vm)
	c, err := vsphere.Connect(ctx, c2)
	if err != nil {
		return vsphere.EndResult{}, instantErr(err)
	}
	defer c.Logout(context.WithoutCancel(ctx))
	s.log.Info("ending an orphaned instant recovery from its record", "vm", vm)
	res, err := vsphere.EndInstant(ctx, c, s.r, vm, keep)
	s.dropStatus(res.ClonesGone)
	return res, instantErr(err)
}

// endInstant ends a running instant, once; with forget, it is then
// forgotten (migrate forgets it only once the copy is done).
func (s *Service) endInstant(ctx context.Context, in *instant, keep, forget bool) (vsphere.EndResult, error) {
	in.mu.Lock()
	in.ended = true
	in.mu.Unlock()
	// A fresh session: the one that started the instant may have expired.
	var fresh *vsphere.Client
	if c, err := vsphere.Connect(ctx, in.cfg); err == nil {
		fresh = c
		defer c.Logout(context.WithoutCancel(ctx))
	} else {
		s.log.Warn("could not log in again to end the instant; using its first session", "vm", in.name, "err", err)
	}
	res, err := in.run.End(ctx, fresh, keep)
	// Readers in other processes see the clones' last writes.
	if perr := s.publish(true); err == nil {
		err = perr
	}
	s.dropStatus(res.ClonesGone)
	if forget {
		s.forget(in)
	}
	if err != nil {
		s.log.Error("instant recovery ended with errors", "vm", in.name, "err", err)
	} else {
		s.log.Info("instant recovery ended", "vm", in.name, "unregistered", res.Unregistered, "clones_kept", res.ClonesKept, "clones_dropped", res.ClonesGone)
	}
	return res, err
}

// forget removes an instant from the service and logs its session out.
func (s *Service) forget(in *instant) {
	in.goneOnce.Do(func() {
		s.mu.Lock()
		if s.inst[in.name] == in {
			delete(s.inst, in.name)
		}
		s.mu.Unlock()
		if in.c != nil {
			in.c.Logout(context.Background())
		}
		close(in.gone)
	})
}

// dropStatus removes the status files of dropped clones.
func (s *Service) dropStatus(disks []string) {
	for _, d := range disks {
		os.Remove(cdp.StatusPath(s.r.Dir(), d))
		s.pubMu.Lock()
		delete(s.statusPrev, d)
		s.pubMu.Unlock()
	}
}

// MigrateInstant makes the instant VM vm permanent on req.Place.Datastore
// (vsphere.Client.Migrate): the instant ends keeping its clones, their
// newest state is copied, the VM re-created, and the clones dropped unless
// req.Keep. An orphaned instant is migrated from its record.
func (s *Service) MigrateInstant(ctx context.Context, vm string, req MigrateRequest) (vsphere.Registered, error) {
	s.mu.Lock()
	in, ok := s.inst[vm]
	starting := ok && in.run == nil
	s.mu.Unlock()
	if starting {
		return vsphere.Registered{}, fmt.Errorf("%w: instant %s is starting; try again once it runs", ErrExists, vm)
	}
	cfg := req.VSphere
	cfg.Logf = s.logf("instant", vm)
	c, err := vsphere.Connect(ctx, cfg)
	if err != nil {
		return vsphere.Registered{}, instantErr(err)
	}
	defer c.Logout(context.WithoutCancel(ctx))
	var end func(context.Context) error
	if ok {
		// Forgotten once the copy is done: a foreground instant's process
		// lives until then.
		defer s.forget(in)
		end = func(ctx context.Context) error {
			_, err := s.endInstant(ctx, in, true, false)
			return err
		}
	}
	res, err := c.Migrate(ctx, s.r, end, vsphere.MigrateOptions{VM: vm, Place: req.Place, PowerOff: req.PowerOff, Keep: req.Keep})
	if err == nil {
		s.log.Info("instant recovery migrated", "vm", vm, "vmx", res.VMX)
	}
	return res, instantErr(err)
}

// Instants lists the instant recoveries: those the service runs, and
// those recorded that no process serves.
func (s *Service) Instants() []InstantStatus {
	s.mu.Lock()
	out := []InstantStatus{}
	seen := map[string]bool{}
	for name, in := range s.inst {
		seen[name] = true
		st := InstantStatus{VM: name, State: InstantStarting, Disks: []cdp.DeviceStats{}}
		if in.run != nil {
			st.State = InstantRunning
			r := in.run.Ready
			st.Ready = &r
		}
		for _, d := range in.devs() {
			st.Disks = append(st.Disks, d.Stats())
		}
		out = append(out, st)
	}
	s.mu.Unlock()
	names, _ := vsphere.Instants(s.r.Dir())
	for _, n := range names {
		if !seen[n] {
			out = append(out, InstantStatus{VM: n, State: InstantOrphaned, Disks: []cdp.DeviceStats{}})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].VM < out[j].VM })
	return out
}

// InstantGone returns a channel closed once the instant vm is ended and
// forgotten, for a foreground instant that lives as long as it does.
func (s *Service) InstantGone(vm string) <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if in := s.inst[vm]; in != nil {
		return in.gone
	}
	return closedChan()
}

// instantsBack reports the instants a killed service left: they are not
// brought back (the service keeps no vSphere credentials), and instant-end
// ends them from their records.
func (s *Service) instantsBack(ctx context.Context) {
	names, err := vsphere.Instants(s.r.Dir())
	if err != nil {
		s.log.Error("could not list the recorded instant recoveries", "err", err)
	}
	for _, n := range names {
		s.log.Warn("an instant recovery was left by a service that stopped without ending it; its VM's disks are not served: 'hindsight vsphere instant-end' unregisters it and drops its clones", "vm", n)
	}
}

// endInstantsTimeout bounds how long shutdown waits for vSphere to
// unregister each instant's VM.
const endInstantsTimeout = 2 * time.Minute

// endInstants ends every running instant, at shutdown.
func (s *Service) endInstants() {
	s.mu.Lock()
	var ins []*instant
	for _, in := range s.inst {
		if in.run != nil {
			ins = append(ins, in)
		}
	}
	s.mu.Unlock()
	var wg sync.WaitGroup
	for _, in := range ins {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), endInstantsTimeout)
			defer cancel()
			s.endInstant(ctx, in, false, true)
		}()
	}
	wg.Wait()
}

// instantErr gives vSphere's errors the service's kinds, so that the
// command line's exit codes work across the socket; the message stays
// vSphere's.
func instantErr(err error) error {
	var kind error
	switch {
	case err == nil:
		return nil
	case errors.Is(err, vsphere.ErrBadInput), errors.Is(err, vsphere.ErrLogin), errors.Is(err, vsphere.ErrNoSpace):
		kind = ErrBadSpec
	case errors.Is(err, vsphere.ErrNotFound):
		kind = ErrNotFound
	case errors.Is(err, vsphere.ErrExists), errors.Is(err, vsphere.ErrNotOurs), errors.Is(err, vsphere.ErrPoweredOn):
		kind = ErrExists
	default:
		return err
	}
	return &kindError{err: err, kind: kind}
}

// kindError is err, of the service's kind too.
type kindError struct{ err, kind error }

func (e *kindError) Error() string   { return e.err.Error() }
func (e *kindError) Unwrap() []error { return []error{e.err, e.kind} }

// instantRoutes adds the instant recovery requests.
func (s *Service) instantRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/instants", func(rw http.ResponseWriter, r *http.Request) {
		reply(rw, s.Instants(), nil)
	})
	mux.HandleFunc("POST /v1/instants", func(rw http.ResponseWriter, r *http.Request) {
		var req InstantRequest
		if err := decode(r.Body, &req); err != nil {
			reply(rw, nil, err)
			return
		}
		v, err := s.StartInstant(r.Context(), req)
		reply(rw, v, err)
	})
	mux.HandleFunc("DELETE /v1/instants/{vm}", func(rw http.ResponseWriter, r *http.Request) {
		keep, err := boolQuery(r, "keep")
		if err != nil {
			reply(rw, nil, err)
			return
		}
		var req EndInstantRequest
		if r.ContentLength != 0 {
			if err := decode(r.Body, &req); err != nil {
				reply(rw, nil, err)
				return
			}
		}
		// Not the request's context: a client that goes away must not
		// leave an instant half ended.
		v, err := s.EndInstant(context.WithoutCancel(r.Context()), r.PathValue("vm"), keep, req.VSphere)
		reply(rw, v, err)
	})
	mux.HandleFunc("POST /v1/instants/{vm}/migrate", func(rw http.ResponseWriter, r *http.Request) {
		var req MigrateRequest
		if err := decode(r.Body, &req); err != nil {
			reply(rw, nil, err)
			return
		}
		v, err := s.MigrateInstant(r.Context(), r.PathValue("vm"), req)
		reply(rw, v, err)
	})
}
