package tests

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// history is an independent model of a disk: the image after each point.
type history struct {
	times  []time.Time
	images [][]byte
}

// at is the model image at instant t (nil before the first point).
func (h *history) at(t time.Time) []byte {
	var img []byte
	for i, pt := range h.times {
		if !pt.After(t) {
			img = h.images[i]
		}
	}
	return img
}

// mutate changes random byte ranges of img (some unaligned, some zeroing).
func mutate(rng *rand.Rand, img []byte, writes int) {
	for i := 0; i < writes; i++ {
		off := rng.IntN(len(img))
		n := min(rng.IntN(3*4096)+1, len(img)-off)
		zero := rng.IntN(5) == 0
		for j := off; j < off+n; j++ {
			if zero {
				img[j] = 0
			} else {
				img[j] = byte(rng.Uint32())
			}
		}
	}
}

// importPoints builds points of disk from model images through the CLI.
func importPoints(t *testing.T, repo, disk string, rng *rand.Rand, size int, start time.Time, n int) *history {
	t.Helper()
	h := &history{}
	img := make([]byte, size)
	file := filepath.Join(t.TempDir(), "img")
	for i := 0; i < n; i++ {
		mutate(rng, img, 1+rng.IntN(40))
		if err := os.WriteFile(file, img, 0o600); err != nil {
			t.Fatal(err)
		}
		at := start.Add(time.Duration(i)*time.Minute + time.Duration(rng.IntN(1e9)))
		ok(t, "--repo", repo, "import", disk, file, "--at", at.Format(time.RFC3339Nano))
		h.times = append(h.times, at)
		h.images = append(h.images, bytes.Clone(img))
	}
	return h
}

// TestImportModel: images imported over many points read back, at random
// instants and in every time form, exactly as the model says.
func TestImportModel(t *testing.T) {
	t.Parallel()
	repo := newRepo(t)
	const size = 4 << 20
	ok(t, "--repo", repo, "disk", "create", "m", "--size", "4M")
	rng := rand.New(rand.NewPCG(11, 12))
	start := time.Date(2026, 11, 25, 9, 0, 0, 0, time.UTC)
	h := importPoints(t, repo, "m", rng, size, start, 12)
	out := t.TempDir()
	forms := []func(time.Time) string{
		func(t time.Time) string { return t.Format(time.RFC3339Nano) },
		func(t time.Time) string { return t.In(time.FixedZone("x", 5*3600+1800)).Format(time.RFC3339Nano) },
		func(t time.Time) string { return t.UTC().Format("20060102T150405.999999999Z") },
		func(t time.Time) string { return fmt.Sprintf("@%d.%09d", t.Unix(), t.Nanosecond()) },
	}
	for i := 0; i < 16; i++ {
		at := h.times[0].Add(time.Duration(rng.Int64N(int64(13 * time.Minute))))
		if i < len(h.times) && i%3 == 0 {
			at = h.times[i] // exactly on a point
		}
		spec := forms[i%len(forms)](at)
		file := filepath.Join(out, fmt.Sprintf("e%d.raw", i))
		ok(t, "--repo", repo, "export", "m", "--at", spec, "--out", file)
		got, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, h.at(at)) {
			t.Fatalf("export at %s differs from the model", spec)
		}
	}
	// Before the first point there is nothing to export.
	r := hs(t, "--repo", repo, "export", "m", "--at", start.Add(-time.Second).Format(time.RFC3339), "--out", filepath.Join(out, "none"))
	if r.code != 3 || !strings.Contains(r.stderr, "no point") {
		t.Fatalf("export before the first point: exit %d, %q", r.code, r.stderr)
	}
}

// TestImportStoresOnlyChanges: the same image twice stores nothing new, and
// a few changed blocks cost about their own size.
func TestImportStoresOnlyChanges(t *testing.T) {
	t.Parallel()
	repo := newRepo(t)
	ok(t, "--repo", repo, "disk", "create", "d", "--size", "16M")
	rng := rand.New(rand.NewPCG(21, 22))
	img := make([]byte, 16<<20)
	for i := range img[:8<<20] {
		img[i] = byte(rng.Uint32())
	}
	file := filepath.Join(t.TempDir(), "img")
	os.WriteFile(file, img, 0o600)
	ok(t, "--repo", repo, "import", "d", file)
	c1 := contentBytes(t, repo)
	ok(t, "--repo", repo, "import", "d", file)
	if c2 := contentBytes(t, repo); c2 != c1 {
		t.Fatalf("importing the same image again stored %d bytes", c2-c1)
	}
	const changed = 100 // random 4 KiB blocks
	for i := 0; i < changed; i++ {
		b := rng.IntN(len(img) / 4096)
		for j := b * 4096; j < (b+1)*4096; j++ {
			img[j] = byte(rng.Uint32())
		}
	}
	os.WriteFile(file, img, 0o600)
	out := ok(t, "--repo", repo, "--json", "import", "d", file)
	if !strings.Contains(out, `"blocks_changed"`) {
		t.Fatalf("import --json: %s", out)
	}
	c3 := contentBytes(t, repo)
	if grown := c3 - c1; grown > int64(1.1*changed*4096) {
		t.Fatalf("%d changed blocks grew the content by %d bytes", changed, grown)
	}
}

func contentBytes(t *testing.T, repo string) int64 {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(repo, "segments"))
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, e := range ents {
		fi, _ := e.Info()
		n += fi.Size()
	}
	return n
}
