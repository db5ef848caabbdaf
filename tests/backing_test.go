package tests

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestTapBackingResync: with --backing the real disk stays primary and each
// write is mirrored into the journal; after a kill and writes that reached
// only the backing disk, the resync point makes journal and backing equal.
func TestTapBackingResync(t *testing.T) {
	t.Parallel()
	needRoot(t)
	repo := newRepo(t)
	const size = 4 << 20
	ok(t, "--repo", repo, "disk", "create", "b", "--size", "4M")
	rng := rand.New(rand.NewPCG(101, 102))
	disk := make([]byte, size)
	for i := 0; i < size/2; i++ {
		disk[i] = byte(rng.Uint32())
	}
	backing := filepath.Join(t.TempDir(), "backing.img")
	os.WriteFile(backing, disk, 0o600)

	img, p := protect(t, repo, "b", "--backing", backing)
	f, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, size)
	if _, err := f.ReadAt(got, 0); err != nil || !bytes.Equal(got, disk) {
		t.Fatalf("reads through the tap do not show the backing disk: %v", err)
	}
	for i := 0; i < 50; i++ {
		off := int64(rng.IntN(size/4096)) * 4096
		blk := bytes.Repeat([]byte{byte(i + 1)}, 4096)
		if _, err := f.WriteAt(blk, off); err != nil {
			t.Fatal(err)
		}
		copy(disk[off:], blk)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	acked := time.Now().UTC()
	if b, _ := os.ReadFile(backing); !bytes.Equal(b, disk) {
		t.Fatal("the backing disk does not hold the writes")
	}
	p.kill()
	f.Close()

	// The journal at the moment of the fsync holds every acknowledged write.
	out := filepath.Join(t.TempDir(), "at-fsync")
	ok(t, "--repo", repo, "export", "b", "--at", acked.Format(time.RFC3339Nano), "--out", out)
	if b, _ := os.ReadFile(out); !bytes.Equal(b, disk) {
		t.Fatal("the journal lacks writes acknowledged before the kill")
	}

	// Writes that reached the backing disk but not the journal.
	bf, _ := os.OpenFile(backing, os.O_RDWR, 0)
	for i := 0; i < 7; i++ {
		off := int64(rng.IntN(size/4096)) * 4096
		blk := bytes.Repeat([]byte{0xee, byte(i)}, 2048)
		bf.WriteAt(blk, off)
		copy(disk[off:], blk)
	}
	bf.Close()

	protect(t, repo, "b", "--backing", backing)
	var bms []struct {
		Name string `json:"name"`
		Kind string `json:"kind"`
	}
	json.Unmarshal([]byte(ok(t, "--repo", repo, "--json", "bookmarks", "b")), &bms)
	resyncs := 0
	for _, bm := range bms {
		if strings.HasPrefix(bm.Name, "resync-") && bm.Kind == "resync" {
			resyncs++
		}
	}
	if resyncs != 2 { // the first start (all data new to the journal) and the one after the kill
		t.Fatalf("bookmarks %+v: want two resync points", bms)
	}
	newest := filepath.Join(t.TempDir(), "newest")
	ok(t, "--repo", repo, "export", "b", "--out", newest)
	if b, _ := os.ReadFile(newest); !bytes.Equal(b, disk) {
		t.Fatal("after the resync the journal's newest instant differs from the backing disk")
	}
}
