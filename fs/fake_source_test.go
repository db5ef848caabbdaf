package fs

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hindsight-cdp/hindsight/store"
)

// fakeSource is an in-memory model of the engine: disks whose points each
// hold the whole image as a byte slice, and bookmarks. It is safe for
// concurrent use; images handed out are never written again.
type fakeSource struct {
	mu    sync.Mutex
	disks []*fakeDisk // by name
	seq   uint64      // the shared journal position
	rng   *rand.Rand

	readAts atomic.Int64 // ReadAt calls on the images handed out
}

type fakeDisk struct {
	disk      store.Disk
	points    []fakePoint // oldest first
	bookmarks []store.Bookmark
}

type fakePoint struct {
	store.Point
	img []byte
}

var _ Source = (*fakeSource)(nil)

func newFakeSource() *fakeSource {
	return &fakeSource{rng: rand.New(rand.NewPCG(1, 2))}
}

func (s *fakeSource) addDisk(name string, size int64, created time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	id := uint32(len(s.disks) + 1)
	s.disks = append(s.disks, &fakeDisk{disk: store.Disk{
		ID: id, Name: name, Size: size, BlockSize: 4096, Created: created, Timeline: id,
	}})
	sort.Slice(s.disks, func(i, j int) bool { return s.disks[i].disk.Name < s.disks[j].disk.Name })
}

// addPoint journals a point at t that rewrites a few random blocks of the
// previous image, and returns it.
func (s *fakeSource) addPoint(disk string, t time.Time) store.Point {
	s.mu.Lock()
	defer s.mu.Unlock()
	d := s.mustDisk(disk)
	img := make([]byte, d.disk.Size)
	if len(d.points) > 0 {
		copy(img, d.points[len(d.points)-1].img)
	}
	blocks := int(d.disk.Size / int64(d.disk.BlockSize))
	for range 1 + blocks/8 {
		b := s.rng.IntN(blocks)
		for i := b * d.disk.BlockSize; i < (b+1)*d.disk.BlockSize; i += 8 {
			v := s.rng.Uint64()
			for k := 0; k < 8; k++ {
				img[i+k] = byte(v >> (8 * k))
			}
		}
	}
	s.seq += uint64(1 + s.rng.IntN(5))
	p := fakePoint{Point: store.Point{Seq: s.seq, Time: t.UTC(), Blocks: 1}, img: img}
	d.points = append(d.points, p)
	return p.Point
}

// removePoint drops the point at seq, as pruning does: instants it showed
// resolve to the point before it.
func (s *fakeSource) removePoint(disk string, seq uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	d := s.mustDisk(disk)
	for i, p := range d.points {
		if p.Seq == seq {
			d.points = append(d.points[:i:i], d.points[i+1:]...)
			return
		}
	}
	panic(fmt.Sprintf("fake: disk %q has no point at seq %d", disk, seq))
}

func (s *fakeSource) addBookmark(disk, name string, p store.Point, kind string) store.Bookmark {
	s.mu.Lock()
	defer s.mu.Unlock()
	d := s.mustDisk(disk)
	b := store.Bookmark{Name: name, Disk: disk, Seq: p.Seq, Time: p.Time, Kind: kind, Created: p.Time}
	d.bookmarks = append(d.bookmarks, b)
	return b
}

// image returns the model's image of disk at seq.
func (s *fakeSource) image(disk string, seq uint64) []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	img, err := s.imageLocked(s.mustDisk(disk), seq)
	if err != nil {
		panic(err)
	}
	return img
}

// points returns a copy of the disk's points.
func (s *fakeSource) points(disk string) []store.Point {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []store.Point
	for _, p := range s.mustDisk(disk).points {
		out = append(out, p.Point)
	}
	return out
}

func (s *fakeSource) mustDisk(name string) *fakeDisk {
	d, err := s.diskLocked(name)
	if err != nil {
		panic(err)
	}
	return d
}

