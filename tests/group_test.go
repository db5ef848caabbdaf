package tests

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hindsight-cdp/hindsight/cdp/timespec"
)

// TestGroupWriteOrderFidelity: writes alternate between two disks of a group
// served over NBD, each write to B issued only after the write to A before it
// was acknowledged. At 100 random instants of the group, B never holds a
// write whose A write is missing, and both disks show the same position.
// A bookmark taken beside the running writer goes through its control socket.
func TestGroupWriteOrderFidelity(t *testing.T) {
	t.Parallel()
	needTools(t, "qemu-io")
	repo := newRepo(t)
	ok(t, "--repo", repo, "disk", "create", "a", "--size", "1M")
	ok(t, "--repo", repo, "disk", "create", "b", "--size", "1M")
	ok(t, "--repo", repo, "group", "create", "vm", "a", "b")
	if r := hs(t, "--repo", repo, "group", "create", "vm2", "a"); r.code == 0 || !strings.Contains(r.stderr, "already in group") {
		t.Fatalf("a disk joined two groups: %d %s", r.code, r.stderr)
	}
	sock := serveNBD(t, repo, "vm")
	const n = 40
	write := func(disk string, i int) {
		run(t, "qemu-io", "-f", "raw", nbdURL(sock, disk),
			"-c", fmt.Sprintf("write -P %d %d 4k", i+1, i*4096))
	}
	for i := 0; i < n; i++ {
		write("a", i) // returns once acknowledged
		write("b", i)
		if i == n/2 {
			out := ok(t, "--repo", repo, "--json", "bookmark", "vm", "half")
			var bm struct{ Disk, Kind string }
			if err := json.Unmarshal([]byte(out), &bm); err != nil || bm.Disk != "vm" {
				t.Fatalf("bookmark beside serve-nbd: %q %v", out, err)
			}
		}
	}
	mnt := checkCausalChain(t, repo, n)
	for _, f := range []string{"a.vmdk", "b.vmdk", "vm.vmx"} {
		if _, err := os.Stat(filepath.Join(mnt, "vm", "bookmarks", "half", f)); err != nil {
			t.Errorf("bookmarks/half: %v", err)
		}
	}
}

// checkCausalChain: the group vm of disks a and b got n writes alternating
// a, b, each write i (pattern i+1 at block i) issued after the one before
// was acknowledged. At 100 random instants read through a mount, B never
// holds a write without A's, and A is at most one write ahead. It returns
// the mount.
func checkCausalChain(t *testing.T, repo string, n int) string {
	t.Helper()
	mnt := mountRepo(t, repo)
	var points []struct {
		Seq  uint64
		Time time.Time
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(points) < 2*n && time.Now().Before(deadline) { // published every 100 ms
		time.Sleep(100 * time.Millisecond)
		json.Unmarshal([]byte(ok(t, "--repo", repo, "--json", "points", "vm", "--limit", "0")), &points)
	}
	if len(points) != 2*n {
		t.Fatalf("group has %d points, want %d", len(points), 2*n)
	}
	rng := rand.New(rand.NewPCG(4, 4))
	first, last := points[0].Time, points[len(points)-1].Time
	partial := 0
	for k := 0; k < 100; k++ {
		at := first.Add(time.Duration(rng.Int64N(int64(last.Sub(first)) + 1)))
		dir := filepath.Join(mnt, "vm", timespec.Format(at))
		a, err := os.ReadFile(filepath.Join(dir, "a-flat.vmdk"))
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(filepath.Join(dir, "b-flat.vmdk"))
		if err != nil {
			t.Fatal(err)
		}
		var info struct {
			Seq   uint64
			Disks []struct{ Name string }
		}
		raw, _ := os.ReadFile(filepath.Join(dir, "info.json"))
		if err := json.Unmarshal(raw, &info); err != nil || len(info.Disks) != 2 {
			t.Fatalf("%s/info.json: %s %v", dir, raw, err)
		}
		written := func(img []byte, i int) bool {
			return bytes.Equal(img[i*4096:(i+1)*4096], bytes.Repeat([]byte{byte(i + 1)}, 4096))
		}
		as, bs := 0, 0
		for i := 0; i < n; i++ {
			if written(b, i) && !written(a, i) {
				t.Fatalf("instant %s (seq %d): B's write %d without A's", at.Format(time.RFC3339Nano), info.Seq, i)
			}
			if written(a, i) {
				as++
			}
			if written(b, i) {
				bs++
			}
		}
		// The chain also bounds A from above: A's write i+1 waited for B's write i.
		if as < bs || as > bs+1 {
			t.Fatalf("instant %s: %d writes on A and %d on B break the causal chain", at.Format(time.RFC3339Nano), as, bs)
		}
		if as > 0 && as < n {
			partial++
		}
	}
	if partial < 50 {
		t.Fatalf("only %d of 100 instants fell inside the write chain", partial)
	}
	return mnt
}

// TestGroupFidelityTap is the same chain through the FUSE tap: protect of
// a group serves every disk as a file of one mount, on one timeline.
func TestGroupFidelityTap(t *testing.T) {
	t.Parallel()
	needRoot(t)
	repo := newRepo(t)
	ok(t, "--repo", repo, "disk", "create", "a", "--size", "1M")
	ok(t, "--repo", repo, "disk", "create", "b", "--size", "1M")
	ok(t, "--repo", repo, "group", "create", "vm", "a", "b")
	img, _ := protect(t, repo, "vm")
	dir := filepath.Dir(img)
	files := map[string]*os.File{}
	for _, d := range []string{"a", "b"} {
		f, err := os.OpenFile(filepath.Join(dir, d+".img"), os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		files[d] = f
	}
	const n = 40
	for i := 0; i < n; i++ {
		for _, d := range []string{"a", "b"} { // WriteAt returns once the tap journaled it
			if _, err := files[d].WriteAt(bytes.Repeat([]byte{byte(i + 1)}, 4096), int64(i)*4096); err != nil {
				t.Fatal(err)
			}
		}
	}
	checkCausalChain(t, repo, n)
}
