package store

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// history writes steps random writes to disk d (a few blocks each: random,
// repeated, compressible and zero content), one minute apart from t0, and
// returns the independent model of every point.
type history struct {
	d      Disk
	images map[uint64][]byte // the whole image after each step, by position
	points []Point
}

func writeHistory(t *testing.T, r *Repo, d Disk, t0 time.Time, steps int, seed uint64) *history {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, 7))
	h := &history{d: d, images: map[uint64][]byte{}}
	img := make([]byte, d.Size)
	var pool [][]byte // content written before, for dedupe
	for i := range steps {
		var ws []BlockWrite
		used := map[uint64]bool{}
		for range 1 + rng.IntN(4) {
			b := uint64(rng.IntN(int(d.Blocks())))
			if used[b] {
				continue
			}
			used[b] = true
			data := make([]byte, d.BlockSize)
			switch rng.IntN(6) {
			case 0: // zeros
			case 1:
				if len(pool) > 0 {
					copy(data, pool[rng.IntN(len(pool))])
					break
				}
				fallthrough
			case 2: // compressible
				for j := range data {
					data[j] = byte('a' + (j/64+i)%7)
				}
			default:
				for j := range data {
					data[j] = byte(rng.Uint32())
				}
			}
			pool = append(pool, data)
			copy(img[int(b)*d.BlockSize:], data)
			ws = append(ws, BlockWrite{Disk: d, Block: b, Data: data})
		}
		p, err := r.CaptureAt(d.Timeline, t0.Add(time.Duration(i)*time.Minute), ws)
		if err != nil {
			t.Fatal(err)
		}
		h.images[p.Seq] = bytes.Clone(img)
		h.points = append(h.points, p)
	}
	if err := r.Sync(); err != nil {
		t.Fatal(err)
	}
	return h
}

// checkImage reads d at pos from r and compares it with want.
func checkImage(t *testing.T, r *Repo, d Disk, pos uint64, want []byte) {
	t.Helper()
	im, err := r.Image(d, pos)
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, d.Size)
	if _, err := im.ReadAt(got, 0); err != nil {
		t.Fatalf("read %s at %d: %v", d.Name, pos, err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("image of %s at %d differs from the model", d.Name, pos)
	}
}