func (s *fakeSource) diskLocked(name string) (*fakeDisk, error) {
	for _, d := range s.disks {
		if d.disk.Name == name {
			return d, nil
		}
	}
	return nil, fmt.Errorf("fake: disk %q: %w", name, store.ErrUnknownDisk)
}

func (s *fakeSource) imageLocked(d *fakeDisk, seq uint64) ([]byte, error) {
	for i := len(d.points) - 1; i >= 0; i-- {
		if d.points[i].Seq <= seq {
			return d.points[i].img, nil
		}
	}
	return nil, fmt.Errorf("fake: disk %q seq %d: %w", d.disk.Name, seq, store.ErrNoPoint)
}

func (s *fakeSource) Disks(ctx context.Context) ([]store.Disk, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]store.Disk, 0, len(s.disks))
	for _, d := range s.disks {
		out = append(out, d.disk)
	}
	return out, nil
}

func (s *fakeSource) Groups(ctx context.Context) ([]store.Group, error) { return nil, nil }

// Skim walks the points in memory; the store's seeks are tested in store.
func (s *fakeSource) Skim(ctx context.Context, disk string, from, to time.Time, next func(time.Time) time.Time, limit int) ([]store.Point, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	d, err := s.diskLocked(disk)
	if err != nil {
		return nil, err
	}
	var out []store.Point
	at := from
	for _, p := range d.points {
		if limit > 0 && len(out) >= limit {
			break
		}
		if !p.Time.Before(to) {
			break
		}
		if !p.Time.Before(at) {
			out = append(out, p.Point)
			at = next(p.Time)
		}
	}
	return out, nil
}

func (s *fakeSource) Points(ctx context.Context, disk string, limit int) ([]store.Point, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	d, err := s.diskLocked(disk)
	if err != nil {
		return nil, err
	}
	ps := d.points
	if len(ps) > limit {
		ps = ps[len(ps)-limit:]
	}
	out := make([]store.Point, 0, len(ps))
	for _, p := range ps {
		out = append(out, p.Point)
	}
	return out, nil
}

func (s *fakeSource) Bookmarks(ctx context.Context, disk string) ([]store.Bookmark, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	d, err := s.diskLocked(disk)
	if err != nil {
		return nil, err
	}
	return append([]store.Bookmark(nil), d.bookmarks...), nil
}

func (s *fakeSource) Resolve(ctx context.Context, disk string, t time.Time) (store.Point, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	d, err := s.diskLocked(disk)
	if err != nil {
		return store.Point{}, err
	}
	for i := len(d.points) - 1; i >= 0; i-- {
		if !d.points[i].Time.After(t) {
			return d.points[i].Point, nil
		}
	}
	return store.Point{}, fmt.Errorf("fake: disk %q at %s: %w", disk, t, store.ErrNoPoint)
}

func (s *fakeSource) Latest(ctx context.Context, disk string) (store.Point, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	d, err := s.diskLocked(disk)
	if err != nil {
		return store.Point{}, err
	}
	if len(d.points) == 0 {
		return store.Point{}, fmt.Errorf("fake: disk %q: %w", disk, store.ErrNoPoint)
	}
	return d.points[len(d.points)-1].Point, nil
}

func (s *fakeSource) Image(ctx context.Context, disk string, seq uint64) (io.ReaderAt, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	d, err := s.diskLocked(disk)
	if err != nil {
		return nil, err
	}
	img, err := s.imageLocked(d, seq)
	if err != nil {
		return nil, err
	}
	return countingReader{bytes.NewReader(img), &s.readAts}, nil
}

// countingReader counts the reads that reach the source, to tell them from
// reads the page cache answered.
type countingReader struct {
	r *bytes.Reader
	n *atomic.Int64
}

func (c countingReader) ReadAt(p []byte, off int64) (int, error) {
	c.n.Add(1)
	return c.r.ReadAt(p, off)
}

func sum(b []byte) [32]byte { return sha256.Sum256(b) }
