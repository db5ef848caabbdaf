package store

import (
	"fmt"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// Step is one journal step: block writes on one timeline that become visible
// together, at one position and one timestamp, when Commit returns. Large
// steps are written in several batches; only the last, synced one moves the
// head, so a step cut off by a crash is purged on the next open.
type Step struct {
	r       *Repo
	tl      uint32
	seq     uint64
	at      time.Time // requested time; zero: the commit time
	last    time.Time // newest point time of the timeline before this step
	b       *pebble.Batch
	pending map[Hash]location // content added by this step, not yet in the index
	blocks  uint64
	zeros   map[int]Hash
	perDisk map[uint32]uint64 // non-zero versions journaled per disk
	durable bool              // synced at commit (imports); captured writes wait for Sync
	done    bool
}

// stepBatchBytes bounds one intermediate batch of a large step.
const stepBatchBytes = 32 << 20

// Begin starts a step on timeline tl. With a non-zero at, the step's point
// gets that time, which must be after the timeline's newest point; otherwise
// it gets the commit time (nudged past the newest point if the clock stepped
// back). Begin holds the repository's writer until Commit or Abort.
func (r *Repo) Begin(tl uint32, at time.Time) (*Step, error) {
	if err := r.writable(); err != nil {
		return nil, err
	}
	r.wmu.Lock()
	s := &Step{r: r, tl: tl, seq: r.head.Load() + 1, at: at.UTC(), b: r.db.NewBatch(), pending: map[Hash]location{}, durable: true}
	last, err := r.lastTime(tl)
	if err != nil {
		s.release()
		return nil, err
	}
	s.last = last
	if !at.IsZero() && !s.last.IsZero() && !at.After(s.last) {
		s.release()
		return nil, fmt.Errorf("%w: %s is not after %s (the newest point or bookmark)", ErrTimeOrder,
			at.UTC().Format(time.RFC3339Nano), s.last.Format(time.RFC3339Nano))
	}
	return s, nil
}

// Seq is the journal position the step will commit at.
func (s *Step) Seq() uint64 { return s.seq }

// Put journals data as the new content of block of disk d (d on the step's
// timeline); len(data) must be the disk's block size.
func (s *Step) Put(d Disk, block uint64, data []byte) error {
	if err := s.check(d, block, data); err != nil {
		return err
	}
	var h Hash
	if !IsZero(data) {
		h = HashBlock(data)
	}
	return s.put(d, block, data, h)
}

// PutHashed is Put for a caller that already has data's hash (HashBlock, or
// ZeroHash for a zero block), so that it is not computed twice.
func (s *Step) PutHashed(d Disk, block uint64, data []byte, h Hash) error {
	if err := s.check(d, block, data); err != nil {
		return err
	}
	if h == s.zeroHash(len(data)) {
		h = Hash{}
	}
	return s.put(d, block, data, h)
}

// put journals data under hash h; the zero Hash means data is all zeros.
func (s *Step) put(d Disk, block uint64, data []byte, h Hash) error {
	loc := location{flags: flagZero}
	if h == (Hash{}) {
		h = s.zeroHash(len(data))
	} else {
		var err error
		if loc, err = s.content(h, data); err != nil {
			return err
		}
	}
	v := loc.append(append(make([]byte, 0, len(h)+locationLen), h[:]...))
	s.b.Set(versionKey(d.ID, block, s.seq), v, nil)
	s.b.Set(journalKey(s.seq, d.ID, block), nil, nil)
	s.blocks++
	if loc.flags&flagZero == 0 {
		if s.perDisk == nil {
			s.perDisk = map[uint32]uint64{}
		}
		s.perDisk[d.ID]++
	}
	if s.b.Len() >= stepBatchBytes {
		return s.flush(pebble.NoSync)
	}
	return nil
}

func (s *Step) check(d Disk, block uint64, data []byte) error {
	if d.Timeline != s.tl {
		return fmt.Errorf("store: disk %q is not on timeline %d", d.Name, s.tl)
	}
	if block >= d.Blocks() {
		return fmt.Errorf("%w: block %d of disk %q (%d blocks)", ErrOutOfRange, block, d.Name, d.Blocks())
	}
	if len(data) != d.BlockSize {
		return fmt.Errorf("store: write of %d bytes to disk %q of block size %d", len(data), d.Name, d.BlockSize)
	}
	return nil
}

// content finds or stores the content with hash h. A durable step indexes
// new content in its batches (the content is synced before each); a captured
// step leaves that to Repo.Sync, so that the index never points at content a
// crash could lose.
func (s *Step) content(h Hash, data []byte) (location, error) {
	if loc, ok := s.pending[h]; ok {
		return loc, nil
	}
	if loc, ok := s.r.unsynced[h]; ok {
		return loc, nil
	}
	v, ok, err := s.r.get(hashKey(h))
	if err != nil {
		return location{}, err
	}
	if ok {
		return decodeLocation(v)
	}
	loc, err := s.r.segs.add(data)
	if err != nil {
		return location{}, err
	}
	s.pending[h] = loc
	if s.durable {
		s.b.Set(hashKey(h), loc.append(nil), nil)
	} else {
		s.r.unsynced[h] = loc
	}
	return loc, nil
}

// flush commits the step's batch so far. A durable step first makes its
// content durable and records the segment lengths; a captured step only hands
// its content to the kernel, so that reads see it at once.
func (s *Step) flush(sync *pebble.WriteOptions) error {
	var err error
	if s.durable {
		err = s.r.syncContent(s.b)
	} else {
		err = s.r.segs.write()
	}
	if err != nil {
		return err
	}
	if err := s.b.Commit(sync); err != nil {
		return fmt.Errorf("store: commit step %d: %w", s.seq, err)
	}
	if s.durable {
		clear(s.r.unsynced)
	}
	s.b.Close()
	s.b = s.r.db.NewBatch()
	clear(s.pending)
	return nil
}

// Commit makes the step durable and visible and returns its point.
func (s *Step) Commit() (Point, error) {
	if s.done {
		return Point{}, fmt.Errorf("store: step %d already ended", s.seq)
	}
	defer s.release()
	t := s.at
	if t.IsZero() {
		t = time.Now().UTC()
		if !t.After(s.last) {
			t = s.last.Add(time.Nanosecond)
		}
	}
	p := Point{Seq: s.seq, Time: t, Blocks: s.blocks}
	s.b.Set(pointKey(s.tl, t), be64(be64(nil, p.Seq), p.Blocks), nil)
	s.b.Set(metaHead, be64(nil, p.Seq), nil)
	counts := make(map[uint32]uint64, len(s.perDisk))
	for id, n := range s.perDisk {
		total, err := s.r.versionCount(id)
		if err != nil {
			return Point{}, err
		}
		counts[id] = total + n
		s.b.Set(diskVersionsKey(id), be64(nil, total+n), nil)
	}
	opt := pebble.NoSync
	if s.durable {
		s.b.Set(metaSynced, be64(nil, p.Seq), nil)
		opt = pebble.Sync
	}
	if err := s.flush(opt); err != nil {
		s.r.purgeOrphans()
		return Point{}, err
	}
	s.r.head.Store(p.Seq)
	s.r.lastTimes[s.tl] = t
	for id, n := range counts {
		s.r.versions[id] = n
	}
	if !s.durable {
		return p, nil
	}
	return p, s.r.publish()
}

// Abort drops the step; batches it already wrote are purged.
func (s *Step) Abort() error {
	if s.done {
		return nil
	}
	defer s.release()
	return s.r.purgeOrphans()
}

func (s *Step) release() {
	if s.done {
		return
	}
	s.done = true
	if s.b != nil {
		s.b.Close()
	}
	s.r.wmu.Unlock()
}

// IsZero reports whether b is all zeros: such blocks cost no content.
func IsZero(b []byte) bool {
	for len(b) >= 8 {
		if b[0]|b[1]|b[2]|b[3]|b[4]|b[5]|b[6]|b[7] != 0 {
			return false
		}
		b = b[8:]
	}
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// zeroHash is the hash of an all-zero block of n bytes, computed once a step.
func (s *Step) zeroHash(n int) Hash {
	if h, ok := s.zeros[n]; ok {
		return h
	}
	if s.zeros == nil {
		s.zeros = map[int]Hash{}
	}
	s.zeros[n] = ZeroHash(n)
	return s.zeros[n]
}

// ZeroHash is the content hash of an all-zero block of n bytes: the hash of
// every block never written.
func ZeroHash(n int) Hash { return HashBlock(make([]byte, n)) }
