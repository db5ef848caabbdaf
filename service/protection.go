package service

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hindsight-cdp/hindsight/cdp"
	"github.com/hindsight-cdp/hindsight/cdp/nbd"
	"github.com/hindsight-cdp/hindsight/fs/fusesrv"
	"github.com/hindsight-cdp/hindsight/fs/tap"
	"github.com/hindsight-cdp/hindsight/store"
)

// protection is a running front end and the devices it writes through.
type protection struct {
	spec  ProtectSpec
	kind  string // tap, nbd, clone
	where string
	since time.Time
	devs  []*cdp.Device
	paths map[string]string // disk → file or URI
	rates map[string]*rate  // disk → recent write rate

	stop    func() error  // stops the front end and waits for it
	ended   chan struct{} // closed when the front end has ended
	closers []io.Closer   // backing files, closed last

	mu       sync.Mutex
	state    string
	err      error
	stopped  bool       // asked to stop: its end is no failure
	stopMu   sync.Mutex // one stop at a time
	stopDone bool
}

// startFrontEnd opens the devices of spec's targets and serves them.
func (s *Service) startFrontEnd(ctx context.Context, spec ProtectSpec) (*protection, error) {
	p := &protection{spec: spec, since: time.Now(), state: StateRunning, paths: map[string]string{}, rates: map[string]*rate{}}
	var disks []store.Disk
	for _, t := range spec.Targets {
		_, ds, err := s.r.Members(t)
		if err != nil {
			return nil, err
		}
		if len(ds) == 0 {
			return nil, fmt.Errorf("%w: group %q has no disks yet (hindsight disk create NAME --size S --group %s)", ErrBadSpec, t, t)
		}
		disks = append(disks, ds...)
	}
	for _, d := range disks {
		if err := writable(d); err != nil {
			return nil, err
		}
		if by := s.protectedBy(d.Name); by != "" {
			return nil, fmt.Errorf("%w: disk %s is protected by %s already; one front end writes a disk", ErrExists, d.Name, by)
		}
	}
	var err error
	p.kind, p.where = spec.kind(), spec.where()
	if spec.Tap != nil {
		err = s.startTap(ctx, p, disks)
	} else {
		err = s.startNBD(p, disks)
	}
	if err != nil {
		p.close()
		return nil, err
	}
	for _, d := range p.devs {
		r := &rate{}
		r.sample(p.since, 0, 0) // the counters start at zero with the device
		p.rates[d.Disk().Name] = r
	}
	return p, nil
}

func (s *Service) startTap(ctx context.Context, p *protection, disks []store.Disk) error {
	ts := p.spec.Tap
	if ts.Backing != "" && len(disks) > 1 {
		return fmt.Errorf("%w: a backing disk protects one disk; a group's disks each need their own", ErrBadSpec)
	}
	// A dead tap answers ENOTCONN to everything: detach it first.
	if err := clearStaleTap(ts.Mount, s.logf("mount", ts.Mount)); err != nil {
		return err
	}
	if err := os.MkdirAll(ts.Mount, 0o700); err != nil {
		return fmt.Errorf("tap: %w", err)
	}
	var files []tap.File
	for _, d := range disks {
		dev := s.newDevice(d, p.kind)
		if ts.Backing != "" {
			f, err := s.openBacking(ctx, d, ts.Backing)
			if err != nil {
				return err
			}
			p.closers = append(p.closers, f)
			dev.Backed(f)
		}
		p.devs = append(p.devs, dev)
		name := d.Name + ".img"
		files = append(files, tap.File{Name: name, Dev: dev})
		p.paths[d.Name] = filepath.Join(ts.Mount, name)
	}
	srv, err := tap.MountAll(context.Background(), ts.Mount, files, tap.Options{
		AllowOther: ts.AllowOther, GID: ts.GID, Debug: ts.Debug, IOUring: ts.IOUring,
		Logf: s.logf("protection", p.spec.Name),
	})
	if err != nil {
		return err
	}
	p.ended = make(chan struct{})
	go func() { srv.Wait(); close(p.ended) }()
	p.stop = func() error { return unmountTap(srv) }
	return nil
}

// unmountTap unmounts a tap, waiting while it is busy (the one retry:
// fusesrv.UnmountWait).
func unmountTap(srv *fusesrv.Server) error {
	return srv.UnmountWait(context.Background(), fusesrv.UnmountTimeout)
}

