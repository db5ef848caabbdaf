package tests

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestRecoverReplaysOnClone: an instant of a mounted ext4, taken just after
// a sync, holds the new file's metadata only in the filesystem's journal. A
// never-replay mount would not show the file; restore mounts a disposable
// copy-on-write clone on which the kernel replays the journal, says so in
// --json, and leaves the instant unchanged and nothing mounted or attached.
func TestRecoverReplaysOnClone(t *testing.T) {
	t.Parallel()
	needRoot(t)
	needTools(t, "mkfs.ext4", "losetup", "findmnt")
	repo := newRepo(t)
	ok(t, "--repo", repo, "disk", "create", "live", "--size", "64M")
	mnt, _, _ := ext4OnTap(t, repo, "live")
	want := []byte("written while the filesystem was mounted\n")
	if err := os.WriteFile(filepath.Join(mnt, "hello.txt"), want, 0o644); err != nil {
		t.Fatal(err)
	}
	run(t, "sync")          // commits the journal; the checkpoint comes much later
	time.Sleep(time.Second) // protect publishes every 200 ms
	at := time.Now().UTC().Format(time.RFC3339Nano)
	before := run(t, hsBin, "--repo", repo, "export", "live", "--at", at, "--out", "-")
	out := filepath.Join(t.TempDir(), "out")
	r := hs(t, "--repo", repo, "--json", "restore", "live", "--at", at, "/hello.txt", "--to", out)
	if r.code != 0 {
		t.Fatalf("restore: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	var res struct {
		Partitions []struct{ Method, Status string }
	}
	if err := json.Unmarshal([]byte(r.stdout), &res); err != nil || len(res.Partitions) != 1 {
		t.Fatalf("restore --json: %v\n%s", err, r.stdout)
	}
	if p := res.Partitions[0]; p.Method != "cow-clone" || p.Status != "mounted" {
		t.Fatalf("partition mounted %+v, want from a copy-on-write clone", p)
	}
	got, err := os.ReadFile(filepath.Join(out, "hello.txt"))
	if err != nil || string(got) != string(want) {
		t.Fatalf("restored %q, %v; want %q", got, err, want)
	}
	if after := run(t, hsBin, "--repo", repo, "export", "live", "--at", at, "--out", "-"); after != before {
		t.Fatal("replaying the journal changed the instant")
	}
	noRecoverLeftovers(t)
}
