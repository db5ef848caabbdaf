package vsphere

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/hindsight-cdp/hindsight/fs"
	"github.com/hindsight-cdp/hindsight/fs/image"
	"github.com/hindsight-cdp/hindsight/store"
)

// NFS says how the host reaches the folder Hindsight serves instants from.
type NFS struct {
	Datastore string // the datastore's name on the host
	Dir       string // the local folder an NFS server exports to the host
	// Used only when the datastore is not mounted yet and Hindsight mounts it:
	RemoteHost string // this machine's address as the host sees it
	RemotePath string // the export's path; "" means Dir
	LocalPath  string // HostNasVolumeSpec.localPath; "" means Datastore
}

// ServeFunc serves clone as the read-write file dir/file, beside the
// read-only files (name → content), for the host to open over NFS;
// allowOther lets the NFS server's users open them. The writer that runs
// the instant provides it (the service: its devices, its publisher), so
// that this package never wires a writer of its own. stop unmounts and
// makes every write through the file durable; ended is closed when the
// mount ends, asked to or not (an unmount from outside).
type ServeFunc func(ctx context.Context, clone store.Disk, dir, file string, files map[string][]byte, allowOther bool) (stop func() error, ended <-chan struct{}, err error)

// InstantOptions tune instant recovery.
type InstantOptions struct {
	Name       string
	Place      Placement // folder, pool, host (Datastore is unused)
	Hardware   Hardware
	NFS        NFS
	PowerOn    bool
	AllowOther bool // let the NFS server's users open the disks
	// Serve serves each clone; required.
	Serve ServeFunc
	// Ready is called by ServeInstant once the VM is registered (and
	// powered on if asked).
	Ready func(InstantReady)
}

// InstantReady reports a VM running from a clone.
type InstantReady struct {
	VM        string        `json:"vm"`
	VMX       string        `json:"vmx"`
	Datastore string        `json:"datastore"`
	Mounted   bool          `json:"mounted_datastore"`
	Dir       string        `json:"dir"`
	Clones    []string      `json:"clones"`
	Source    string        `json:"source"`
	Seq       uint64        `json:"seq"`
	Time      time.Time     `json:"time"`
	Elapsed   time.Duration `json:"elapsed_ns"`
	PoweredOn bool          `json:"powered_on"`
}

// Running is an instant recovery being served, until End.
type Running struct {
	Ready InstantReady
	t     *teardown
	ended chan struct{} // closed when a disk's mount ended
	cause error         // why, set before ended closes

	endOnce sync.Once
	res     EndResult
	err     error
}

// Ended is closed when a disk's mount ended without End (unmounted from
// outside): the instant cannot go on, and its owner should End it.
func (ri *Running) Ended() <-chan struct{} { return ri.ended }

// End ends the instant, once: it unregisters the VM (with c when not nil,
// else the client that started it: a long-running instant may outlive its
// session), unmounts the disks, removes the files it made and drops the
// clones unless keep. Later calls return the first call's result.
func (ri *Running) End(ctx context.Context, c *Client, keep bool) (EndResult, error) {
	ri.endOnce.Do(func() {
		if c != nil {
			ri.t.c = c
		}
		ri.t.st.Keep = keep
		var cause error
		select {
		case <-ri.ended:
			cause = ri.cause
		default:
		}
		ri.err = ri.t.run(ctx, cause)
		ri.res = ri.t.res
		ri.res.By = "server"
	})
	return ri.res, ri.err
}

// ServeInstant runs an instant recovery until ctx ends or a disk is
// unmounted from outside, then ends it (StartInstant, Ready, End).
func (c *Client) ServeInstant(ctx context.Context, r *store.Repo, in Instant, opt InstantOptions) error {
	ri, err := c.StartInstant(ctx, r, in, opt)
	if err != nil {
		return err
	}
	if opt.Ready != nil {
		opt.Ready(ri.Ready)
	}
	select {
	case <-ctx.Done():
	case <-ri.Ended():
	}
	_, err = ri.End(context.WithoutCancel(ctx), nil, false)
	return err
}

