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
	pending map[Hash]location // content an import's step added, not yet in the index (captures: Repo.unsynced)
	blocks  uint64
	perDisk map[uint32]uint64 // non-zero versions journaled per disk
	durable bool              // synced at commit (imports); captured writes wait for Sync
	nudge   bool              // at is a hint: moved past the timeline's newest point if needed
	done    bool
}

// stepBatchBytes bounds one intermediate batch of a large step.
const stepBatchBytes = 32 << 20

// Begin starts a step on timeline tl. With a non-zero at, the step's point
// gets that time, which must be after the timeline's newest point; otherwise
// it gets the commit time (nudged past the newest point if the clock stepped
// back). Begin holds the repository's writer until Commit or Abort. It
// refuses with ErrNoSpace while the repository's filesystem is below its
// reserve (Options.MinFree), as each block the step appends does.
func (r *Repo) Begin(tl uint32, at time.Time) (*Step, error) {
	if err := r.writable(); err != nil {
		return nil, err
	}
	if err := r.space.admit(0); err != nil {
		return nil, err
	}
	r.drain()
	return r.begin(tl, at, false)
}

// begin is Begin without waiting for the capture queue, for the capture
// goroutine itself. With nudge, a time not after the timeline's newest point
// is moved just past it instead of refused.
func (r *Repo) begin(tl uint32, at time.Time, nudge bool) (*Step, error) {
	r.wmu.Lock()
	s := &Step{r: r, tl: tl, seq: r.head.Load() + 1, at: at.UTC(), b: r.db.NewBatch(), pending: map[Hash]location{}, durable: true, nudge: nudge}
	last, err := r.lastTime(tl)
	if err != nil {
		s.release()
		return nil, err
	}
	s.last = last
	if !nudge && !at.IsZero() && !s.last.IsZero() && !at.After(s.last) {
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
	return s.putPrepared(d, block, prepared{hash: h, stored: data})
}

// putPrepared journals a block whose hash (zero: all zeros) and, unless
// flags say it is compressed, raw content p holds.
func (s *Step) putPrepared(d Disk, block uint64, p prepared) error {
	loc := location{flags: flagZero}
	h := p.hash
	if h == (Hash{}) {
		h = s.zeroHash(d.BlockSize)
	} else {
		var err error
		if loc, err = s.content(h, p.stored, p.flags); err != nil {
			return err
		}
	}
	s.index(d, block, h, loc)
	if s.b.Len() >= stepBatchBytes {
		return s.flush(s.r.head.Load())
	}
	return nil
}

// index records block of disk d as holding content h at loc from this step on.
func (s *Step) index(d Disk, block uint64, h Hash, loc location) {
	v := loc.append(append(make([]byte, 0, len(h)+locationLen), h[:]...))
	s.b.Set(versionKey(d.ID, block, s.seq), v, nil)
	s.b.Set(journalKey(s.seq, d.ID, block), nil, nil)
	s.blocks++
	if loc.flags&flagZero == 0 {
		s.b.Set(refKey(h, d.ID, block, s.seq), nil, nil)
		if s.perDisk == nil {
			s.perDisk = map[uint32]uint64{}
		}
		s.perDisk[d.ID]++
	}
}

// check refuses a block outside d or data not of d's block size (nil data:
// not checked).
func (s *Step) check(d Disk, block uint64, data []byte) error {
	if d.Timeline != s.tl {
		return fmt.Errorf("store: disk %q is not on timeline %d", d.Name, s.tl)
	}
	if block >= d.Blocks() {
		return fmt.Errorf("%w: block %d of disk %q (%d blocks)", ErrOutOfRange, block, d.Name, d.Blocks())
	}
	if data != nil && len(data) != d.BlockSize {
		return fmt.Errorf("store: write of %d bytes to disk %q of block size %d", len(data), d.Name, d.BlockSize)
	}
	return nil
}

// content finds or stores the content with hash h. A durable step indexes
// new content in its batches (the content is synced before each).
func (s *Step) content(h Hash, stored []byte, flags uint8) (location, error) {
	if loc, ok, err := s.stored(h); ok || err != nil {
		return loc, err
	}
	if flags&flagTried == 0 { // imports compress here, captures beforehand
		stored, flags = s.r.segs.compress(stored)
	}
	loc, err := s.r.segs.add(stored, flags&flagZstd)
	if err != nil {
		return location{}, err
	}
	s.pending[h] = loc
	s.r.indexHash(s.b, h, loc.append(nil))
	return loc, nil
}

// flush commits the step's batch so far (synced is the head it leaves
// durable). A durable step first makes its content durable and records the
// segment lengths; a captured step is made durable by its frame at the next
// Sync, and its content is read from the writer's memory until it reaches
// the file.
func (s *Step) flush(synced uint64) error {
	var err error
	if s.durable {
		err = s.r.commitSynced(s.b, synced)
	} else {
		err = s.b.Commit(pebble.NoSync)
	}
	if err != nil {
		return fmt.Errorf("store: commit step %d: %w", s.seq, err)
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
	t := s.when()
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
	if err := s.flush(p.Seq); err != nil {
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

// when fixes and returns the step's time: the requested one, or now, moved
// past the timeline's newest point where that is allowed.
func (s *Step) when() time.Time {
	t := s.at
	if t.IsZero() {
		t = time.Now().UTC()
	}
	if (s.at.IsZero() || s.nudge) && !t.After(s.last) {
		t = s.last.Add(time.Nanosecond)
	}
	s.at, s.nudge = t, false
	return t
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

// zeroHash is the hash of an all-zero block of n bytes, computed once by
// the writer (which the step holds).
func (s *Step) zeroHash(n int) Hash {
	h, ok := s.r.zeroHashes[n]
	if !ok {
		h = ZeroHash(n)
		s.r.zeroHashes[n] = h
	}
	return h
}

// ZeroHash is the content hash of an all-zero block of n bytes: the hash of
// every block never written.
func ZeroHash(n int) Hash { return HashBlock(make([]byte, n)) }
