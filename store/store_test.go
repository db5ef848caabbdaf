package store

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"testing"
	"time"
)

func newRepo(t *testing.T) (string, *Repo) {
	t.Helper()
	dir := t.TempDir()
	if err := Init(dir); err != nil {
		t.Fatal(err)
	}
	r, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return dir, r
}

// model is an independent in-memory copy of a disk at every point.
type model struct {
	bs     int
	images [][]byte // image after point i
	seqs   []uint64
	times  []time.Time
}

func (m *model) at(seq uint64) []byte {
	img := make([]byte, len(m.images[0]))
	for i, s := range m.seqs {
		if s <= seq {
			img = m.images[i]
		}
	}
	return img
}

func randBlock(rng *rand.Rand, bs int) []byte {
	b := make([]byte, bs)
	switch rng.IntN(4) {
	case 0: // zero
	case 1: // half compressible
		for i := 0; i < bs/2; i++ {
			b[i] = byte(rng.Uint32())
		}
	default:
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
	}
	return b
}

func TestModelRandomPoints(t *testing.T) {
	_, r := newRepo(t)
	const bs, blocks = 4096, 64
	d, err := r.CreateDisk("m", bs*blocks, bs)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	m := &model{bs: bs}
	cur := make([]byte, bs*blocks)
	start := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	// A pool of contents so that blocks repeat across time (dedupe).
	pool := make([][]byte, 20)
	for i := range pool {
		pool[i] = randBlock(rng, bs)
	}
	for p := 0; p < 40; p++ {
		at := start.Add(time.Duration(p) * time.Minute)
		s, err := r.Begin(d.Timeline, at)
		if err != nil {
			t.Fatal(err)
		}
		for w := rng.IntN(20); w >= 0; w-- {
			b := rng.IntN(blocks)
			data := pool[rng.IntN(len(pool))]
			if err := s.Put(d, uint64(b), data); err != nil {
				t.Fatal(err)
			}
			copy(cur[b*bs:], data)
		}
		pt, err := s.Commit()
		if err != nil {
			t.Fatal(err)
		}
		if !pt.Time.Equal(at) {
			t.Fatalf("point time %v, want %v", pt.Time, at)
		}
		m.images = append(m.images, bytes.Clone(cur))
		m.seqs = append(m.seqs, pt.Seq)
		m.times = append(m.times, at)
	}
	check := func(r *Repo) {
		t.Helper()
		for i := 0; i < 60; i++ {
			// A random instant, between or on points.
			at := start.Add(time.Duration(rng.Int64N(int64(41 * time.Minute))))
			pt, err := r.PointAt(d.Timeline, at)
			if err != nil {
				t.Fatalf("PointAt(%v): %v", at, err)
			}
			im, err := r.Image(d, pt.Seq)
			if err != nil {
				t.Fatal(err)
			}
			want := m.at(pt.Seq)
			// Whole image, then random unaligned ranges.
			got := make([]byte, d.Size)
			if n, err := im.ReadAt(got, 0); n != len(got) || (err != nil && err != io.EOF) {
				t.Fatalf("ReadAt: %d, %v", n, err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("image at %v (seq %d) differs from the model", at, pt.Seq)
			}
			off := rng.Int64N(d.Size)
			n := rng.IntN(3*bs) + 1
			buf := make([]byte, n)
			k, err := im.ReadAt(buf, off)
			wantN := min(int64(n), d.Size-off)
			if int64(k) != wantN || !bytes.Equal(buf[:k], want[off:off+wantN]) {
				t.Fatalf("ReadAt(%d bytes at %d) = %d, %v: content differs", n, off, k, err)
			}
			if int64(n) > d.Size-off && err != io.EOF {
				t.Fatalf("short read at the end gave %v, want io.EOF", err)
			}
		}
		if _, err := r.PointAt(d.Timeline, start.Add(-time.Nanosecond)); !errors.Is(err, ErrNoPoint) {
			t.Fatalf("before the first point: %v, want ErrNoPoint", err)
		}
	}
	check(r)
	// The same from a read-only view beside the writer.
	v, err := Open(r.Dir(), Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	check(v)
}

func TestImageStableWhileWriting(t *testing.T) {
	dir, r := newRepo(t)
	d, _ := r.CreateDisk("s", 1<<20, 4096)
	put := func(fill byte) uint64 {
		s, err := r.Begin(d.Timeline, time.Time{})
		if err != nil {
			t.Fatal(err)
		}
		for b := uint64(0); b < d.Blocks(); b++ {
			if err := s.Put(d, b, bytes.Repeat([]byte{fill, byte(b)}, 2048)); err != nil {
				t.Fatal(err)
			}
		}
		p, err := s.Commit()
		if err != nil {
			t.Fatal(err)
		}
		return p.Seq
	}
	first := put(1)
	v, err := Open(dir, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	im, _ := v.Image(d, first)
	before := make([]byte, d.Size)
	im.ReadAt(before, 0)
	for i := 0; i < 5; i++ {
		put(byte(i + 2))
	}
	after := make([]byte, d.Size)
	im.ReadAt(after, 0)
	if !bytes.Equal(before, after) {
		t.Fatal("an open image changed while the writer went on")
	}
	// A newer view shows the same bytes at the old position.
	v2, err := Open(dir, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer v2.Close()
	if v2.Generation() <= v.Generation() || v2.Head() <= v.Head() {
		t.Fatalf("newer view: generation %d head %d, old %d/%d", v2.Generation(), v2.Head(), v.Generation(), v.Head())
	}
	im2, _ := v2.Image(d, first)
	im2.ReadAt(after, 0)
	if !bytes.Equal(before, after) {
		t.Fatal("a newer view shows different bytes at an old position")
	}
}

func TestSecondWriterRefused(t *testing.T) {
	dir, _ := newRepo(t)
	if _, err := Open(dir, Options{}); !errors.Is(err, ErrLocked) {
		t.Fatalf("second writer: %v, want ErrLocked", err)
	}
	if _, err := Open(t.TempDir(), Options{}); !errors.Is(err, ErrNotRepository) {
		t.Fatalf("empty dir: %v, want ErrNotRepository", err)
	}
}

func TestInterruptedStepPurged(t *testing.T) {
	dir := t.TempDir()
	if err := Init(dir); err != nil {
		t.Fatal(err)
	}
	r, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	d, _ := r.CreateDisk("c", 64<<20, 4096)
	rng := rand.New(rand.NewPCG(3, 4))
	s, _ := r.Begin(d.Timeline, time.Time{})
	blk := make([]byte, 4096)
	for b := uint64(0); b < d.Blocks(); b++ { // enough to force intermediate batches
		for i := range blk {
			blk[i] = byte(rng.Uint32())
		}
		if err := s.Put(d, b, blk); err != nil {
			t.Fatal(err)
		}
	}
	// Simulate a crash: close everything without committing the step.
	s.b.Close()
	crash(r)

	r, err = Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if r.Head() != 0 {
		t.Fatalf("head %d after an interrupted first step", r.Head())
	}
	if _, err := r.LastPoint(d.Timeline); !errors.Is(err, ErrNoPoint) {
		t.Fatalf("interrupted step left a point: %v", err)
	}
	n := 0
	r.scan([]byte{kindVersion}, func(k, v []byte) error { n++; return nil })
	if n != 0 {
		t.Fatalf("%d orphan versions survived reopening", n)
	}
	// The next step works and reads back.
	s, err = r.Begin(d.Timeline, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	s.Put(d, 7, bytes.Repeat([]byte{9}, 4096))
	p, err := s.Commit()
	if err != nil || p.Seq != 1 {
		t.Fatalf("commit after recovery: %v, %v", p, err)
	}
	im, _ := r.Image(d, p.Seq)
	got := make([]byte, 4096)
	im.ReadAt(got, 7*4096)
	if !bytes.Equal(got, bytes.Repeat([]byte{9}, 4096)) {
		t.Fatal("block written after recovery reads back wrong")
	}
}

func TestDedupeAndCompression(t *testing.T) {
	_, r := newRepo(t)
	d, _ := r.CreateDisk("x", 8<<20, 4096)
	rng := rand.New(rand.NewPCG(5, 6))
	write := func(blocks [][]byte) {
		s, _ := r.Begin(d.Timeline, time.Time{})
		for i, b := range blocks {
			if err := s.Put(d, uint64(i), b); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := s.Commit(); err != nil {
			t.Fatal(err)
		}
	}
	const n = 1000
	random := make([][]byte, n)
	half := make([][]byte, n)
	for i := range random {
		random[i], half[i] = make([]byte, 4096), make([]byte, 4096)
		for j := range random[i] {
			random[i][j] = byte(rng.Uint32())
		}
		for j := 0; j < 2048; j++ {
			half[i][j] = byte(rng.Uint32())
		}
	}
	c0, _ := r.ContentBytes()
	write(random)
	c1, _ := r.ContentBytes()
	if got, limit := c1-c0, int64(1.1*n*4096); got > limit {
		t.Fatalf("incompressible: stored %d bytes for %d blocks, limit %d", got, n, limit)
	}
	write(random) // the same again: nothing new
	c2, _ := r.ContentBytes()
	if c2 != c1 {
		t.Fatalf("rewriting identical blocks stored %d new bytes", c2-c1)
	}
	write(half)
	c3, _ := r.ContentBytes()
	if got, limit := c3-c2, int64(0.7*n*4096); got > limit {
		t.Fatalf("half-compressible: stored %d bytes, limit %d", got, limit)
	}
}

func TestNamesAndTimeOrder(t *testing.T) {
	_, r := newRepo(t)
	for _, bad := range []string{"", "a/b", "..", ".x", "a b", "x\x01", string(make([]byte, 65))} {
		if _, err := r.CreateDisk(bad, 4096, 4096); !errors.Is(err, ErrBadName) {
			t.Errorf("CreateDisk(%q): %v, want ErrBadName", bad, err)
		}
	}
	d, err := r.CreateDisk("ok-1.x", 4096*4, 4096)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.CreateDisk("ok-1.x", 4096, 4096); !errors.Is(err, ErrDiskExists) {
		t.Fatalf("duplicate disk: %v", err)
	}
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	s, _ := r.Begin(d.Timeline, at)
	if err := s.Put(d, 4, make([]byte, 4096)); !errors.Is(err, ErrOutOfRange) {
		t.Fatalf("write past the end: %v", err)
	}
	s.Commit()
	if _, err := r.Begin(d.Timeline, at); !errors.Is(err, ErrTimeOrder) {
		t.Fatalf("same time again: %v, want ErrTimeOrder", err)
	}
	// Without a time, points still strictly increase.
	var last time.Time
	for i := 0; i < 5; i++ {
		s, _ := r.Begin(d.Timeline, time.Time{})
		p, _ := s.Commit()
		if !p.Time.After(last) {
			t.Fatalf("point time %v not after %v", p.Time, last)
		}
		last = p.Time
	}
	bm, err := r.AddBookmark(d, "before", at.Add(time.Second), KindUser)
	if err != nil || bm.Seq != 1 {
		t.Fatalf("bookmark: %+v %v", bm, err)
	}
	if _, err := r.AddBookmark(d, "early", at.Add(-time.Second), KindUser); !errors.Is(err, ErrNoPoint) {
		t.Fatalf("bookmark before history: %v", err)
	}
}

func TestPointsRange(t *testing.T) {
	_, r := newRepo(t)
	d, _ := r.CreateDisk("p", 4096, 4096)
	t0 := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	for i := 0; i < 5; i++ {
		s, _ := r.Begin(d.Timeline, t0.Add(time.Duration(i)*time.Second))
		if _, err := s.Commit(); err != nil {
			t.Fatal(err)
		}
	}
	all, err := r.Points(d.Timeline, time.Unix(0, 0), time.Unix(0, 1<<63-1), 0)
	if err != nil || len(all) != 5 {
		t.Fatalf("all points: %d, %v", len(all), err)
	}
	mid, _ := r.Points(d.Timeline, t0.Add(time.Second), t0.Add(3*time.Second), 0)
	if len(mid) != 3 || !mid[0].Time.Equal(t0.Add(time.Second)) || !mid[2].Time.Equal(t0.Add(3*time.Second)) {
		t.Fatalf("inclusive range: %+v", mid)
	}
	newest, _ := r.Points(d.Timeline, time.Unix(0, 0), time.Unix(0, 1<<63-1), 2)
	if len(newest) != 2 || newest[1].Seq != 5 || newest[0].Seq != 4 {
		t.Fatalf("newest 2: %+v", newest)
	}
	if p, err := r.PointAt(d.Timeline, time.Unix(0, 1<<63-1)); err != nil || p.Seq != 5 {
		t.Fatalf("PointAt(max): %+v %v", p, err)
	}
}
