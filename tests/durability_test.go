package tests

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// TestKilledImport: an import killed with SIGKILL at several moments leaves a
// repository that opens, shows every point completed before, and takes the
// next import.
func TestKilledImport(t *testing.T) {
	t.Parallel()
	repo := newRepo(t)
	const size = 128 << 20
	ok(t, "--repo", repo, "disk", "create", "big", "--size", "128M")
	rng := rand.New(rand.NewPCG(41, 42))
	dir := t.TempDir()
	base := make([]byte, size)
	for i := 0; i < size/2; i++ {
		base[i] = byte(rng.Uint32())
	}
	basePath := filepath.Join(dir, "base")
	os.WriteFile(basePath, base, 0o600)
	ok(t, "--repo", repo, "import", "big", basePath, "--at", "2026-11-25T10:00:00Z")

	next := make([]byte, size)
	for i := range next {
		next[i] = byte(rng.Uint32()) // every block changes: a long import
	}
	nextPath := filepath.Join(dir, "next")
	os.WriteFile(nextPath, next, 0o600)

	for _, after := range []int64{1 << 20, 24 << 20, 64 << 20} {
		grown := contentBytes(t, repo) + after
		cmd := exec.Command(hsBin, "--repo", repo, "import", "big", nextPath)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(60 * time.Second)
		for contentBytes(t, repo) < grown && time.Now().Before(deadline) {
			time.Sleep(2 * time.Millisecond)
		}
		cmd.Process.Signal(syscall.SIGKILL)
		err := cmd.Wait()
		if err == nil {
			t.Logf("import finished before the kill (after %d bytes); checking the point instead", after)
			break
		}
		var ps []struct {
			Seq uint64 `json:"seq"`
		}
		if err := json.Unmarshal([]byte(ok(t, "--repo", repo, "--json", "points", "big")), &ps); err != nil {
			t.Fatal(err)
		}
		if len(ps) != 1 {
			t.Fatalf("after a kill %d bytes in: %d points, want the 1 completed", after, len(ps))
		}
		got := filepath.Join(dir, "got")
		os.Remove(got)
		ok(t, "--repo", repo, "export", "big", "--out", got)
		if b, _ := os.ReadFile(got); !bytes.Equal(b, base) {
			t.Fatalf("after a kill %d bytes in: the completed point reads back wrong", after)
		}
	}
	ok(t, "--repo", repo, "import", "big", nextPath)
	got := filepath.Join(dir, "got2")
	ok(t, "--repo", repo, "export", "big", "--out", got)
	if b, _ := os.ReadFile(got); !bytes.Equal(b, next) {
		t.Fatal("the import after the kills reads back wrong")
	}
	ok(t, "--repo", repo, "export", "big", "--at", "2026-11-25T10:00:00Z", "--out", got+".old")
	if b, _ := os.ReadFile(got + ".old"); !bytes.Equal(b, base) {
		t.Fatal("the first point changed")
	}
}
