package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// Captured writes (a protected disk's live writes) are journaled one step per
// write, each as a frame of the newest segment (see frame.go), and become
// visible at once, but are durable only after Sync, which is what an fsync
// or flush from the front end maps to: one fdatasync of the segment. The
// index learns of captured content (for dedupe) only after that sync, so
// that it never points at content a crash could lose.

// BlockWrite is the new content of one whole block of a disk.
type BlockWrite struct {
	Disk  Disk
	Block uint64
	Data  []byte // nil: zeros (CaptureAsync only)
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
	if err := r.writable(); err != nil {
		return Point{}, err
	}
	for _, w := range writes {
		if len(w.Data) != w.Disk.BlockSize {
			return Point{}, fmt.Errorf("store: write of %d bytes to disk %q of block size %d", len(w.Data), w.Disk.Name, w.Disk.BlockSize)
		}
	}
	if err := r.drain(); err != nil {
		return Point{}, err
	}
	e := &entry{tl: tl, at: at, writes: writes, prep: r.prepare(writes, nil)}
	pts, err := r.captureSteps([]*entry{e}, false)
	if err != nil {
		return Point{}, err
	}
	return pts[0], nil
}

// captureSteps journals prepared entries as consecutive captured steps in
// one index batch, each appended to the log as its frame. With nudge an
// entry's time is moved past the timeline's newest point where needed
// (queued writes); without, such a time is refused.
func (r *Repo) captureSteps(es []*entry, nudge bool) ([]Point, error) {
	r.wmu.Lock()
	defer r.wmu.Unlock()
	return r.captureLocked(es, nudge)
}

// captureLocked is captureSteps with the writer held.
func (r *Repo) captureLocked(es []*entry, nudge bool) ([]Point, error) {
	b := r.db.NewBatch()
	defer b.Close()
	seq := r.head.Load()
	times := map[uint32]time.Time{}
	counts := map[uint32]uint64{}
	pts := make([]Point, 0, len(es))
	for _, e := range es {
		last, ok := times[e.tl]
		if !ok {
			var err error
			if last, err = r.lastTime(e.tl); err != nil {
				return nil, err
			}
		}
		if !nudge && !e.at.IsZero() && !e.at.After(last) {
			return nil, fmt.Errorf("%w: %s is not after %s (the newest point or bookmark)", ErrTimeOrder,
				e.at.UTC().Format(time.RFC3339Nano), last.Format(time.RFC3339Nano))
		}
		s := &Step{r: r, tl: e.tl, seq: seq + 1, at: e.at.UTC(), last: last, nudge: true, b: b}
		t := s.when()
		if err := s.putFrame(e.writes, e.prep); err != nil {
			return nil, err
		}
		b.Set(pointKey(e.tl, t), be64(be64(nil, s.seq), s.blocks), nil)
		for id, n := range s.perDisk {
			counts[id] += n
		}
		times[e.tl] = t
		seq++
		pts = append(pts, Point{Seq: s.seq, Time: t, Blocks: s.blocks})
	}
	b.Set(metaHead, be64(nil, seq), nil)
	for id, n := range counts {
		total, err := r.versionCount(id)
		if err != nil {
			return nil, err
		}
		counts[id] = total + n
		b.Set(diskVersionsKey(id), be64(nil, total+n), nil)
	}
	if err := b.Commit(pebble.NoSync); err != nil {
		return nil, fmt.Errorf("store: commit captured steps to %d: %w", seq, err)
	}
	r.head.Store(seq)
	for tl, t := range times {
		r.lastTimes[tl] = t
	}
	for id, n := range counts {
		r.versions[id] = n
	}
	return pts, nil
}

// Sync makes every step journaled so far durable.
func (r *Repo) Sync() error {
	if err := r.writable(); err != nil {
		return err
	}
	if err := r.drain(); err != nil {
		return err
	}
	r.wmu.Lock()
	defer r.wmu.Unlock()
	b := r.db.NewBatch()
	defer b.Close()
	// The frames are the log: once they are synced, what the index records
	// of it needs no sync of its own (a crash rebuilds it from the frames).
	if err := r.syncContent(b, r.head.Load()); err != nil {
		return err
	}
	if err := b.Commit(pebble.NoSync); err != nil {
		return fmt.Errorf("store: sync journal: %w", err)
	}
	r.syncedContent()
	return nil
}

