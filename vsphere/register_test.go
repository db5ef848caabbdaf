package vsphere

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/types"
)

// TestRegisterGroup is acceptance 1: a two-disk group's instant becomes a
// VM with both disks on pvscsi controllers, byte-identical to the instant.
func TestRegisterGroup(t *testing.T) {
	ctx := context.Background()
	s := newSim(t, nil)
	c := s.connect(t)
	r := newRepo(t, "web", map[string]int64{"web-os": 8 << 20, "web-data": 4 << 20}, "web-os", "web-data")
	in, err := ResolveInstant(r, "web", "latest", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := in.SetControllers("pvscsi", map[string]string{"web-data": "nvme"}); err != nil {
		t.Fatal(err)
	}
	opt := RegisterOptions{Name: "web-restored", Place: Placement{Datastore: "LocalDS_0", Folder: "/DC0/vm", Pool: "/DC0/host/DC0_C0/Resources"},
		Hardware: Hardware{MemoryMB: 512, CPUs: 2}, PowerOn: true}
	res, err := c.Register(ctx, in, opt)
	if err != nil {
		t.Fatal(err)
	}
	if !res.PoweredOn || len(res.Disks) != 2 {
		t.Fatalf("result %+v", res)
	}
	dir := s.dsDir(t, c, "LocalDS_0")
	for i, d := range in.Disks {
		flat := filepath.Join(dir, "web-restored", d.Name+"-flat.vmdk")
		f, err := os.Open(flat)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := hashOf(t, f, d.Size), hashOf(t, d.Image, d.Size); got != want {
			t.Errorf("%s differs from the instant", flat)
		}
		f.Close()
		qemuCheck(t, filepath.Join(dir, "web-restored", d.Name+".vmdk"))
		if res.Disks[i].Descriptor != "[LocalDS_0] web-restored/"+d.Name+".vmdk" {
			t.Errorf("descriptor %q", res.Disks[i].Descriptor)
		}
	}
	vm, err := c.findVM(ctx, "web-restored")
	if err != nil {
		t.Fatal(err)
	}
	devs := object.VirtualDeviceList(vm.Config.Hardware.Device)
	disks := disksOf(vm.Config.Hardware.Device)
	if len(disks) != 2 {
		t.Fatalf("%d disks", len(disks))
	}
	for i, want := range []string{"pvscsi", "nvme"} {
		ctrl := devs.FindByKey(disks[i].dev.ControllerKey)
		if got := ControllerKind(ctrl); got != want {
			t.Errorf("disk %d on %s, want %s", i, got, want)
		}
		if disks[i].File != res.Disks[i].Descriptor || disks[i].Size != in.Disks[i].Size {
			t.Errorf("disk %d: %s %d", i, disks[i].File, disks[i].Size)
		}
	}
	if vm.Config.Hardware.MemoryMB != 512 || vm.Config.Hardware.NumCPU != 2 {
		t.Errorf("hardware %d MB %d CPUs", vm.Config.Hardware.MemoryMB, vm.Config.Hardware.NumCPU)
	}
	if err := c.PowerOff(ctx, "web-restored"); err != nil {
		t.Fatal(err)
	}
	if err := c.PowerOn(ctx, "web-restored"); err != nil {
		t.Fatal(err)
	}

	// The same name again is refused; --replace replaces it.
	opt.PowerOn = false
	if _, err := c.Register(ctx, in, opt); !errors.Is(err, ErrExists) {
		t.Fatalf("name clash: %v", err)
	}
	opt.Replace = true
	res2, err := c.Register(ctx, in, opt)
	if err != nil || !res2.Replaced {
		t.Fatalf("replace: %+v %v", res2, err)
	}
	recs, err := c.List(ctx)
	if err != nil || len(recs) != 1 || recs[0].VM != "web-restored" || recs[0].Source != "web" || recs[0].Seq != in.Seq || len(recs[0].Files) != 4 {
		t.Fatalf("list: %+v %v", recs, err)
	}
	// --replace never touches a VM Hindsight did not make.
	opt.Name = "DC0_H0_VM0"
	if _, err := c.Register(ctx, in, opt); !errors.Is(err, ErrNotOurs) {
		t.Fatalf("replace of a foreign VM: %v", err)
	}
}

// TestRegisterBadInput is acceptance 5 for copy mode: clear errors and
// nothing left behind.
func TestRegisterBadInput(t *testing.T) {
	ctx := context.Background()
	s := newSim(t, nil)
	c := s.connect(t)
	r := newRepo(t, "", map[string]int64{"web": 4 << 20}, "web")
	in, err := ResolveInstant(r, "web", "latest", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	good := Placement{Datastore: "LocalDS_0", Folder: "/DC0/vm", Pool: "/DC0/host/DC0_C0/Resources"}
	cases := []struct {
		name string
		edit func(*Placement)
		want error
	}{
		{"datastore", func(p *Placement) { p.Datastore = "nope" }, ErrNotFound},
		{"folder", func(p *Placement) { p.Folder = "/DC0/vm/nope" }, ErrNotFound},
		{"pool", func(p *Placement) { p.Pool = "/DC0/host/nope/Resources" }, ErrNotFound},
		{"host", func(p *Placement) { p.Host = "nope" }, ErrNotFound},
	}
	dir := s.dsDir(t, c, "LocalDS_0")
	before := listDir(t, dir)
	vmsBefore, _ := c.allVMs(ctx)
	for _, tc := range cases {
		p := good
		tc.edit(&p)
		_, err := c.Register(ctx, in, RegisterOptions{Name: "x", Place: p})
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
	// A datastore too small.
	ds, _ := c.datastore(ctx, "LocalDS_0")
	setFreeSpace(s, ds.Reference(), 1<<20)
	if _, err := c.Register(ctx, in, RegisterOptions{Name: "x", Place: good}); !errors.Is(err, ErrNoSpace) {
		t.Errorf("small datastore: %v", err)
	}
	setFreeSpace(s, ds.Reference(), 1<<40)
	// A failure after the upload (a bad controller at create time) removes the files.
	in.Disks[0].Controller = "floppy"
	if _, err := c.Register(ctx, in, RegisterOptions{Name: "x", Place: good}); !errors.Is(err, ErrBadInput) {
		t.Errorf("bad controller: %v", err)
	}
	if after := listDir(t, dir); after != before {
		t.Errorf("files left behind:\n%s\nwas\n%s", after, before)
	}
	if vms, _ := c.allVMs(ctx); len(vms) != len(vmsBefore) {
		t.Errorf("%d VMs, was %d", len(vms), len(vmsBefore))
	}
}

func listDir(t *testing.T, dir string) string {
	t.Helper()
	var s string
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil {
			s += p + "\n"
		}
		return nil
	})
	return s
}

// setFreeSpace sets what the simulator reports as a datastore's free space.
func setFreeSpace(s *sim, ref types.ManagedObjectReference, n int64) {
	ds := s.object(ref).(*simulator.Datastore)
	s.m.Service.Context.WithLock(ds, func() { ds.Summary.FreeSpace = n })
}
