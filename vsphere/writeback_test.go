package vsphere

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestWriteback is acceptance 3: the VM's flat disk ends byte-identical to
// the instant, and with OnlyChanged only the differing blocks are written.
func TestWriteback(t *testing.T) {
	ctx := context.Background()
	s := newSim(t, nil)
	c := s.connect(t)
	r := newRepo(t, "", map[string]int64{"db": 8 << 20}, "db")
	in, err := ResolveInstant(r, "db", "latest", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	place := Placement{Datastore: "LocalDS_0", Pool: "/DC0/host/DC0_C0/Resources"}
	if _, err := c.Register(ctx, in, RegisterOptions{Name: "db", Place: place, Hardware: Hardware{MemoryMB: 256, CPUs: 1}, PowerOn: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Writeback(ctx, in, WritebackOptions{VM: "db"}); !errors.Is(err, ErrPoweredOn) {
		t.Fatalf("powered-on VM: %v", err)
	}
	if err := c.PowerOff(ctx, "db"); err != nil {
		t.Fatal(err)
	}
	dsdir := s.dsDir(t, c, "LocalDS_0")
	flat := filepath.Join(dsdir, "db", "db-flat.vmdk")
	// The guest changed 3 blocks: two adjacent, one far.
	f, err := os.OpenFile(flat, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	junk := make([]byte, 8192)
	for i := range junk {
		junk[i] = 0x5a
	}
	f.WriteAt(junk, 4096*10)
	f.WriteAt(junk[:4096], 5<<20)
	f.Close()
	want := hashOf(t, in.Disks[0].Image, in.Disks[0].Size)

	// Through HTTP: compared, then uploaded whole.
	out, err := c.Writeback(ctx, in, WritebackOptions{VM: "db", OnlyChanged: true})
	if err != nil {
		t.Fatal(err)
	}
	if w := out[0]; w.Differed != 3 || !w.Whole || w.Target != "[LocalDS_0] db/db-flat.vmdk" {
		t.Fatalf("http writeback: %+v", w)
	}
	checkFile(t, flat, want, in.Disks[0].Size)

	// In place through a local mount of the datastore: only the 3 blocks.
	f, _ = os.OpenFile(flat, os.O_RDWR, 0)
	f.WriteAt(junk, 4096*10)
	f.WriteAt(junk[:4096], 5<<20)
	f.Close()
	out, err = c.Writeback(ctx, in, WritebackOptions{VM: "db", OnlyChanged: true, LocalDir: dsdir})
	if err != nil {
		t.Fatal(err)
	}
	if w := out[0]; w.Differed != 3 || w.Written != 3 || w.Bytes != 3*4096 || w.Whole {
		t.Fatalf("local writeback: %+v", w)
	}
	checkFile(t, flat, want, in.Disks[0].Size)
	// Nothing differs now: nothing is written.
	out, err = c.Writeback(ctx, in, WritebackOptions{VM: "db", OnlyChanged: true})
	if err != nil || out[0].Written != 0 {
		t.Fatalf("identical: %+v %v", out, err)
	}
	// Without OnlyChanged everything is written.
	out, err = c.Writeback(ctx, in, WritebackOptions{VM: "db", LocalDir: dsdir})
	if err != nil || out[0].Written != uint64(in.Disks[0].Size/4096) {
		t.Fatalf("whole: %+v %v", out, err)
	}
	checkFile(t, flat, want, in.Disks[0].Size)
}

func checkFile(t *testing.T, name, want string, size int64) {
	t.Helper()
	f, err := os.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if hashOf(t, f, size) != want {
		t.Fatalf("%s differs from the instant", name)
	}
}
