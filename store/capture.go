package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// Captured writes (a protected disk's live writes) are journaled one step per
// write and become visible at once, but are durable only after Sync, which is
// what an fsync or flush from the front end maps to. Between syncs their
// content is handed to the kernel and their versions to pebble's WAL without
// waiting for the disk; the hash index learns of their content only at Sync.
// On open, steps above the last Sync are verified against their hashes and the
// journal is cut before the first one whose content did not survive: what was
// never acknowledged durable may be lost, but nothing in the journal points at
// garbage.

// BlockWrite is the new content of one whole block of a disk.
type BlockWrite struct {
	Disk  Disk
	Block uint64
	Data  []byte
}

// Capture journals writes (disks of timeline tl) as one step at the current
// time: visible to readers at once, durable after the next Sync.
func (r *Repo) Capture(tl uint32, writes []BlockWrite) (Point, error) {
	return r.CaptureAt(tl, time.Time{}, writes)
}

// CaptureAt is Capture with the point's time given (after the timeline's
// newest point): for sources whose writes carry their own time, such as a
// snapshot read by an agentless source, or a journal replayed from elsewhere.
// The zero time means now.
func (r *Repo) CaptureAt(tl uint32, at time.Time, writes []BlockWrite) (Point, error) {
	s, err := r.Begin(tl, at)
	if err != nil {
		return Point{}, err
	}
	s.durable = false
	for _, w := range writes {
		if err := s.Put(w.Disk, w.Block, w.Data); err != nil {
			s.Abort()
			return Point{}, err
		}
	}
	return s.Commit()
}

// Sync makes every step journaled so far durable.
func (r *Repo) Sync() error {
	if err := r.writable(); err != nil {
		return err
	}
	r.wmu.Lock()
	defer r.wmu.Unlock()
	b := r.db.NewBatch()
	defer b.Close()
	if err := r.syncContent(b); err != nil {
		return err
	}
	b.Set(metaSynced, be64(nil, r.head.Load()), nil)
	if err := b.Commit(pebble.Sync); err != nil {
		return fmt.Errorf("store: sync journal: %w", err)
	}
	clear(r.unsynced)
	return nil
}

// Publish makes the journal so far visible to readers in other processes.
func (r *Repo) Publish() error {
	if err := r.writable(); err != nil {
		return err
	}
	r.wmu.Lock()
	defer r.wmu.Unlock()
	return r.publish()
}

// syncContent makes all appended content durable and adds to b what may only
// be recorded after that: segment lengths and the index of captured content.
func (r *Repo) syncContent(b *pebble.Batch) error {
	if err := r.segs.sync(); err != nil {
		return err
	}
	for _, sl := range r.segs.takeSealed() {
		b.Set(segmentKey(sl.id), be64(nil, sl.n), nil)
	}
	b.Set(segmentKey(r.segs.wID), be64(nil, r.segs.wLen), nil)
	for h, loc := range r.unsynced {
		b.Set(hashKey(h), loc.append(nil), nil)
	}
	return nil
}

// lastTime is the newest time on timeline tl (zero if none), cached: of its
// points and of its bookmarks. A new point must come after both, or a
// bookmark's instant would show a point journaled after the bookmark.
func (r *Repo) lastTime(tl uint32) (time.Time, error) {
	if t, ok := r.lastTimes[tl]; ok {
		return t, nil
	}
	var last time.Time
	p, err := r.LastPoint(tl)
	if err == nil {
		last = p.Time
	} else if !errors.Is(err, ErrNoPoint) {
		return time.Time{}, err
	}
	bms, err := r.Bookmarks(Disk{Timeline: tl})
	if err != nil {
		return time.Time{}, err
	}
	for _, bm := range bms {
		if bm.Time.After(last) {
			last = bm.Time
		}
	}
	r.lastTimes[tl] = last
	return last, nil
}

// versionCount is the disk's count of non-zero versions, cached.
func (r *Repo) versionCount(disk uint32) (uint64, error) {
	if n, ok := r.versions[disk]; ok {
		return n, nil
	}
	return r.getU64(diskVersionsKey(disk))
}