// StartInstant is instant recovery: for each disk of the instant it makes
// a copy-on-write clone in r (the repository's writer), serves it through
// opt.Serve as <Dir>/<vm>/<disk>/<disk>-flat.vmdk beside a read-only
// descriptor, registers the VM from <Dir>/<vm> on the NFS datastore, and
// returns once the VM is registered (and powered on if asked). It serves
// until End. Any failure on the way in undoes what was done. ctx bounds the
// start only.
func (c *Client) StartInstant(ctx context.Context, r *store.Repo, in Instant, opt InstantOptions) (_ *Running, err error) {
	start := time.Now()
	if err := store.ValidName("VM", opt.Name); err != nil {
		return nil, fmt.Errorf("%w: instant VM names become folder and disk names: %v", ErrBadInput, err)
	}
	if opt.Serve == nil {
		return nil, fmt.Errorf("%w: no ServeFunc: the writer serves the clones", ErrBadInput)
	}
	if _, err := readState(r.Dir(), opt.Name); err == nil {
		return nil, fmt.Errorf("%w: instant %q is recorded as running (end it with 'hindsight vsphere instant-end %s')", ErrExists, opt.Name, opt.Name)
	}
	if _, err := c.findVM(ctx, opt.Name); err == nil {
		return nil, fmt.Errorf("%w: VM %q", ErrExists, opt.Name)
	} else if !errors.Is(err, ErrNotFound) {
		return nil, err
	}
	pl, err := c.place(ctx, opt.Place)
	if err != nil {
		return nil, err
	}
	if opt.NFS.Dir == "" {
		return nil, fmt.Errorf("%w: no --nfs-dir: the local folder the host mounts as datastore %s", ErrBadInput, opt.NFS.Datastore)
	}
	vmdir := filepath.Join(opt.NFS.Dir, opt.Name)
	if _, err := os.Lstat(vmdir); err == nil {
		return nil, fmt.Errorf("%w: %s exists; Hindsight writes only into folders it creates", ErrExists, vmdir)
	}
	st := &instantState{VM: opt.Name, PID: os.Getpid(), Server: c.host, Source: in.Source, Seq: in.Seq, Time: in.Time,
		Datastore: opt.NFS.Datastore, Hardware: opt.Hardware, Started: start.UTC()}
	t := &teardown{c: c, r: r, repo: r.Dir(), st: st}
	defer func() {
		if err != nil {
			t.st.Keep = false
			err = errors.Join(err, t.run(context.WithoutCancel(ctx), nil))
		}
	}()
	ds, created, err := c.nasDatastore(ctx, pl, opt.NFS)
	if err != nil {
		return nil, err
	}
	st.Created = created
	if err := os.Mkdir(vmdir, 0o755); err != nil {
		return nil, fmt.Errorf("vsphere: %w", err)
	}
	st.Dir = vmdir
	if err := writeState(r.Dir(), st); err != nil {
		return nil, err
	}
	if err := c.probe(ctx, ds, opt.NFS.Dir, opt.Name); err != nil {
		return nil, err
	}
	clones, err := t.clone(in.Disks, opt.Name)
	if err != nil {
		return nil, err
	}
	ri := &Running{t: t, ended: make(chan struct{})}
	var once sync.Once
	var files []diskFile
	for i, d := range in.Disks {
		f, ended, err := t.serveDisk(ctx, d, clones[i], opt)
		if err != nil {
			return nil, err
		}
		files = append(files, f)
		mnt := filepath.Join(vmdir, d.Name)
		go func() {
			<-ended
			once.Do(func() {
				ri.cause = fmt.Errorf("vsphere: %s was unmounted", mnt)
				close(ri.ended)
			})
		}()
	}
	if err := writeState(r.Dir(), st); err != nil {
		return nil, err
	}
	folder := dsPath(ds.Name(), opt.Name)
	vmx := folder + "/" + opt.Name + ".vmx"
	spec, err := vmSpec(opt.Name, vmx, opt.Hardware, files, markers("instant", in, nil, folder))
	if err != nil {
		return nil, err
	}
	if _, err := c.createVM(ctx, pl, spec); err != nil {
		return nil, err
	}
	ready := InstantReady{VM: opt.Name, VMX: vmx, Datastore: ds.Name(), Mounted: created,
		Dir: vmdir, Source: in.Source, Seq: in.Seq, Time: in.Time}
	for _, d := range st.Disks {
		ready.Clones = append(ready.Clones, d.Clone)
	}
	if opt.PowerOn {
		if err := c.PowerOn(ctx, opt.Name); err != nil {
			return nil, err
		}
		ready.PoweredOn = true
	}
	ready.Elapsed = time.Since(start)
	ri.Ready = ready
	return ri, nil
}

