package store

import (
	"bytes"

	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// logCase is a repository whose index is rolled back to a checkpoint taken
// after a Sync while the frames written since stay in the segments: what a
// crash leaves when the index's unsynced batches are lost and the log's
// frames are not.
type logCase struct {
	dir   string
	r     *Repo
	d     Disk
	model *model
	rng   *rand.Rand
}

func newLogCase(t *testing.T, limit uint64) *logCase {
	dir, r := newRepo(t)
	r.segs.limit = limit
	d, _ := r.CreateDisk("l", 64*4096, 4096)
	m := &model{bs: 4096, images: [][]byte{make([]byte, d.Size)}, seqs: []uint64{0}, times: []time.Time{{}}}
	return &logCase{dir: dir, r: r, d: d, model: m, rng: rand.New(rand.NewPCG(21, 22))}
}

// capture journals n random steps through the queue, recording the model.
func (c *logCase) capture(t *testing.T, n int) {
	t.Helper()
	img := bytes.Clone(c.model.images[len(c.model.images)-1])
	for range n {
		first, k := uint64(c.rng.IntN(60)), 1+c.rng.IntN(4)
		var ws []BlockWrite
		for b := first; b < first+uint64(k); b++ {
			blk := randBlock(c.rng, 4096)
			if c.rng.IntN(8) == 0 { // now and then content stored before
				copy(blk, img[(b+1)%64*4096:][:4096])
			}
			ws = append(ws, BlockWrite{c.d, b, blk})
			copy(img[b*4096:], blk)
		}
		p, err := c.r.Capture(c.d.Timeline, ws)
		if err != nil {
			t.Fatal(err)
		}
		c.model.images = append(c.model.images, bytes.Clone(img))
		c.model.seqs = append(c.model.seqs, p.Seq)
		c.model.times = append(c.model.times, p.Time)
	}
}

// truncate forgets the model's steps after seq.
func (m *model) truncate(seq uint64) {
	n := 0
	for n < len(m.seqs) && m.seqs[n] <= seq {
		n++
	}
	m.images, m.seqs, m.times = m.images[:n], m.seqs[:n], m.times[:n]
}

// checkpoint copies the index as it is now.
func (c *logCase) checkpoint(t *testing.T) string {
	t.Helper()
	cp := filepath.Join(t.TempDir(), "cp")
	if err := c.r.db.Checkpoint(cp, pebble.WithFlushedWAL()); err != nil {
		t.Fatal(err)
	}
	return cp
}

// crashTo kills the writer, keeps the segments as they are on disk (after
// damage, if given), puts back the index of checkpoint cp, and reopens.
func (c *logCase) crashTo(t *testing.T, cp string, damage ...func()) {
	t.Helper()
	crash(c.r)
	for _, f := range damage {
		f()
	}
	db := filepath.Join(c.dir, "db")
	if err := os.RemoveAll(db); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(cp, db); err != nil {
		t.Fatal(err)
	}
	r, err := Open(c.dir, Options{Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	c.r = r
}

// verify checks every point up to the head against the model, and that the
// model has no point the journal lost above it.
func (c *logCase) verify(t *testing.T, wantHead uint64) {
	t.Helper()
	if c.r.Head() != wantHead {
		t.Fatalf("head %d after recovery, want %d", c.r.Head(), wantHead)
	}
	for i, seq := range c.model.seqs {
		if seq > wantHead || seq == 0 {
			continue
		}
		p, err := c.r.PointAt(c.d.Timeline, c.model.times[i])
		if err != nil || p.Seq != seq {
			t.Fatalf("point of step %d: %+v %v", seq, p, err)
		}
		im, _ := c.r.Image(c.d, seq)
		got := make([]byte, c.d.Size)
		im.ReadAt(got, 0)
		if !bytes.Equal(got, c.model.images[i]) {
			t.Fatalf("image at %d differs from the model after recovery", seq)
		}
	}
	if n, _ := c.r.LogicalBytes(c.d); n == 0 {
		t.Fatal("no version counted after recovery")
	}
}

// TestLogReplaysFrames: steps whose index batches were lost come back from
// their frames, across segment boundaries, and the journal goes on.
func TestLogReplaysFrames(t *testing.T) {
	c := newLogCase(t, 96<<10) // a segment holds a few dozen frames
	c.capture(t, 20)
	if err := c.r.Sync(); err != nil {
		t.Fatal(err)
	}
	cp := c.checkpoint(t)
	c.capture(t, 200)
	if err := c.r.Sync(); err != nil { // the frames are durable, the index's batches are not
		t.Fatal(err)
	}
	want := c.r.Head()
	if c.r.segs.wID < 3 {
		t.Fatalf("the frames filled only %d segments", c.r.segs.wID)
	}
	c.crashTo(t, cp)
	c.verify(t, want)
	c.r.segs.limit = 96 << 10
	c.capture(t, 30) // and the log goes on after the replayed frames
	if err := c.r.Sync(); err != nil {
		t.Fatal(err)
	}
	cp = c.checkpoint(t)
	want = c.r.Head()
	c.crashTo(t, cp)
	c.verify(t, want)
}

// TestLogStopsAtTornFrame: a frame whose bytes did not all reach the disk
// ends the replay; the steps before it are back, none after it.
func TestLogStopsAtTornFrame(t *testing.T) {
	c := newLogCase(t, maxSegment)
	c.capture(t, 5)
	c.r.Sync()
	cp := c.checkpoint(t)
	c.capture(t, 10)
	start := c.r.segs.wLen
	c.capture(t, 1) // this frame is torn below
	end := c.r.segs.wLen
	c.capture(t, 3)
	c.r.Sync()
	torn := c.model.seqs[len(c.model.seqs)-4]
	seg := filepath.Join(c.dir, "segments", segmentName(c.r.segs.wID))
	c.crashTo(t, cp, func() {
		f, err := os.OpenFile(seg, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if _, err := f.WriteAt([]byte{0xff, 0x00, 0xff}, int64(start+(end-start)/2)); err != nil {
			t.Fatal(err)
		}
	})
	c.verify(t, torn-1)
}

// TestLogCutsLostFrames: index batches that reached the disk while their
// frames did not (a kill before any sync) are cut.
func TestLogCutsLostFrames(t *testing.T) {
	c := newLogCase(t, maxSegment)
	c.capture(t, 8)
	c.r.Sync()
	synced := c.r.Head()
	c.capture(t, 8) // frames only in the writer's memory
	dir := c.dir
	crash(c.r) // pebble's own log keeps the 8 batches
	r, err := Open(dir, Options{Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	c.r = r
	c.verify(t, synced)
	c.model.truncate(synced)
	c.capture(t, 4)
	if err := c.r.Sync(); err != nil {
		t.Fatal(err)
	}
	c.verify(t, synced+4)
}
