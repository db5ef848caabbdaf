package tests

import (
	"crypto/sha256"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

func hashFile(t *testing.T, path string) [32]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	var sum [32]byte
	copy(sum[:], h.Sum(nil))
	return sum
}

// TestInstantStableUnderImports: an instant's image, read through the mount
// while another process imports, hashes the same before, during and after;
// the tree answers promptly meanwhile and shows the new points afterwards.
func TestInstantStableUnderImports(t *testing.T) {
	t.Parallel()
	repo := newRepo(t)
	ok(t, "--repo", repo, "disk", "create", "c", "--size", "32M")
	rng := rand.New(rand.NewPCG(51, 52))
	img := make([]byte, 32<<20)
	mutate(rng, img, 500)
	file := filepath.Join(t.TempDir(), "img")
	os.WriteFile(file, img, 0o600)
	ok(t, "--repo", repo, "import", "c", file, "--at", "2026-11-25T10:00:00Z")
	mnt := mountRepo(t, repo)
	instant := filepath.Join(mnt, "c", "20261125T100000Z", "c-flat.vmdk")
	want := hashFile(t, instant)
	latestFile, err := os.Open(filepath.Join(mnt, "c", "latest", "c-flat.vmdk"))
	if err != nil {
		t.Fatal(err)
	}
	defer latestFile.Close()

	var wg sync.WaitGroup
	done := make(chan struct{})
	wg.Add(1)
	go func() { // the writer: a second process importing new points
		defer wg.Done()
		defer close(done)
		f2 := filepath.Join(t.TempDir(), "img2")
		for i := 0; i < 5; i++ {
			mutate(rng, img, 2000)
			os.WriteFile(f2, img, 0o600)
			if r := hs(t, "--repo", repo, "import", "c", f2); r.code != 0 {
				t.Errorf("import %d: exit %d: %s", i, r.code, r.stderr)
				return
			}
		}
	}()
	reads := 0
	for running := true; running; reads++ {
		select {
		case <-done:
			running = false
		default:
		}
		start := time.Now()
		if _, err := os.ReadDir(filepath.Join(mnt, "c")); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("listing took %v during an import", d)
		}
		if got := hashFile(t, instant); got != want {
			t.Fatalf("instant changed during imports (read %d)", reads)
		}
		h := sha256.New()
		if _, err := io.Copy(h, io.NewSectionReader(latestFile, 0, 32<<20)); err != nil {
			t.Fatal(err)
		}
		if [32]byte(h.Sum(nil)) != want {
			t.Fatal("an open file of the old latest changed during imports")
		}
	}
	wg.Wait()
	if got := hashFile(t, instant); got != want {
		t.Fatal("instant changed after imports")
	}
	if got := hashFile(t, filepath.Join(mnt, "c", "latest", "c-flat.vmdk")); got == want {
		t.Fatal("latest did not move to the newest import")
	}
	t.Logf("%d reads of the instant during the imports", reads)
}