// Publish makes the journal so far visible to readers in other processes.
func (r *Repo) Publish() error {
	if err := r.writable(); err != nil {
		return err
	}
	if err := r.drain(); err != nil {
		return err
	}
	r.wmu.Lock()
	defer r.wmu.Unlock()
	return r.publish()
}

// syncContent makes all appended content durable and adds to b what may only
// be recorded after that: segment lengths, the index of captured content,
// and that everything up to position synced (and to the end of the log) is
// durable.
func (r *Repo) syncContent(b *pebble.Batch, synced uint64) error {
	if err := r.segs.sync(); err != nil {
		return err
	}
	for _, sl := range r.segs.takeSealed() {
		b.Set(segmentKey(sl.id), be64(nil, sl.n), nil)
	}
	b.Set(segmentKey(r.segs.wID), be64(nil, r.segs.wLen), nil)
	for h, loc := range r.unsynced {
		r.indexHash(b, h, loc.append(nil))
	}
	b.Set(metaSynced, be64(nil, synced), nil)
	r.synced = synced
	b.Set(metaLog, logPos(r.segs.wID, r.segs.wLen), nil)
	return nil
}

// commitSynced commits b durably with everything journaled before it (the
// writer is held): a synced batch would otherwise make captured steps
// durable in the index while their frames might still be lost.
func (r *Repo) commitSynced(b *pebble.Batch, synced uint64) error {
	ops := b.Repr() // what the batch does, before the bookkeeping below
	record := !b.Empty()
	if record {
		ops = bytes.Clone(ops)
	}
	if err := r.syncContent(b, synced); err != nil {
		return err
	}
	if record && r.recs != nil {
		if err := r.recs.append(r.head.Load(), segPos{r.segs.wID, r.segs.wLen}, ops); err != nil {
			return err
		}
		b.Set(metaRecords, be64(nil, r.recs.size), nil)
	}
	if err := b.Commit(pebble.Sync); err != nil {
		return err
	}
	r.syncedContent()
	return nil
}

// syncedContent forgets the captured content just indexed. The map is made
// anew, not cleared: a map keeps the size it once grew to (a whole disk
// written between two syncs), and every Sync walks it.
func (r *Repo) syncedContent() {
	r.unsynced = map[Hash]location{}
	if r.durable.Load() == r.synced {
		return
	}
	r.durable.Store(r.synced)
	r.durableMu.Lock()
	close(r.durableCh) // wakes every DurableWait
	r.durableCh = make(chan struct{})
	r.durableMu.Unlock()
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

// cutAt deletes every step from seq on (all above the last sync) into b,
// and counts the non-zero versions it deletes per disk into gone.
func (r *Repo) cutAt(b *pebble.Batch, seq uint64, gone map[uint32]uint64) error {
	it, err := r.db.NewIter(&pebble.IterOptions{LowerBound: be64([]byte{kindJournal}, seq), UpperBound: []byte{kindJournal + 1}})
	if err != nil {
		return err
	}
	for it.First(); it.Valid(); it.Next() {
		k := it.Key()
		disk := binary.BigEndian.Uint32(k[9:])
		vk := versionKey(disk, binary.BigEndian.Uint64(k[13:]), binary.BigEndian.Uint64(k[1:]))
		if v, ok, err := r.get(vk); err != nil {
			it.Close()
			return err
		} else if ok && versionValueOK(v) && v[len(Hash{})]&flagZero == 0 {
			gone[disk]++
			b.Delete(refKey(Hash(v[:len(Hash{})]), disk, binary.BigEndian.Uint64(k[13:]), binary.BigEndian.Uint64(k[1:])), nil)
		}
		b.Delete(vk, nil)
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