// openBacking opens a backing disk and journals where it differs from the
// journal's newest state.
func (s *Service) openBacking(ctx context.Context, d store.Disk, path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("%w: backing disk: %w", ErrBadSpec, err)
	}
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		f.Close()
		return nil, err
	}
	bm, res, err := cdp.Resync(ctx, s.r, d, f, size, nil)
	if err != nil {
		f.Close()
		return nil, err
	}
	if bm != nil {
		s.log.Info("resync: the backing disk differed from the journal", "disk", d.Name, "backing", path, "blocks", res.Changed, "bookmark", bm.Name)
	}
	return f, nil
}

func (s *Service) startNBD(p *protection, disks []store.Disk) error {
	ns := p.spec.NBD
	network, addr, err := ParseListen(ns.Listen)
	if err != nil {
		return err
	}
	conf, err := ServerTLS(ns.TLSCert, ns.TLSKey, ns.TLSClientCA)
	if err != nil {
		return err
	}
	if err := checkNBD(network, addr, conf, ns.InsecureLocal); err != nil {
		return err
	}
	var l net.Listener
	if network == "unix" {
		if err := os.MkdirAll(filepath.Dir(addr), 0o700); err != nil {
			return fmt.Errorf("nbd: %w", err)
		}
		l, err = nbd.ListenUnix(addr)
	} else {
		l, err = net.Listen("tcp", addr)
	}
	if err != nil {
		return err
	}
	p.where = network + ":" + l.Addr().String()
	devs := map[string]*cdp.Device{}
	var names []string
	for _, d := range disks {
		dev := s.newDevice(d, "nbd")
		devs[d.Name] = dev
		names = append(names, d.Name)
		p.devs = append(p.devs, dev)
		p.paths[d.Name] = ExportURI(l, d.Name, conf != nil)
	}
	sort.Strings(names)
	srv := nbd.NewServer(nbd.Options{
		Exports: func(name string) (nbd.Backend, error) {
			if d, ok := devs[name]; ok {
				return d, nil
			}
			return nil, fmt.Errorf("no export %q (exports: %s)", name, strings.Join(names, ", "))
		},
		List: func() []string { return names },
		TLS:  conf,
		Logf: s.logf("protection", p.spec.Name),
	})
	ctx, cancel := context.WithCancel(context.Background())
	p.ended = make(chan struct{})
	var serveErr error
	go func() {
		serveErr = srv.Serve(ctx, l)
		close(p.ended)
	}()
	p.stop = func() error {
		cancel()
		<-p.ended
		if errors.Is(serveErr, context.Canceled) {
			return nil
		}
		return serveErr
	}
	return nil
}

// ExportURI is the URI clients give for export name on l (libnbd and qemu
// syntax; TLS is the nbds scheme for libnbd, a tls-creds object for qemu).
func ExportURI(l net.Listener, name string, tls bool) string {
	scheme := "nbd"
	if tls {
		scheme = "nbds"
	}
	if a, ok := l.Addr().(*net.UnixAddr); ok {
		return fmt.Sprintf("%s+unix:///%s?socket=%s", scheme, name, a.Name)
	}
	return fmt.Sprintf("%s://%s/%s", scheme, l.Addr(), name)
}

// stopFrontEnd stops serving and waits for it. A stop that fails (the
// mount is busy) leaves it serving, and may be tried again.
func (p *protection) stopFrontEnd() error {
	p.stopMu.Lock()
	defer p.stopMu.Unlock()
	if p.stopDone {
		return nil
	}
	p.mu.Lock()
	p.stopped = true
	p.mu.Unlock()
	if p.stop != nil {
		if err := p.stop(); err != nil {
			p.mu.Lock()
			p.stopped = false
			p.mu.Unlock()
			return err
		}
	}
	p.stopDone = true
	return nil
}

func (p *protection) stopping() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stopped
}

func (p *protection) fail(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.state, p.err = StateFailed, err
}

func (p *protection) failure() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

// close releases what the devices held, after the front end stopped.
func (p *protection) close() {
	for _, c := range p.closers {
		c.Close()
	}
	p.closers = nil
}

func (p *protection) status() ProtectionStatus {
	p.mu.Lock()
	st := ProtectionStatus{Name: p.spec.Name, FrontEnd: p.kind, State: p.state, Where: p.where, Since: p.since.UTC(), Clone: p.spec.Clone, Disks: []DiskStatus{}}
	if p.err != nil {
		st.Error = p.err.Error()
	}
	p.mu.Unlock()
	now := time.Now()
	for _, d := range p.devs {
		ds := DiskStatus{DeviceStats: d.Stats(), Path: p.paths[d.Disk().Name]}
		if r := p.rates[d.Disk().Name]; r != nil {
			ds.WritesPerSec, ds.BytesPerSec = r.perSec(now, ds.Writes, ds.BytesWritten)
		}
		st.Disks = append(st.Disks, ds)
	}
	return st
}
