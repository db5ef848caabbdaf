package store

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// crash closes r the way a killed process leaves it: nothing synced, nothing flushed.
func crash(r *Repo) {
	r.stopQueue()
	r.q = nil
	r.stopKnown()
	r.stopKnown = nil
	r.segs.stopWriter() // content still in memory is lost
	r.segs.w.Close()
	r.segs.w = nil
	r.segs.close()
	r.db.Close()
	r.lock.Close()
	r.segs, r.db, r.lock = nil, nil, nil // so that a later Close does nothing
}

func block(fill byte) []byte { return bytes.Repeat([]byte{fill, fill ^ 0x5a, 3, fill}, 1024) }

func TestCaptureVisibleThenDurable(t *testing.T) {
	dir, r := newRepo(t)
	d, _ := r.CreateDisk("c", 16*4096, 4096)
	var last Point
	for i := 0; i < 10; i++ {
		p, err := r.Capture(d.Timeline, []BlockWrite{{d, uint64(i % 4), block(byte(i + 1))}})
		if err != nil {
			t.Fatal(err)
		}
		if p.Seq <= last.Seq || !p.Time.After(last.Time) {
			t.Fatalf("point %+v does not follow %+v", p, last)
		}
		last = p
		im, _ := r.Image(d, r.Head())
		got := make([]byte, 4096)
		im.ReadAt(got, int64(i%4)*4096)
		if !bytes.Equal(got, block(byte(i+1))) {
			t.Fatalf("write %d is not visible at once", i)
		}
	}
	if _, ok, _ := r.get(hashKey(HashBlock(block(1)))); ok {
		t.Fatal("captured content was indexed before Sync")
	}
	if err := r.Sync(); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := r.get(hashKey(HashBlock(block(10)))); !ok {
		t.Fatal("Sync did not index captured content")
	}
	// A kill may take what was written after the sync (it can still be in
	// the writer's memory), never what was synced.
	r.Capture(d.Timeline, []BlockWrite{{d, 9, block(42)}})
	crash(r)
	r, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if r.Head() != last.Seq && r.Head() != last.Seq+1 {
		t.Fatalf("head %d after a kill, want %d or %d", r.Head(), last.Seq, last.Seq+1)
	}
	im, _ := r.Image(d, last.Seq)
	got := make([]byte, 4096)
	for i := 6; i < 10; i++ {
		im.ReadAt(got, int64(i%4)*4096)
		if !bytes.Equal(got, block(byte(i+1))) {
			t.Fatalf("synced write %d lost by a kill", i)
		}
	}
}

func TestCaptureTailLostIsCut(t *testing.T) {
	dir, r := newRepo(t)
	d, _ := r.CreateDisk("c", 16*4096, 4096)
	for i := 0; i < 4; i++ {
		r.Capture(d.Timeline, []BlockWrite{{d, uint64(i), block(byte(i + 1))}})
	}
	if err := r.Sync(); err != nil {
		t.Fatal(err)
	}
	synced := r.Head()
	// Three more writes whose content a power loss then takes away.
	segLen := r.segs.wLen
	for i := 0; i < 3; i++ {
		r.Capture(d.Timeline, []BlockWrite{{d, uint64(i), block(byte(100 + i))}})
	}
	seg := filepath.Join(dir, "segments", segmentName(r.segs.wID))
	crash(r)
	if err := os.Truncate(seg, int64(segLen)); err != nil {
		t.Fatal(err)
	}
	r, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if r.Head() != synced {
		t.Fatalf("head %d after losing the unsynced tail, want %d", r.Head(), synced)
	}
	last, _ := r.LastPoint(d.Timeline)
	if last.Seq != synced {
		t.Fatalf("newest point %d survived the cut", last.Seq)
	}
	im, _ := r.Image(d, r.Head())
	got := make([]byte, 4*4096)
	im.ReadAt(got, 0)
	for i := 0; i < 4; i++ {
		if !bytes.Equal(got[i*4096:(i+1)*4096], block(byte(i+1))) {
			t.Fatalf("synced block %d reads back wrong after the cut", i)
		}
	}
	// The journal goes on cleanly from the cut.
	p, err := r.Capture(d.Timeline, []BlockWrite{{d, 0, block(77)}})
	if err != nil || p.Seq != synced+1 {
		t.Fatalf("capture after the cut: %+v %v", p, err)
	}
	im, _ = r.Image(d, r.Head())
	im.ReadAt(got[:4096], 0)
	if !bytes.Equal(got[:4096], block(77)) {
		t.Fatal("write after the cut reads back wrong")
	}
}
