package store

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// StreamAfter beside retention and gc, on damaged content, and on clones.

// pruneEvery keeps every k-th point of x (and what Prune keeps itself).
func pruneEvery(t *testing.T, r *Repo, tl uint32, k int) PruneResult {
	t.Helper()
	var keep []uint64
	for i, p := range repPoints(t, r, tl) {
		if i%k == 0 {
			keep = append(keep, p.Seq)
		}
	}
	res, err := r.Prune(context.Background(), tl, PruneOptions{Keep: keep})
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// TestReplicaAfterPrune: after the source thinned its points, StreamAfter
// gives one step per remaining point, a replica built from the pruned
// source (after gc moved its content) equals it at every remaining point,
// and a replica that had part of the history before the prune resumes
// into the same images.
func TestReplicaAfterPrune(t *testing.T) {
	_, src := newRepo(t)
	g := newRepGen(3)
	x := newReplTL(t, src, "web", 32*4096)
	x.writeSteps(t, src, g, 160)
	bookmarkSome(t, src, x, g, 150, "p")
	_, early := newRepo(t)
	se := newRepSender(t, src, early, x, "site-a")
	se.counts = false
	if err := se.run(61); !errors.Is(err, errRepStop) {
		t.Fatal(err)
	}
	res := pruneEvery(t, src, x.tl, 5)
	left := repPoints(t, src, x.tl)
	if len(res.Points) == 0 || res.Versions == 0 || len(left) != 160-len(res.Points) {
		t.Fatalf("prune removed %d points and %d versions, %d left: no thinning to test", len(res.Points), res.Versions, len(left))
	}
	var got []Point
	if err := src.StreamAfter(context.Background(), x.tl, time.Time{}, src.Durable(), func(st *StreamStep) error {
		got = append(got, st.Point)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, left) {
		t.Fatalf("the stream gave %d steps for %d points left", len(got), len(left))
	}
	// gc rewrites the segments pruning emptied: the stream then reads
	// content where gc moved it.
	gc, err := src.Collect(context.Background(), GCOptions{MaxUnused: 0.01})
	if err != nil || gc.Rewritten == 0 {
		t.Fatalf("gc rewrote %d segments: %v", gc.Rewritten, err)
	}
	_, dst := newRepo(t)
	s := newRepSender(t, src, dst, x, "site-a")
	s.counts = false
	if err := s.run(-1); err != nil {
		t.Fatal(err)
	}
	s.check()
	if s.moved == 0 {
		t.Fatal("no content sent lay where gc had moved it from")
	}
	// The early replica has points the source no longer has: after it
	// resumes, every point of the source after its position is on it,
	// equal, and its older points still equal the model.
	pos, _ := early.ReplicaPosition(se.dtl)
	if err := se.run(-1); err != nil {
		t.Fatal(err)
	}
	se.checkModel()
	have := map[time.Time]bool{}
	for _, p := range repPoints(t, early, se.dtl) {
		have[p.Time] = true
	}
	for _, p := range left {
		if p.Time.After(pos) && !have[p.Time] {
			t.Fatalf("the resumed replica lacks the source's point %v", p.Time)
		}
	}
}

// TestStreamAfterPruneBeside: a prune that removes points while a stream
// is under way (retention running beside replication) never makes the
// stream give an instant that did not exist: every step it gives shows,
// once applied, what the source showed at that time.
func TestStreamAfterPruneBeside(t *testing.T) {
	_, src := newRepo(t)
	g := newRepGen(4)
	x := newReplTL(t, src, "web", 16*4096)
	x.writeSteps(t, src, g, 120)
	_, dst := newRepo(t)
	s := newRepSender(t, src, dst, x, "site-a")
	s.counts, s.batch = false, 1
	s.onStep = func(n int) {
		if n == 10 {
			pruneEvery(t, src, x.tl, 6)
		}
	}
	if err := s.run(-1); err != nil {
		t.Fatal(err)
	}
	s.checkModel()
}

// TestReplicaStoredContentDamaged: content of captured and imported steps,
// raw and compressed, with one byte flipped in its segment file, is an
// error that errors.Is ErrCorrupt, never data; undamaged content reads.
func TestReplicaStoredContentDamaged(t *testing.T) {
	dir, r := newRepo(t)
	g := newRepGen(5)
	x := newReplTL(t, r, "web", 32*4096)
	for range 30 {
		x.capture(t, r, g)
	}
	x.importAll(t, r, g)
	if err := r.Sync(); err != nil {
		t.Fatal(err)
	}
	blocks := func(r *Repo) map[[2]uint64]StreamBlock {
		out := map[[2]uint64]StreamBlock{}
		if err := r.StreamAfter(context.Background(), x.tl, time.Time{}, r.Head(), func(st *StreamStep) error {
			for _, b := range st.Blocks {
				if b.Hash != (Hash{}) {
					out[[2]uint64{st.Point.Seq, b.Block}] = b
				}
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return out
	}
	// One of each: captured raw, captured zstd, imported raw, imported zstd.
	importSeq := r.Head()
	all := blocks(r)
	damaged := map[[2]uint64]bool{}
	kinds := map[[2]bool]bool{}
	for k, b := range all {
		kind := [2]bool{k[0] == importSeq, b.loc.flags&flagZstd != 0}
		if kinds[kind] || seenHash(damaged, all, b.Hash) {
			continue
		}
		kinds[kind] = true
		damaged[k] = true
	}
	if len(kinds) != 4 {
		t.Fatalf("found %d of the 4 kinds of content", len(kinds))
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	for k := range damaged {
		b := all[k]
		f, err := os.OpenFile(filepath.Join(dir, "segments", segmentName(b.loc.seg)), os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		one := make([]byte, 1)
		off := int64(b.loc.off) + int64(b.loc.n)/2
		f.ReadAt(one, off)
		one[0] ^= 0x10
		if _, err := f.WriteAt(one, off); err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	r = reopen(t, dir)
	for k, b := range blocks(r) {
		stored, _, err := r.StoredContent(b, 4096)
		switch {
		case damaged[k] && (!errors.Is(err, ErrCorrupt) || stored != nil):
			t.Fatalf("damaged content of block %d at %d: %d bytes, %v", k[1], k[0], len(stored), err)
		case !damaged[k] && !seenHash(damaged, all, b.Hash) && err != nil:
			t.Fatalf("content of block %d at %d: %v", k[1], k[0], err)
		}
	}
}

// seenHash reports whether a block of marked holds content h.
func seenHash(marked map[[2]uint64]bool, blocks map[[2]uint64]StreamBlock, h Hash) bool {
	for k := range marked {
		if blocks[k].Hash == h {
			return true
		}
	}
	return false
}

// TestStreamAfterRefusesClone: a clone's journal lacks its base's content,
// so streaming it (or reverting it for a failback) is refused, not turned
// into a replica that shows other images.
func TestStreamAfterRefusesClone(t *testing.T) {
	_, r := newRepo(t)
	g := newRepGen(9)
	x := newReplTL(t, r, "web", 8*4096)
	x.writeSteps(t, r, g, 5)
	c, err := r.CloneDisk("c", x.disks[0], r.Head())
	if err != nil {
		t.Fatal(err)
	}
	if err := r.CaptureAsync(c.Timeline, []BlockWrite{{Disk: c, Block: 0, Data: block(1)}}); err != nil {
		t.Fatal(err)
	}
	if err := r.Sync(); err != nil {
		t.Fatal(err)
	}
	calls := 0
	err = r.StreamAfter(context.Background(), c.Timeline, time.Time{}, r.Head(), func(*StreamStep) error { calls++; return nil })
	if err == nil || calls > 0 {
		t.Fatalf("streaming a clone: %d steps, %v", calls, err)
	}
	p, _ := r.FirstPoint(c.Timeline)
	if err := r.AcceptFailback(context.Background(), "c", "site-b", p.Time, time.Now().Add(time.Hour)); err == nil {
		t.Fatal("a clone accepted a failback")
	}
}