// verifyTail checks the content of every step above the last sync and cuts
// the journal before the first one whose content is missing or wrong. It
// also extends the recorded segment lengths over the content that survived,
// so that opening the segments for appends does not cut it off.
func (r *Repo) verifyTail() error {
	synced, err := r.getU64(metaSynced)
	if err != nil || synced >= r.head.Load() {
		return err
	}
	it, err := r.db.NewIter(&pebble.IterOptions{
		LowerBound: be64([]byte{kindJournal}, synced+1),
		UpperBound: []byte{kindJournal + 1},
	})
	if err != nil {
		return err
	}
	ends := map[uint32]uint64{}
	cut := uint64(0) // first seq that did not survive
	var buf, block []byte
	for it.First(); it.Valid() && cut == 0; it.Next() {
		k := it.Key()
		seq, disk, blk := binary.BigEndian.Uint64(k[1:]), binary.BigEndian.Uint32(k[9:]), binary.BigEndian.Uint64(k[13:])
		v, ok, err := r.get(versionKey(disk, blk, seq))
		if err != nil {
			it.Close()
			return err
		}
		if !ok || len(v) != len(Hash{})+locationLen {
			cut = seq
			break
		}
		loc, _ := decodeLocation(v[len(Hash{}):])
		if loc.flags&flagZero != 0 {
			continue
		}
		buf = append(buf[:0], make([]byte, loc.n)...)
		if r.segs.readRaw(buf, loc.seg, loc.off) != nil {
			cut = seq
			break
		}
		content := buf
		if loc.flags&flagZstd != 0 {
			block, err = r.segs.dec.DecodeAll(buf, block[:0])
			content = block
		}
		if err != nil || HashBlock(content) != Hash(v[:len(Hash{})]) {
			cut = seq
			break
		}
		ends[loc.seg] = max(ends[loc.seg], loc.off+uint64(loc.n))
	}
	if err := errors.Join(it.Error(), it.Close()); err != nil {
		return err
	}
	b := r.db.NewBatch()
	defer b.Close()
	for seg, end := range ends {
		if n, err := r.committedLength(seg); err != nil {
			return err
		} else if end > n {
			b.Set(segmentKey(seg), be64(nil, end), nil)
		}
	}
	if cut != 0 {
		r.logf("journal cut at position %d: its content did not survive the crash (it was never synced)", cut)
		if err := r.cutAt(b, cut); err != nil {
			return err
		}
	}
	b.Set(metaSynced, be64(nil, r.head.Load()), nil)
	return b.Commit(pebble.Sync)
}

// cutAt deletes every step from seq on (all above the last sync) into b.
func (r *Repo) cutAt(b *pebble.Batch, seq uint64) error {
	it, err := r.db.NewIter(&pebble.IterOptions{LowerBound: be64([]byte{kindJournal}, seq), UpperBound: []byte{kindJournal + 1}})
	if err != nil {
		return err
	}
	for it.First(); it.Valid(); it.Next() {
		k := it.Key()
		b.Delete(versionKey(binary.BigEndian.Uint32(k[9:]), binary.BigEndian.Uint64(k[13:]), binary.BigEndian.Uint64(k[1:])), nil)
		b.Delete(k, nil)
	}
	if err := errors.Join(it.Error(), it.Close()); err != nil {
		return err
	}
	disks, err := r.Disks()
	if err != nil {
		return err
	}
	for _, d := range disks { // newest points of each timeline, back to the cut
		it, err := r.pointIter(d.Timeline)
		if err != nil {
			return err
		}
		for ok := it.Last(); ok; ok = it.Prev() {
			p, err := decodePoint(it.Key(), it.Value())
			if err != nil || p.Seq < seq {
				break
			}
			b.Delete(it.Key(), nil)
		}
		it.Close()
	}
	r.head.Store(seq - 1)
	b.Set(metaHead, be64(nil, seq-1), nil)
	return nil
}
