package store

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"sync"
	"testing"
	"time"
)

// TestCaptureAsyncModel queues random writes (zero blocks among them) to the
// two disks of a group, reads the newest state at random while they are
// journaled behind, and afterwards finds every step at its place in the
// journal order with its own image, against an independent model.
func TestCaptureAsyncModel(t *testing.T) {
	_, r := newRepo(t)
	g, err := r.CreateGroup("g", nil)
	if err != nil {
		t.Fatal(err)
	}
	var disks []Disk
	for _, n := range []string{"a", "b"} {
		r.CreateDisk(n, 64*4096, 4096)
		if _, err := r.JoinGroup(g.Name, n); err != nil {
			t.Fatal(err)
		}
		d, _ := r.Disk(n)
		disks = append(disks, d)
	}
	tl := disks[0].Timeline
	rng := rand.New(rand.NewPCG(5, 6))
	cur := [][]byte{make([]byte, 64*4096), make([]byte, 64*4096)}
	var after [][2][]byte // the model after each queued step, in queue order
	start := r.Head()
	for i := 0; i < 400; i++ {
		k := rng.IntN(2)
		d := disks[k]
		first, n := uint64(rng.IntN(60)), 1+rng.IntN(4)
		var ws []BlockWrite
		for b := first; b < first+uint64(n); b++ {
			w := BlockWrite{Disk: d, Block: b}
			if rng.IntN(5) > 0 {
				w.Data = randBlock(rng, 4096)
				copy(cur[k][b*4096:], w.Data)
			} else {
				clear(cur[k][b*4096 : (b+1)*4096])
			}
			ws = append(ws, w)
		}
		if err := r.CaptureAsync(tl, ws); err != nil {
			t.Fatal(err)
		}
		for _, w := range ws { // the caller's buffers are its own again
			if w.Data != nil {
				clear(w.Data)
			}
		}
		after = append(after, [2][]byte{bytes.Clone(cur[0]), bytes.Clone(cur[1])})
		if rng.IntN(4) == 0 {
			k := rng.IntN(2)
			off := int64(rng.IntN(64*4096 - 1))
			got := make([]byte, 1+rng.IntN(int(64*4096-off)))
			if _, err := r.ReadNewest(disks[k], got, off); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, cur[k][off:off+int64(len(got))]) {
				t.Fatalf("step %d: newest state of %s at %d reads back wrong", i, disks[k].Name, off)
			}
		}
		if rng.IntN(50) == 0 {
			if err := r.Sync(); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := r.Sync(); err != nil {
		t.Fatal(err)
	}
	if got := r.Head() - start; got != uint64(len(after)) {
		t.Fatalf("%d steps journaled for %d queued", got, len(after))
	}
	pts, err := r.Points(tl, time.Time{}, time.Now().Add(time.Hour), 0)
	if err != nil {
		t.Fatal(err)
	}
	pts = pts[len(pts)-len(after):]
	for i, p := range pts {
		if p.Seq != start+uint64(i)+1 || (i > 0 && !p.Time.After(pts[i-1].Time)) {
			t.Fatalf("point %d: %+v after %+v", i, p, pts[max(i-1, 0)])
		}
		if i%7 != 0 && i != len(pts)-1 {
			continue
		}
		for k, d := range disks {
			im, _ := r.Image(d, p.Seq)
			got := make([]byte, d.Size)
			im.ReadAt(got, 0)
			if !bytes.Equal(got, after[i][k]) {
				t.Fatalf("disk %s at step %d differs from the model", d.Name, i)
			}
		}
	}
}

// TestCaptureAsyncConcurrent: writers and readers at once (under -race);
// every write is journaled once Sync returns.
func TestCaptureAsyncConcurrent(t *testing.T) {
	_, r := newRepo(t)
	d, _ := r.CreateDisk("c", 256*4096, 4096)
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := range 64 {
				b := uint64(w*64 + i)
				if err := r.CaptureAsync(d.Timeline, []BlockWrite{{d, b, block(byte(b))}}); err != nil {
					t.Error(err)
					return
				}
				got := make([]byte, 4096)
				if _, err := r.ReadNewest(d, got, int64(b)*4096); err != nil || !bytes.Equal(got, block(byte(b))) {
					t.Errorf("block %d not visible after its write returned: %v", b, err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := r.Sync(); err != nil {
		t.Fatal(err)
	}
	im, _ := r.Image(d, r.Head())
	got := make([]byte, 4096)
	for b := range uint64(256) {
		im.ReadAt(got, int64(b)*4096)
		if !bytes.Equal(got, block(byte(b))) {
			t.Fatalf("block %d not journaled after Sync", b)
		}
	}
}

// TestCaptureAsyncMixedSizes: large writes (prepared ahead by the
// preparer) and small ones (prepared by the committer) at once, under -race:
// each write is one step and the newest state is the last write of each block.
func TestCaptureAsyncMixedSizes(t *testing.T) {
	_, r := newRepo(t)
	d, _ := r.CreateDisk("m", 1280*4096, 4096)
	head := r.Head()
	content := func(round int, b uint64) []byte { return block(byte(round*31) ^ byte(b)) }
	const rounds = 8
	var wg sync.WaitGroup
	wg.Go(func() { // 1 MiB writes over blocks 0..1023
		for round := range rounds {
			for first := uint64(0); first < 1024; first += 256 {
				ws := make([]BlockWrite, 256)
				for i := range ws {
					ws[i] = BlockWrite{d, first + uint64(i), content(round, first+uint64(i))}
				}
				if err := r.CaptureAsync(d.Timeline, ws); err != nil {
					t.Error(err)
					return
				}
			}
		}
	})
	wg.Go(func() { // 4 KiB writes over blocks 1024..1279
		for round := range rounds {
			for b := uint64(1024); b < 1280; b++ {
				if err := r.CaptureAsync(d.Timeline, []BlockWrite{{d, b, content(round, b)}}); err != nil {
					t.Error(err)
					return
				}
			}
		}
	})
	wg.Wait()
	if err := r.Sync(); err != nil {
		t.Fatal(err)
	}
	if got, want := r.Head()-head, uint64(rounds*(4+256)); got != want {
		t.Fatalf("%d steps journaled, want %d", got, want)
	}
	im, _ := r.Image(d, r.Head())
	got := make([]byte, 4096)
	for b := range uint64(1280) {
		im.ReadAt(got, int64(b)*4096)
		if !bytes.Equal(got, content(rounds-1, b)) {
			t.Fatalf("block %d is not its last write", b)
		}
	}
}

// TestCaptureAsyncBeforeSteps: a step, a bookmark or a Sync comes after
// every write queued before it.
func TestCaptureAsyncBeforeSteps(t *testing.T) {
	_, r := newRepo(t)
	d, _ := r.CreateDisk("c", 16*4096, 4096)
	start := r.Head()
	for i := range 10 {
		if err := r.CaptureAsync(d.Timeline, []BlockWrite{{d, uint64(i), block(byte(i + 1))}}); err != nil {
			t.Fatal(err)
		}
	}
	s, err := r.Begin(d.Timeline, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Put(d, 15, block(99)); err != nil {
		t.Fatal(err)
	}
	p, err := s.Commit()
	if err != nil {
		t.Fatal(err)
	}
	if p.Seq != start+11 {
		t.Fatalf("step at %d, want %d: after the 10 queued writes", p.Seq, start+11)
	}
	im, _ := r.Image(d, p.Seq-1)
	got := make([]byte, 4096)
	im.ReadAt(got, 9*4096)
	if !bytes.Equal(got, block(10)) {
		t.Fatal("a step overtook a write queued before it")
	}
	r.CaptureAsync(d.Timeline, []BlockWrite{{d, 0, block(50)}})
	bm, err := r.Mark(d, Bookmark{Name: "after", Time: time.Now(), Kind: KindUser})
	if err != nil {
		t.Fatal(err)
	}
	im, _ = r.Image(d, bm.Seq)
	im.ReadAt(got, 0)
	if !bytes.Equal(got, block(50)) {
		t.Fatal("a bookmark taken after a write does not hold it")
	}
}

// TestCaptureAsyncErrorSticks: once journaling a queued write failed, the
// writes after it and every Sync fail too: no fsync can succeed over a
// write that was lost.
func TestCaptureAsyncErrorSticks(t *testing.T) {
	_, r := newRepo(t)
	d, _ := r.CreateDisk("c", 16*4096, 4096)
	if err := r.CaptureAsync(d.Timeline, []BlockWrite{{d, 0, block(1)}}); err != nil {
		t.Fatal(err)
	}
	if err := r.Sync(); err != nil {
		t.Fatal(err)
	}
	r.acquire()
	injected := errors.New("injected write error")
	r.segs.err = injected
	r.wmu.Unlock()
	if err := r.CaptureAsync(d.Timeline, []BlockWrite{{d, 1, block(2)}}); err != nil {
		t.Fatal(err) // queued before the failure
	}
	if err := r.Sync(); !errors.Is(err, injected) {
		t.Fatalf("Sync after a failed write: %v", err)
	}
	if err := r.CaptureAsync(d.Timeline, []BlockWrite{{d, 2, block(3)}}); !errors.Is(err, injected) {
		t.Fatalf("write after a failed write: %v", err)
	}
	if _, err := r.ReadNewest(d, make([]byte, 4096), 0); !errors.Is(err, injected) {
		t.Fatalf("read after a failed write: %v", err)
	}
}
