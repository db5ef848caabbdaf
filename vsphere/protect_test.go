package vsphere

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hindsight-cdp/hindsight/store"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/types"
)

// protectFixture is a VM "app" with one 4 MiB disk on LocalDS_0 (uploaded
// from disk "src") and an empty disk "dst" to protect it into.
func protectFixture(t *testing.T) (*sim, *Client, *store.Repo, string) {
	t.Helper()
	ctx := context.Background()
	s := newSim(t, nil)
	c := s.connect(t)
	r := newRepo(t, "", map[string]int64{"src": 4 << 20}, "src")
	if _, err := r.CreateDisk("dst", 4<<20, 4096); err != nil {
		t.Fatal(err)
	}
	in, err := ResolveInstant(r, "src", "latest", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Register(ctx, in, RegisterOptions{Name: "app", Place: Placement{Datastore: "LocalDS_0", Pool: "/DC0/host/DC0_C0/Resources"},
		Hardware: Hardware{MemoryMB: 256, CPUs: 1}, PowerOn: true}); err != nil {
		t.Fatal(err)
	}
	return s, c, r, filepath.Join(s.dsDir(t, c, "LocalDS_0"), "app", "src-flat.vmdk")
}

// checkJournal fails unless dst's newest state is the flat file's content.
func checkJournal(t *testing.T, r *store.Repo, flat string) {
	t.Helper()
	d, _ := r.Disk("dst")
	img, err := r.Image(d, r.Head())
	if err != nil {
		t.Fatal(err)
	}
	checkFile(t, flat, hashOf(t, img, d.Size), d.Size)
}

func scribble(t *testing.T, flat string, offs ...int64) {
	t.Helper()
	f, err := os.OpenFile(flat, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, off := range offs {
		b := make([]byte, 4096)
		for i := range b {
			b[i] = byte(off>>12) + 1
		}
		if _, err := f.WriteAt(b, off); err != nil {
			t.Fatal(err)
		}
	}
}

// setChangeID gives the simulated VM's disk a change ID, as a host with
// changed block tracking on would.
func setChangeID(s *sim, c *Client, vm, id string) {
	ref, _ := c.findVM(context.Background(), vm)
	obj := s.object(ref.Reference()).(*simulator.VirtualMachine)
	s.m.Service.Context.WithLock(obj, func() {
		for _, d := range obj.Config.Hardware.Device {
			if disk, ok := d.(*types.VirtualDisk); ok {
				disk.Backing.(*types.VirtualDiskFlatVer2BackingInfo).ChangeId = id
			}
		}
	})
}

// TestProtectFullRead is acceptance 4's fallback: without change tracking
// each cycle reads the whole disk and journals only what differs, as one
// bookmarked point, and removes its snapshot.
func TestProtectFullRead(t *testing.T) {
	ctx := context.Background()
	_, c, r, flat := protectFixture(t)
	opt := ProtectOptions{VM: "app", Target: "dst", Quiesce: true}
	cap1, err := c.ProtectOnce(ctx, r, opt)
	if err != nil {
		t.Fatal(err)
	}
	if !cap1.Quiesced || cap1.Disks[0].Method != "full" || cap1.Disks[0].Read != 4<<20 || cap1.Disks[0].Changed == 0 {
		t.Fatalf("first capture: %+v", cap1)
	}
	checkJournal(t, r, flat)
	scribble(t, flat, 0, 3<<20)
	cap2, err := c.ProtectOnce(ctx, r, ProtectOptions{VM: "app", Target: "dst"})
	if err != nil {
		t.Fatal(err)
	}
	if cap2.Quiesced || cap2.Disks[0].Changed != 2 || cap2.Point.Seq <= cap1.Point.Seq {
		t.Fatalf("second capture: %+v", cap2)
	}
	checkJournal(t, r, flat)
	d, _ := r.Disk("dst")
	bm, err := r.Bookmark(d, cap1.Bookmark)
	if err != nil || bm.Kind != store.KindApplication || bm.Seq != cap1.Point.Seq {
		t.Fatalf("bookmark of the quiesced capture: %+v %v", bm, err)
	}
	if bm, _ := r.Bookmark(d, cap2.Bookmark); bm.Kind != store.KindCrash {
		t.Fatalf("bookmark of the crash-consistent capture: %+v", bm)
	}
	vm, _ := c.findVM(ctx, "app")
	if vm.Snapshot != nil && len(vm.Snapshot.RootSnapshotList) > 0 {
		t.Fatalf("snapshots left: %+v", vm.Snapshot.RootSnapshotList)
	}
	// The VM's shape is recorded, so its recovery points register as it.
	d, _ = r.Disk("dst")
	hw := vm.Config.Hardware
	if p := d.Profile; p == nil || p.MemoryMB != int64(hw.MemoryMB) || p.CPUs != hw.NumCPU || p.GuestID != vm.Config.GuestId {
		t.Fatalf("recorded profile %+v, VM has %d MiB, %d CPUs, %s", d.Profile, hw.MemoryMB, hw.NumCPU, vm.Config.GuestId)
	}
	if want := controllerOf(hw.Device, disksOf(hw.Device)[0].dev); want == "" || d.Controller != want {
		t.Fatalf("recorded controller %q, VM's is %q", d.Controller, want)
	}
	in, err := ResolveInstant(r, "dst", "latest", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := in.SetControllers("", nil); err != nil || in.Disks[0].Controller != d.Controller || in.Profile == nil {
		t.Fatalf("instant of dst: controller %q profile %+v %v", in.Disks[0].Controller, in.Profile, err)
	}
	if _, err := c.ProtectOnce(ctx, r, ProtectOptions{VM: "app", Target: "src"}); err != nil {
		t.Fatalf("into its own source: %v", err)
	}
	if _, err := c.ProtectOnce(ctx, r, ProtectOptions{VM: "nope", Target: "dst"}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown VM: %v", err)
	}
}

// fakeTracker answers QueryChangedDiskAreas with fixed areas, in two
// answers, and records the requests.
type fakeTracker struct {
	areas []types.DiskChangeExtent
	reqs  []types.QueryChangedDiskAreas
}

func (f *fakeTracker) QueryChangedDiskAreas(ctx context.Context, req types.QueryChangedDiskAreas) (types.DiskChangeInfo, error) {
	f.reqs = append(f.reqs, req)
	const half = 2 << 20
	info := types.DiskChangeInfo{StartOffset: req.StartOffset, Length: half}
	for _, a := range f.areas {
		if a.Start >= req.StartOffset && a.Start < req.StartOffset+half {
			info.ChangedArea = append(info.ChangedArea, a)
		}
	}
	return info, nil
}

// TestProtectCBT is acceptance 4's CBT path, through a fake at the
// consumer interface: the requests have the API's shape, only the reported
// areas are read, and a host without CBT falls back to a full read.
func TestProtectCBT(t *testing.T) {
	ctx := context.Background()
	s, c, r, flat := protectFixture(t)
	setChangeID(s, c, "app", "52 aa bb/1")
	if _, err := c.ProtectOnce(ctx, r, ProtectOptions{VM: "app", Target: "dst"}); err != nil {
		t.Fatal(err)
	}
	scribble(t, flat, 8192, 3<<20)
	setChangeID(s, c, "app", "52 aa bb/2")
	fake := &fakeTracker{areas: []types.DiskChangeExtent{{Start: 8192, Length: 4096}, {Start: 3 << 20, Length: 4096}}}
	cap, err := c.ProtectOnce(ctx, r, ProtectOptions{VM: "app", Target: "dst", Tracker: fake})
	if err != nil {
		t.Fatal(err)
	}
	if one := cap.Disks[0]; one.Method != "cbt" || one.Read != 8192 || one.Changed != 2 || one.ChangeID != "52 aa bb/2" {
		t.Fatalf("cbt capture: %+v", one)
	}
	vm, _ := c.findVM(ctx, "app")
	key := disksOf(vm.Config.Hardware.Device)[0].Key
	if len(fake.reqs) != 2 {
		t.Fatalf("%d requests", len(fake.reqs))
	}
	for i, req := range fake.reqs {
		if req.This != vm.Reference() || req.Snapshot == nil || req.Snapshot.Type != "VirtualMachineSnapshot" ||
			req.DeviceKey != key || req.ChangeId != "52 aa bb/1" || req.StartOffset != int64(i)*(2<<20) {
			t.Errorf("request %d: %+v", i, req)
		}
	}
	checkJournal(t, r, flat)
	// The simulator has no CBT: the real call fails and the cycle reads all.
	scribble(t, flat, 1<<20)
	setChangeID(s, c, "app", "52 aa bb/3")
	cap, err = c.ProtectOnce(ctx, r, ProtectOptions{VM: "app", Target: "dst"})
	if err != nil {
		t.Fatal(err)
	}
	if one := cap.Disks[0]; one.Method != "full" || one.Changed != 1 || cap.Note == "" {
		t.Fatalf("fallback capture: %+v %q", one, cap.Note)
	}
	checkJournal(t, r, flat)
}
