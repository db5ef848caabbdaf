package vsphere

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/hindsight-cdp/hindsight/cdp"
	"github.com/hindsight-cdp/hindsight/fs"
	"github.com/hindsight-cdp/hindsight/fs/fusesrv"
	"github.com/hindsight-cdp/hindsight/fs/image"
	"github.com/hindsight-cdp/hindsight/fs/tap"
	"github.com/hindsight-cdp/hindsight/store"
	"golang.org/x/sync/errgroup"
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

// InstantOptions tune instant recovery.
type InstantOptions struct {
	Name         string
	Place        Placement // folder, pool, host (Datastore is unused)
	Hardware     Hardware
	NFS          NFS
	PowerOn      bool
	SyncInterval time.Duration // journal sync and publish; 0 means 1 s
	AllowOther   bool          // let the NFS server's users open the disks
	FuseDebug    bool
	// Ready is called once the VM is registered (and powered on if asked).
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

// ServeInstant is instant recovery: for each disk of the instant it makes
// a copy-on-write clone in r (the repository's writer), serves it through a
// FUSE tap as <Dir>/<vm>/<disk>/<disk>-flat.vmdk beside a read-only
// descriptor, registers the VM from <Dir>/<vm> on the NFS datastore, and
// keeps serving until ctx ends. Then it unregisters the VM, unmounts the
// disks, removes the files it made and drops the clones (unless the state
// says to keep them). Any failure on the way in undoes what was done.
func (c *Client) ServeInstant(ctx context.Context, r *store.Repo, in Instant, opt InstantOptions) (err error) {
	start := time.Now()
	if err := store.ValidName("VM", opt.Name); err != nil {
		return fmt.Errorf("%w: instant VM names become folder and disk names: %v", ErrBadInput, err)
	}
	if opt.SyncInterval <= 0 {
		opt.SyncInterval = time.Second
	}
	if _, err := readState(r.Dir(), opt.Name); err == nil {
		return fmt.Errorf("%w: instant %q is recorded as running (end it with 'hindsight vsphere instant-end %s')", ErrExists, opt.Name, opt.Name)
	}
	if _, err := c.findVM(ctx, opt.Name); err == nil {
		return fmt.Errorf("%w: VM %q", ErrExists, opt.Name)
	} else if !errors.Is(err, ErrNotFound) {
		return err
	}
	pl, err := c.place(ctx, opt.Place)
	if err != nil {
		return err
	}
	if opt.NFS.Dir == "" {
		return fmt.Errorf("%w: no --nfs-dir: the local folder the host mounts as datastore %s", ErrBadInput, opt.NFS.Datastore)
	}
	vmdir := filepath.Join(opt.NFS.Dir, opt.Name)
	if _, err := os.Lstat(vmdir); err == nil {
		return fmt.Errorf("%w: %s exists; Hindsight writes only into folders it creates", ErrExists, vmdir)
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
		return err
	}
	st.Created = created
	if err := os.Mkdir(vmdir, 0o755); err != nil {
		return fmt.Errorf("vsphere: %w", err)
	}
	st.Dir = vmdir
	if err := writeState(r.Dir(), st); err != nil {
		return err
	}
	if err := c.probe(ctx, ds, opt.NFS.Dir, opt.Name); err != nil {
		return err
	}
	clones, err := t.clone(in.Disks, opt.Name)
	if err != nil {
		return err
	}
	g, gctx := errgroup.WithContext(ctx)
	var files []diskFile
	for i, d := range in.Disks {
		f, err := t.serveDisk(gctx, g, d, clones[i], opt)
		if err != nil {
			return err
		}
		files = append(files, f)
	}
	if err := writeState(r.Dir(), st); err != nil {
		return err
	}
	folder := dsPath(ds.Name(), opt.Name)
	vmx := folder + "/" + opt.Name + ".vmx"
	spec, err := vmSpec(opt.Name, vmx, opt.Hardware, files, markers("instant", in, nil, folder))
	if err != nil {
		return err
	}
	if _, err := c.createVM(ctx, pl, spec); err != nil {
		return err
	}
	ready := InstantReady{VM: opt.Name, VMX: vmx, Datastore: ds.Name(), Mounted: created,
		Dir: vmdir, Source: in.Source, Seq: in.Seq, Time: in.Time}
	for _, d := range st.Disks {
		ready.Clones = append(ready.Clones, d.Clone)
	}
	if opt.PowerOn {
		if err := c.PowerOn(ctx, opt.Name); err != nil {
			return err
		}
		ready.PoweredOn = true
	}
	ready.Elapsed = time.Since(start)
	if opt.Ready != nil {
		opt.Ready(ready)
	}
	g.Go(func() error { <-gctx.Done(); return nil })
	werr := g.Wait() // until ctx ends, a device fails or a tap is unmounted from outside
	if werr != nil && !errors.Is(werr, context.Canceled) {
		c.logf("vsphere: instant %s: %v; ending it", opt.Name, werr)
	}
	if st2, rerr := readState(r.Dir(), opt.Name); rerr == nil { // instant-end or migrate may have said more
		st.Keep, st.Migrated = st2.Keep, st2.Migrated
	}
	return t.run(context.WithoutCancel(ctx), werr)
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

// serveDisk serves d's clone through a tap; the device's sync loop and the
// mount's lifetime run in g.
func (t *teardown) serveDisk(ctx context.Context, g *errgroup.Group, d Disk, clone store.Disk, opt InstantOptions) (diskFile, error) {
	name := clone.Name
	mnt := filepath.Join(t.st.Dir, d.Name)
	if err := os.Mkdir(mnt, 0o755); err != nil {
		return diskFile{}, fmt.Errorf("vsphere: %w", err)
	}
	for i := range t.st.Disks {
		if t.st.Disks[i].Clone == name {
			t.st.Disks[i].Mount = mnt
		}
	}
	meta := fs.ImageMeta(clone, store.Point{Seq: t.st.Seq, Time: t.st.Time})
	meta.Name, meta.Adapter = d.Name, d.Meta.Adapter
	if err := meta.Validate(); err != nil {
		return diskFile{}, err
	}
	dev := cdp.NewDevice(t.r, clone, "vsphere-instant")
	srv, err := tap.Mount(context.Background(), mnt, d.Name+"-flat.vmdk", dev, tap.Options{
		AllowOther: opt.AllowOther, Debug: opt.FuseDebug, Logf: t.c.logf,
		Files: map[string][]byte{d.Name + ".vmdk": image.VMDKDescriptor(meta)},
	})
	if err != nil {
		return diskFile{}, fmt.Errorf("serve clone %s: %w", name, err)
	}
	t.servers = append(t.servers, srv)
	t.devices = append(t.devices, dev)
	g.Go(func() error { return dev.Run(ctx, opt.SyncInterval) })
	g.Go(func() error {
		stopped := make(chan struct{})
		go func() { srv.Wait(); close(stopped) }()
		select {
		case <-stopped:
			return fmt.Errorf("vsphere: %s was unmounted from outside", mnt)
		case <-ctx.Done():
			return nil
		}
	})
	d.Meta = meta
	return diskFile{Disk: d, Path: dsPath(t.st.Datastore, filepath.ToSlash(filepath.Join(t.st.VM, d.Name, d.Name+".vmdk")))}, nil
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

// unmountTap unmounts a tap, waiting while the kernel says it is busy.
func unmountTap(ctx context.Context, srv *fusesrv.Server) error {
	if err := srv.UnmountWait(ctx, fusesrv.UnmountTimeout); err != nil {
		return fmt.Errorf("vsphere: %w", err)
	}
	return nil
}
