package vsphere

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hindsight-cdp/hindsight/cdp"
	"github.com/hindsight-cdp/hindsight/fs/fusesrv"
	"github.com/hindsight-cdp/hindsight/fs/tap"
	"github.com/hindsight-cdp/hindsight/store"
	"github.com/hindsight-cdp/hindsight/store/storetest"
	"github.com/zeebo/blake3"
)

// TestInstant is acceptance 2 in-process: a 2 GiB disk runs as a VM from
// its clone at once; writes into the clone leave the instant alone; the end
// leaves the folder and the journal as they were.
func TestInstant(t *testing.T) {
	ctx := context.Background()
	c, dir, repoDir, r := instantFixture(t)
	d, err := r.CreateDisk("web", 2<<30, 4096)
	if err != nil {
		t.Fatal(err)
	}
	blk := make([]byte, 4096)
	for i := range blk {
		blk[i] = 7
	}
	if _, err := r.Capture(d.Timeline, []store.BlockWrite{{Disk: d, Block: 1, Data: blk}, {Disk: d, Block: 100000, Data: blk}}); err != nil {
		t.Fatal(err)
	}
	if err := r.Sync(); err != nil {
		t.Fatal(err)
	}
	in, err := ResolveInstant(r, "web", "latest", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	in.SetControllers("pvscsi", nil)
	want := digest(t, in.Disks[0].Image.(*store.Image), d)
	disksBefore, _ := r.Disks()

	sctx, stop := context.WithCancel(ctx)
	defer stop()
	readyc := make(chan InstantReady, 1)
	errc := make(chan error, 1)
	start := time.Now()
	go func() {
		errc <- c.ServeInstant(sctx, r, in, InstantOptions{
			Name: "web-instant", Place: Placement{Pool: "/DC0/host/DC0_C0/Resources"}, Hardware: Hardware{MemoryMB: 256, CPUs: 1},
			NFS:     NFS{Datastore: "hindsight-nfs", Dir: dir, RemoteHost: "127.0.0.1", RemotePath: "/srv/hindsight-nfs", LocalPath: dir},
			PowerOn: true, Serve: tapServe(r), Ready: func(r InstantReady) { readyc <- r },
		})
	}()
	var ready InstantReady
	select {
	case ready = <-readyc:
	case err := <-errc:
		t.Fatal(err)
	case <-time.After(30 * time.Second):
		t.Fatal("no VM after 30 s")
	}
	if el := time.Since(start); el > time.Second {
		t.Errorf("the VM took %s to register", el)
	}
	vm, err := c.findVM(ctx, "web-instant")
	if err != nil {
		t.Fatal(err)
	}
	if disks := disksOf(vm.Config.Hardware.Device); len(disks) != 1 || disks[0].File != "[hindsight-nfs] web-instant/web/web.vmdk" {
		t.Fatalf("disks %+v", disks)
	}
	if !ready.Mounted || ready.Clones[0] != "web-instant-web" {
		t.Fatalf("ready %+v", ready)
	}
	tapDir := filepath.Join(dir, "web-instant", "web")
	qemuCheck(t, filepath.Join(tapDir, "web.vmdk"))
	// The host writes into the clone.
	f, err := os.OpenFile(filepath.Join(tapDir, "web-flat.vmdk"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	junk := make([]byte, 1<<20)
	for i := range junk {
		junk[i] = 0xee
	}
	if _, err := f.WriteAt(junk, 0); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	orig, _ := r.Image(d, in.Seq)
	if digest(t, orig, d) != want {
		t.Fatal("writes into the clone changed the instant")
	}
	clone, err := r.Disk("web-instant-web")
	if err != nil {
		t.Fatal(err)
	}
	cimg, _ := r.Image(clone, r.Head())
	if digest(t, cimg, d) == want {
		t.Fatal("the clone did not take the write")
	}

	stop()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if _, err := c.findVM(ctx, "web-instant"); err == nil {
		t.Fatal("the VM is still registered")
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Fatalf("left in the NFS folder: %v", ents)
	}
	if disksAfter, _ := r.Disks(); len(disksAfter) != len(disksBefore) {
		t.Fatalf("disks %v, were %v", disksAfter, disksBefore)
	}
	if digest(t, orig, d) != want {
		t.Fatal("the instant changed")
	}
	if _, err := c.datastore(ctx, "hindsight-nfs"); err == nil {
		t.Fatal("the datastore Hindsight mounted is still there")
	}
	if _, err := os.Stat(statePath(repoDir, "web-instant")); !os.IsNotExist(err) {
		t.Fatalf("state record left: %v", err)
	}
}

// instantFixture is a simulator's client, the local folder its NFS
// datastore shows, and a repository open for writing (closed at cleanup).
func instantFixture(t *testing.T) (c *Client, nfsDir, repoDir string, r *store.Repo) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root for FUSE")
	}
	c = newSim(t, nil).connect(t)
	nfsDir = filepath.Join(t.TempDir(), "hindsight-nfs")
	if err := os.Mkdir(nfsDir, 0o755); err != nil {
		t.Fatal(err)
	}
	r, repoDir = storetest.Repo(t)
	return c, nfsDir, repoDir, r
}

// digest is the BLAKE3 of an image's block hashes: its identity, without
// reading 2 GiB of zeros.
func digest(t *testing.T, im *store.Image, d store.Disk) string {
	t.Helper()
	hs := make([]store.Hash, d.Blocks())
	if err := im.Hashes(0, hs); err != nil {
		t.Fatal(err)
	}
	h := blake3.New()
	for _, x := range hs {
		h.Write(x[:])
	}
	return string(h.Sum(nil))
}

// A group's instant clones all its disks into one clone group, so the VM's
// writes keep their order across disks; the end drops the group.
func TestInstantGroupClones(t *testing.T) {
	ctx := context.Background()
	c, dir, _, r := instantFixture(t)
	r.CreateDisk("os", 16<<20, 4096)
	r.CreateDisk("data", 16<<20, 4096)
	g, err := r.CreateGroup("db", []string{"os", "data"})
	if err != nil {
		t.Fatal(err)
	}
	os1, _ := r.Disk("os")
	blk := make([]byte, 4096)
	blk[0] = 1
	if _, err := r.Capture(g.ID, []store.BlockWrite{{Disk: os1, Block: 3, Data: blk}}); err != nil {
		t.Fatal(err)
	}
	in, err := ResolveInstant(r, "db", "latest", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	in.SetControllers("pvscsi", nil)
	sctx, stop := context.WithCancel(ctx)
	defer stop()
	readyc := make(chan InstantReady, 1)
	errc := make(chan error, 1)
	go func() {
		errc <- c.ServeInstant(sctx, r, in, InstantOptions{
			Name: "db-i", Place: Placement{Pool: "/DC0/host/DC0_C0/Resources"}, Hardware: Hardware{MemoryMB: 256, CPUs: 1},
			NFS:   NFS{Datastore: "hindsight-nfs", Dir: dir, RemoteHost: "127.0.0.1", RemotePath: "/srv/hindsight-nfs", LocalPath: dir},
			Serve: tapServe(r), Ready: func(r InstantReady) { readyc <- r },
		})
	}()
	select {
	case <-readyc:
	case err := <-errc:
		t.Fatal(err)
	case <-time.After(30 * time.Second):
		t.Fatal("no VM after 30 s")
	}
	cg, err := r.Group("db-i-clones")
	if err != nil || len(cg.Disks) != 2 {
		t.Fatalf("clone group: %+v %v", cg, err)
	}
	for _, n := range cg.Disks {
		if d, err := r.Disk(n); err != nil || d.Timeline != cg.ID || d.Base == nil || d.Base.Seq != in.Seq {
			t.Fatalf("clone %s: %+v %v", n, d, err)
		}
	}
	stop()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if _, err := r.Group("db-i-clones"); err == nil {
		t.Fatal("the clone group outlived the instant")
	}
	if ds, _ := r.Disks(); len(ds) != 2 {
		t.Fatalf("disks after the end: %+v", ds)
	}
}

// tapServe serves clones through a tap of their own, as the service does
// with its devices and publisher.
func tapServe(r *store.Repo) ServeFunc {
	return func(ctx context.Context, clone store.Disk, dir, file string, files map[string][]byte, allowOther bool) (func() error, <-chan struct{}, error) {
		dev := cdp.NewDevice(r, clone, "test")
		srv, err := tap.Mount(context.Background(), dir, file, dev, tap.Options{AllowOther: allowOther, Files: files})
		if err != nil {
			return nil, nil, err
		}
		ended := make(chan struct{})
		go func() { srv.Wait(); close(ended) }()
		stop := func() error {
			if err := srv.UnmountWait(context.Background(), fusesrv.UnmountTimeout); err != nil {
				return err
			}
			return dev.Flush()
		}
		return stop, ended, nil
	}
}
