package store

import (
	"maps"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

func randHash(rng *rand.Rand) Hash {
	var h Hash
	for i := range h {
		h[i] = byte(rng.Uint32())
	}
	return h
}

// TestKnownHashes: every added hash is held through the filter's growth, a
// "no" comes only once the index's hashes are in, and hashes never added
// are mostly refused.
func TestKnownHashes(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	k := newKnownHashes()
	const n = 5 * bloomFirst // grows into three parts
	added := make([]Hash, n)
	for i := range added {
		added[i] = randHash(rng)
		k.add(added[i])
	}
	if len(k.parts) != 3 {
		t.Fatalf("%d hashes in %d parts, want 3", n, len(k.parts))
	}
	if !k.mayHold(randHash(rng)) {
		t.Fatal("a filter not built from the index refused a hash")
	}
	scanned := []*hashBloom{newBloom(1000)}
	old := randHash(rng)
	scanned = addTo(scanned, &old)
	k.adopt(scanned)
	<-k.built
	for i, h := range append(added, old) {
		if !k.mayHold(h) {
			t.Fatalf("hash %d was added but is refused", i)
		}
	}
	hits := 0
	for range n {
		if k.mayHold(randHash(rng)) {
			hits++
		}
	}
	// Each full part errs on under 1% of hashes.
	if rate := float64(hits) / n; rate > 0.02 {
		t.Fatalf("%.2f%% of unknown hashes may be held, want under 2%%", 100*rate)
	}
	t.Logf("false hits %.3f%% over %d parts", 100*float64(hits)/n, len(k.parts))
}

// TestKnownHashesFromIndex: a writer opening a repository learns every
// content hash its index holds (imported and flushed to a table, captured,
// replayed from the log), so dedupe holds across a restart.
func TestKnownHashesFromIndex(t *testing.T) {
	dir, r := newRepo(t)
	d, _ := r.CreateDisk("k", 1<<20, 4096)
	rng := rand.New(rand.NewPCG(3, 4))
	var blocks [][]byte
	s, _ := r.Begin(d.Timeline, time.Time{})
	for i := range 64 { // imported
		blocks = append(blocks, randBlock(rng, 4096))
		if err := s.Put(d, uint64(i), blocks[i]); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := r.db.Flush(); err != nil { // these hashes from a table, the rest from the log
		t.Fatal(err)
	}
	for i := 64; i < 128; i++ { // captured; half synced, half replayed after a kill
		blocks = append(blocks, randBlock(rng, 4096))
		if err := r.CaptureAsync(d.Timeline, []BlockWrite{{d, uint64(i), blocks[i]}}); err != nil {
			t.Fatal(err)
		}
		if i == 95 || i == 127 {
			if err := r.Sync(); err != nil {
				t.Fatal(err)
			}
		}
	}
	crash(r)
	r, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	<-r.known.built
	for i, b := range blocks {
		if !IsZero(b) && !r.known.mayHold(HashBlock(b)) {
			t.Fatalf("block %d's content is indexed but unknown to the filter", i)
		}
	}
	before := hashIndex(t, r)
	for i, b := range blocks { // the same content again, elsewhere: nothing new
		if err := r.CaptureAsync(d.Timeline, []BlockWrite{{d, uint64(128 + i), b}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.Sync(); err != nil {
		t.Fatal(err)
	}
	// Content stored again would be indexed at its new place.
	if after := hashIndex(t, r); !maps.Equal(after, before) {
		t.Fatalf("rewriting known content after a restart changed the content index: %d hashes, then %d", len(before), len(after))
	}
}

// hashIndex is the index's content hashes and where their content lies.
func hashIndex(t *testing.T, r *Repo) map[string]string {
	it, err := r.db.NewIter(&pebble.IterOptions{LowerBound: []byte{kindHash}, UpperBound: []byte{kindHash + 1}})
	if err != nil {
		t.Fatal(err)
	}
	defer it.Close()
	m := map[string]string{}
	for it.First(); it.Valid(); it.Next() {
		m[string(it.Key())] = string(it.Value())
	}
	return m
}
