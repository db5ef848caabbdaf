package tests

import (
	"bytes"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestFullDisk: an import that runs out of space fails with the kernel's
// reason and a non-zero exit, loses no earlier point, and once space is
// freed the next import works.
func TestFullDisk(t *testing.T) {
	t.Parallel()
	needRoot(t)
	fsDir := t.TempDir()
	run(t, "mount", "-t", "tmpfs", "-o", "size=48m,mode=0700", "hindsight-full", fsDir)
	t.Cleanup(func() {
		if err := exec.Command("umount", fsDir).Run(); err != nil {
			exec.Command("umount", "-l", fsDir).Run()
		}
	})
	repo := filepath.Join(fsDir, "repo")
	ok(t, "--repo", repo, "init")
	ok(t, "--repo", repo, "disk", "create", "d", "--size", "64M")
	rng := rand.New(rand.NewPCG(61, 62))
	img := make([]byte, 64<<20)
	for i := 0; i < 4<<20; i++ {
		img[i] = byte(rng.Uint32())
	}
	dir := t.TempDir()
	first := filepath.Join(dir, "first")
	os.WriteFile(first, img, 0o600)
	ok(t, "--repo", repo, "import", "d", first, "--at", "2026-11-25T10:00:00Z")

	for i := range img {
		img[i] = byte(rng.Uint32()) // 64 MiB of incompressible change: more than the space left
	}
	second := filepath.Join(dir, "second")
	os.WriteFile(second, img, 0o600)
	r := hs(t, "--repo", repo, "import", "d", second)
	if r.code == 0 || !strings.Contains(r.stderr, "no space left on device") {
		t.Fatalf("import onto a full disk: exit %d, %q", r.code, r.stderr)
	}
	got := filepath.Join(dir, "got")
	ok(t, "--repo", repo, "export", "d", "--out", got)
	want, _ := os.ReadFile(first)
	if b, _ := os.ReadFile(got); !bytes.Equal(b, want) {
		t.Fatal("the point before the full disk reads back wrong")
	}
	run(t, "mount", "-o", "remount,size=256m", fsDir)
	ok(t, "--repo", repo, "import", "d", second)
	os.Remove(got)
	ok(t, "--repo", repo, "export", "d", "--out", got)
	if b, _ := os.ReadFile(got); !bytes.Equal(b, img) {
		t.Fatal("the import after freeing space reads back wrong")
	}
}