func verifyClean(t *testing.T, r *Repo) {
	t.Helper()
	rep, err := r.Verify(context.Background(), VerifyOptions{Full: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Problems) > 0 {
		t.Fatalf("verify --full: %+v", rep.Problems)
	}
}

// storedBytes is the stored size of every content the index holds.
func storedBytes(t *testing.T, r *Repo) int64 {
	t.Helper()
	var n int64
	if err := r.scan([]byte{kindHash}, func(_, v []byte) error {
		loc, err := decodeLocation(v)
		n += int64(loc.n)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return n
}

func dirBytes(t *testing.T, dir string) int64 {
	t.Helper()
	var n int64
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		fi, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		n += fi.Size()
	}
	return n
}

// TestPruneAndCollect prunes a history to every tenth point, a bookmark and
// a clone's base, and checks every kept instant, where the removed ones
// resolve, the index (verify --full), and that gc gives back the space of
// what no kept instant shows.
func TestPruneAndCollect(t *testing.T) {
	dir, r := newRepo(t)
	d, err := r.CreateDisk("web", 256*4096, 4096)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	h := writeHistory(t, r, d, t0, 400, 1)
	bm, err := r.AddBookmark(d, "mid", h.points[123].Time, KindUser)
	if err != nil {
		t.Fatal(err)
	}
	clone, err := r.CloneDisk("web-clone", d, h.points[77].Seq)
	if err != nil {
		t.Fatal(err)
	}
	var keep []uint64
	kept := map[uint64]bool{bm.Seq: true, h.points[77].Seq: true, h.points[len(h.points)-1].Seq: true}
	for i := 0; i < len(h.points); i += 10 {
		keep = append(keep, h.points[i].Seq)
		kept[h.points[i].Seq] = true
	}
	before := storedBytes(t, r)

	dry, err := r.Prune(context.Background(), d.Timeline, PruneOptions{Keep: keep, DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	res, err := r.Prune(context.Background(), d.Timeline, PruneOptions{Keep: keep})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Points) != len(h.points)-len(kept) || res.Kept != len(kept) {
		t.Fatalf("removed %d points, kept %d; want %d and %d", len(res.Points), res.Kept, len(h.points)-len(kept), len(kept))
	}
	if dry.Versions != res.Versions || dry.FreedBytes != res.FreedBytes || len(dry.Points) != len(res.Points) {
		t.Fatalf("dry run said %d versions, %d bytes, %d points; the prune did %d, %d, %d",
			dry.Versions, dry.FreedBytes, len(dry.Points), res.Versions, res.FreedBytes, len(res.Points))
	}
	if res.Versions == 0 || res.FreedBytes == 0 {
		t.Fatalf("nothing collapsed: %+v", res)
	}
	checkAll := func() {
		t.Helper()
		for _, p := range h.points {
			got, err := r.PointAt(d.Timeline, p.Time)
			if err != nil {
				t.Fatal(err)
			}
			// The kept point at or before p.
			want := p.Seq
			for i := len(h.points) - 1; i >= 0; i-- {
				if q := h.points[i]; q.Seq <= p.Seq && kept[q.Seq] {
					want = q.Seq
					break
				}
			}
			if got.Seq != want {
				t.Fatalf("instant %s resolves to %d, want the kept point %d", p.Time, got.Seq, want)
			}
			if kept[p.Seq] {
				checkImage(t, r, d, p.Seq, h.images[p.Seq])
			}
		}
		checkImage(t, r, clone, r.Head(), h.images[h.points[77].Seq])
		verifyClean(t, r)
	}
	checkAll()

	// A second prune with the same keep set has nothing left to do.
	again, err := r.Prune(context.Background(), d.Timeline, PruneOptions{Keep: keep})
	if err != nil || len(again.Points) != 0 || again.Versions != 0 {
		t.Fatalf("second prune: %+v, %v", again, err)
	}

	gc, err := r.Collect(context.Background(), GCOptions{MaxUnused: 0.01})
	if err != nil {
		t.Fatal(err)
	}
	if gc.FreedBytes != res.FreedBytes || gc.Rewritten == 0 || gc.Reclaimed == 0 {
		t.Fatalf("gc %+v after a prune that freed %d bytes", gc, res.FreedBytes)
	}
	checkAll()
	after := storedBytes(t, r)
	if after != before-res.FreedBytes {
		t.Fatalf("stored content %d after gc, want %d - %d", after, before, res.FreedBytes)
	}
	// The segments hold the live content, and little else (frames' headers
	// of steps written since are none here: gc copies bare content).
	if got := dirBytes(t, filepath.Join(dir, "segments")); got > after+after/10+4096 {
		t.Fatalf("segments hold %d bytes for %d of live content", got, after)
	}

	// Reopened, the relocated content reads the same, and a view too.
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if r, err = Open(dir, Options{}); err != nil {
		t.Fatal(err)
	}
	checkAll()
	v, err := Open(dir, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	checkImage(t, v, d, bm.Seq, h.images[bm.Seq])
	if _, err := RebuildIndex(dir, Options{}); err == nil {
		t.Fatal("the index was rebuilt from logs that gc rewrote")
	}
}

// TestCollectKeepsWhatOldViewsRead: a reader that opened a view before the
// prune reads a removed instant exactly while gc runs; the old segment's
// file goes only once that reader is gone.
func TestCollectKeepsWhatOldViewsRead(t *testing.T) {
	dir, r := newRepo(t)
	d, err := r.CreateDisk("db", 64*4096, 4096)
	if err != nil {
		t.Fatal(err)
	}
	h := writeHistory(t, r, d, time.Date(2026, 10, 1, 0, 0, 0, 0, time.UTC), 120, 2)
	if err := r.Publish(); err != nil {
		t.Fatal(err)
	}
	old, err := Open(dir, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	thinned := h.points[50].Seq
	last := h.points[len(h.points)-1].Seq
	if _, err := r.Prune(context.Background(), d.Timeline, PruneOptions{Keep: []uint64{h.points[0].Seq}}); err != nil {
		t.Fatal(err)
	}
	gc, err := r.Collect(context.Background(), GCOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if gc.Held == 0 {
		t.Fatalf("gc removed a segment a reader of an older view holds: %+v", gc)
	}
	checkImage(t, old, d, thinned, h.images[thinned])
	checkImage(t, r, d, last, h.images[last])
	if err := old.Close(); err != nil {
		t.Fatal(err)
	}
	gc, err = r.Collect(context.Background(), GCOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if gc.Held != 0 || gc.Reclaimed == 0 {
		t.Fatalf("gc after the reader left: %+v", gc)
	}
	checkImage(t, r, d, last, h.images[last])
	verifyClean(t, r)
}

// TestPruneRefusesPinned: a pinned bookmark is never dropped, and its instant
// stays exact whatever Keep says.
func TestPruneRefusesPinned(t *testing.T) {
	_, r := newRepo(t)
	d, err := r.CreateDisk("app", 32*4096, 4096)
	if err != nil {
		t.Fatal(err)
	}
	h := writeHistory(t, r, d, time.Date(2026, 9, 1, 0, 0, 0, 0, time.UTC), 60, 3)
	bm, err := r.Mark(d, Bookmark{Name: "keep-forever", Time: h.points[20].Time, Kind: KindUser, Pinned: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Prune(context.Background(), d.Timeline, PruneOptions{DropBookmarks: []string{"keep-forever"}}); err == nil {
		t.Fatal("a pinned bookmark was dropped")
	}
	if _, err := r.Prune(context.Background(), d.Timeline, PruneOptions{}); err != nil {
		t.Fatal(err)
	}
	pts, err := r.Points(d.Timeline, h.points[0].Time, h.points[len(h.points)-1].Time, 0)
	if err != nil {
		t.Fatal(err)
	}
	seqs := []uint64{}
	for _, p := range pts {
		seqs = append(seqs, p.Seq)
	}
	slices.Sort(seqs)
	if !slices.Equal(seqs, []uint64{bm.Seq, h.points[len(h.points)-1].Seq}) {
		t.Fatalf("points after pruning to nothing: %v; want the pinned bookmark's %d and the newest", seqs, bm.Seq)
	}
	checkImage(t, r, d, bm.Seq, h.images[bm.Seq])
	if _, err := r.Bookmark(d, "keep-forever"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Prune(context.Background(), 999, PruneOptions{}); !errors.Is(err, ErrUnknownDisk) {
		t.Fatalf("prune of no timeline: %v", err)
	}
	verifyClean(t, r)
}

// TestPruneKeepsHeld: a stream's hold (Hold) keeps every point after its
// position from a prune that keeps nothing else, and other points go;
// once released they go too.
func TestPruneKeepsHeld(t *testing.T) {
	_, r := newRepo(t)
	d, err := r.CreateDisk("web", 1<<20, 4096)
	if err != nil {
		t.Fatal(err)
	}
	h := writeHistory(t, r, d, time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), 20, 3)
	held := h.points[9].Seq
	r.Hold(d.Timeline, "replicate web", held)
	if _, err := r.Prune(context.Background(), d.Timeline, PruneOptions{}); err != nil {
		t.Fatal(err)
	}
	pts, err := r.Points(d.Timeline, time.Time{}, time.Now(), 0)
	if err != nil {
		t.Fatal(err)
	}
	var want []Point
	for _, p := range h.points {
		if p.Seq > held {
			want = append(want, p)
		}
	}
	if len(pts) != len(want) {
		t.Fatalf("held after position %d: %d points remain, want the %d after it", held, len(pts), len(want))
	}
	for i, p := range pts {
		if p.Seq != want[i].Seq || !p.Time.Equal(want[i].Time) {
			t.Fatalf("point %d is %+v, want %+v", i, p, want[i])
		}
		im, err := r.Image(d, p.Seq)
		if err != nil {
			t.Fatal(err)
		}
		got := make([]byte, d.Size)
		if _, err := im.ReadAt(got, 0); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, h.images[p.Seq]) {
			t.Fatalf("held point %d reads otherwise after the prune", p.Seq)
		}
	}
	r.Release(d.Timeline, "replicate web")
	if _, err := r.Prune(context.Background(), d.Timeline, PruneOptions{}); err != nil {
		t.Fatal(err)
	}
	if pts, _ = r.Points(d.Timeline, time.Time{}, time.Now(), 0); len(pts) != 1 {
		t.Fatalf("released: %d points remain, want the newest alone", len(pts))
	}
}