// clone makes a copy-on-write clone of each disk at the instant, named
// <vm>-<disk>: several go into one group, <vm>-clones, so that the VM's
// writes keep their order across its disks. The state records them as they
// are made, so that a failure later drops them.
func (t *teardown) clone(disks []Disk, vm string) ([]store.Disk, error) {
	names := make([]string, len(disks))
	bases := make([]store.Disk, len(disks))
	for i, d := range disks {
		names[i], bases[i] = vm+"-"+d.Name, d.Store
	}
	record := func() {
		for i, d := range disks {
			t.st.Disks = append(t.st.Disks, instantDisk{Name: d.Name, Clone: names[i], Controller: d.Controller})
		}
	}
	if len(disks) > 1 {
		group := vm + "-clones"
		_, clones, err := t.r.CloneGroup(group, names, bases, t.st.Seq)
		if err != nil {
			return nil, fmt.Errorf("clone the disks at position %d: %w", t.st.Seq, err)
		}
		t.st.CloneGroup = group
		record()
		return clones, nil
	}
	var clones []store.Disk
	for i := range disks {
		c, err := t.r.CloneDisk(names[i], bases[i], t.st.Seq)
		if err != nil {
			return nil, fmt.Errorf("clone %s at position %d: %w", disks[i].Name, t.st.Seq, err)
		}
		clones = append(clones, c)
	}
	record()
	return clones, nil
}

// serveDisk serves d's clone through opt.Serve; ended is closed when its
// mount ends.
func (t *teardown) serveDisk(ctx context.Context, d Disk, clone store.Disk, opt InstantOptions) (diskFile, <-chan struct{}, error) {
	name := clone.Name
	mnt := filepath.Join(t.st.Dir, d.Name)
	if err := os.Mkdir(mnt, 0o755); err != nil {
		return diskFile{}, nil, fmt.Errorf("vsphere: %w", err)
	}
	for i := range t.st.Disks {
		if t.st.Disks[i].Clone == name {
			t.st.Disks[i].Mount = mnt
		}
	}
	meta := fs.ImageMeta(clone, store.Point{Seq: t.st.Seq, Time: t.st.Time})
	meta.Name, meta.Adapter = d.Name, d.Meta.Adapter
	if err := meta.Validate(); err != nil {
		return diskFile{}, nil, err
	}
	stop, ended, err := opt.Serve(ctx, clone, mnt, d.Name+"-flat.vmdk",
		map[string][]byte{d.Name + ".vmdk": image.VMDKDescriptor(meta)}, opt.AllowOther)
	if err != nil {
		return diskFile{}, nil, fmt.Errorf("serve clone %s: %w", name, err)
	}
	t.stops = append(t.stops, stop)
	d.Meta = meta
	return diskFile{Disk: d, Path: dsPath(t.st.Datastore, filepath.ToSlash(filepath.Join(t.st.VM, d.Name, d.Name+".vmdk")))}, ended, nil
}

// probe checks that the datastore shows the local folder: a file made in
// <dir>/<vm> must appear as [ds] <vm>/….
func (c *Client) probe(ctx context.Context, ds *datastore, dir, vm string) error {
	name := ".hindsight-probe"
	p := filepath.Join(dir, vm, name)
	if err := os.WriteFile(p, []byte("hindsight\n"), 0o644); err != nil {
		return fmt.Errorf("vsphere: %w", err)
	}
	defer os.Remove(p)
	ok, err := ds.exists(ctx, vm+"/"+name)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("%w: datastore %s does not show %s: is it the NFS export of that folder?", ErrBadInput, ds.Name(), dir)
	}
	return nil
}
