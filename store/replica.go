package store

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// Replication (cdp/replica) reads a timeline's journal point by point on the
// source (StreamAfter) and journals the same steps at the same times on the
// target (ApplySteps), so that every instant of the replica shows what the
// source's instant at that time shows. The replica's position is the time of
// its newest point: times strictly increase on a timeline and are kept
// exactly, so a stream resumes after that time with no gap and no repeat,
// whatever either side lost in a crash, and no key beside the steps
// themselves has to agree with them.

// Errors of replication.
var (
	// ErrBadContent: content sent for a block does not have the hash it is sent under.
	ErrBadContent = errors.New("store: content does not match its hash")
	// ErrMissingContent: a block was sent by hash only and the repository does not hold that content.
	ErrMissingContent = errors.New("store: content not held")
	// ErrNotReplica: the disk or group is not a replica (of that source).
	ErrNotReplica = errors.New("store: not a replica")
	// ErrReplica: the disk or group is a replica: only its replication writes to it.
	ErrReplica = errors.New("store: disk is a replica")
)

// ReplicaOf marks a disk or group written only by replication from Source.
type ReplicaOf struct {
	Source string    `json:"source"`
	Since  time.Time `json:"since"`
}

// Handover records a failover: the replica became writable at At; Diverged
// is the time of its newest point then, the last instant both sites share.
type Handover struct {
	Source   string    `json:"source"`
	Diverged time.Time `json:"diverged"`
	At       time.Time `json:"at"`
}

// DiskSpec is a disk's name and geometry, as a stream describes it.
type DiskSpec struct {
	Name      string `json:"name"`
	Size      int64  `json:"size"`
	BlockSize int    `json:"block_size"`
}

// StreamBlock is one block version read for replication.
type StreamBlock struct {
	Disk  uint32 // the disk's ID in the source repository
	Block uint64
	Hash  Hash // the zero Hash: written with zeros
	loc   location
}

// StreamStep is one point of a timeline with the versions that became
// visible at it: those journaled after the point before it.
type StreamStep struct {
	Point     Point
	Blocks    []StreamBlock
	Bookmarks []Bookmark // bookmarks that name this point
}

// Durable is the newest journal position known durable.
func (r *Repo) Durable() uint64 { return r.durable.Load() }

// Hold keeps Prune from thinning timeline tl after position after: a
// stream (named who) has yet to send those points as they are. Hold with
// after 0 keeps every point; Release ends the hold.
func (r *Repo) Hold(tl uint32, who string, after uint64) {
	r.holdMu.Lock()
	defer r.holdMu.Unlock()
	if r.streamHolds == nil {
		r.streamHolds = map[uint32]map[string]uint64{}
	}
	if r.streamHolds[tl] == nil {
		r.streamHolds[tl] = map[string]uint64{}
	}
	r.streamHolds[tl][who] = after
}

// Release ends who's hold on timeline tl.
func (r *Repo) Release(tl uint32, who string) {
	r.holdMu.Lock()
	defer r.holdMu.Unlock()
	delete(r.streamHolds[tl], who)
}

// streamHold is the lowest position held on tl, if any stream holds it.
func (r *Repo) streamHold(tl uint32) (uint64, bool) {
	r.holdMu.Lock()
	defer r.holdMu.Unlock()
	low, ok := uint64(0), false
	for _, after := range r.streamHolds[tl] {
		if !ok || after < low {
			low, ok = after, true
		}
	}
	return low, ok
}

// DurableWait returns once the durable position is past after, or when ctx ends.
func (r *Repo) DurableWait(ctx context.Context, after uint64) error {
	for {
		r.durableMu.Lock()
		ch := r.durableCh
		r.durableMu.Unlock()
		if r.durable.Load() > after {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ch:
		}
	}
}

// StreamAfter calls fn, oldest first, for each point of timeline tl later
// than after (the zero time: every point) and at or before position upto.
// A step carries each block's newest version journaled since the point
// before it, so a span pruning thinned reads as the one step that remains.
// Each step is read from a snapshot of its own: a prune running beside the
// stream never makes it give an instant that did not exist. Bookmarks are
// those the timeline had when the stream began. fn must not keep the step
// after it returns.
func (r *Repo) StreamAfter(ctx context.Context, tl uint32, after time.Time, upto uint64, fn func(*StreamStep) error) error {
	members := map[uint32]bool{}
	disks, err := r.Disks()
	if err != nil {
		return err
	}
	for _, d := range disks {
		if d.Timeline == tl {
			if err := notClone(d); err != nil {
				return err
			}
			members[d.ID] = true
		}
	}
	bms, err := r.Bookmarks(Disk{Timeline: tl})
	if err != nil {
		return err
	}
	step := &StreamStep{}
	newest := map[[2]uint64]int{} // disk, block → index in step.Blocks
	var prev uint64               // the position of the point at after
	for first := true; ; first = false {
		if err := ctx.Err(); err != nil {
			return err
		}
		snap := r.db.NewSnapshot()
		ok, err := r.streamStep(snap, tl, after, first, &prev, upto, members, step, newest)
		snap.Close()
		if err != nil || !ok {
			return err
		}
		for _, bm := range bms {
			if bm.Seq == step.Point.Seq {
				step.Bookmarks = append(step.Bookmarks, bm)
			}
		}
		if err := fn(step); err != nil {
			return err
		}
		after, prev = step.Point.Time, step.Point.Seq
	}
}

// notClone refuses a clone for replication: the stream carries a disk's own
// versions, and a clone's image also shows its base's, which it would lack.
func notClone(d Disk) error {
	if d.Base == nil {
		return nil
	}
	return fmt.Errorf("store: %q is a clone of %q: its journal holds only what was written to it since, not its base, "+
		"so a replica of it would show other images; replicate a full copy instead (export it and import the image into a new disk)", d.Name, d.Base.Disk)
}

// streamStep reads into step, from snap, the first point of tl after time
// after, if it is at or before upto, with the versions journaled in
// (*prev, its position]; first sets *prev to the position of the point at
// after (0 if none).
func (r *Repo) streamStep(snap *pebble.Snapshot, tl uint32, after time.Time, first bool, prev *uint64, upto uint64,
	members map[uint32]bool, step *StreamStep, newest map[[2]uint64]int) (bool, error) {
	lower := pointPrefix(tl)
	if !after.IsZero() {
		lower = append(pointKey(tl, after), 0)
	}
	pts, err := snap.NewIter(&pebble.IterOptions{LowerBound: pointPrefix(tl), UpperBound: prefixEnd(pointPrefix(tl))})
	if err != nil {
		return false, err
	}
	defer pts.Close()
	if first && !after.IsZero() && pts.SeekLT(lower) {
		p, err := decodePoint(pts.Key(), pts.Value())
		if err != nil {
			return false, err
		}
		*prev = p.Seq
	}
	if !pts.SeekGE(lower) {
		return false, pts.Error()
	}
	p, err := decodePoint(pts.Key(), pts.Value())
	if err != nil || p.Seq > upto {
		return false, err
	}
	step.Point, step.Blocks, step.Bookmarks = p, step.Blocks[:0], step.Bookmarks[:0]
	clear(newest)
	return true, r.streamVersions(snap, *prev, p.Seq, members, step, newest)
}

// streamVersions adds to step the newest version of each block of members
// journaled in (lo, hi], as snap has them.
func (r *Repo) streamVersions(snap *pebble.Snapshot, lo, hi uint64, members map[uint32]bool, step *StreamStep, newest map[[2]uint64]int) error {
	it, err := snap.NewIter(&pebble.IterOptions{
		LowerBound: be64([]byte{kindJournal}, lo+1),
		UpperBound: be64([]byte{kindJournal}, hi+1),
	})
	if err != nil {
		return err
	}
	defer it.Close()
	for ok := it.First(); ok; ok = it.Next() {
		k := it.Key()
		if len(k) != 21 {
			return fmt.Errorf("store: journal key %x: %w", k, ErrCorrupt)
		}
		seq, disk, block := binary.BigEndian.Uint64(k[1:]), binary.BigEndian.Uint32(k[9:]), binary.BigEndian.Uint64(k[13:])
		if !members[disk] {
			continue
		}
		v, closer, err := snap.Get(versionKey(disk, block, seq))
		if errors.Is(err, pebble.ErrNotFound) || (err == nil && !versionValueOK(v)) {
			if closer != nil {
				closer.Close()
			}
			return fmt.Errorf("store: journal entry %d of block %d of disk %d has no version: %w", seq, block, disk, ErrCorrupt)
		}
		if err != nil {
			return err
		}
		b := StreamBlock{Disk: disk, Block: block}
		copy(b.Hash[:], v)
		b.loc, err = decodeLocation(v[len(Hash{}):])
		closer.Close()
		if err != nil {
			return err
		}
		if b.loc.flags&flagZero != 0 {
			b.Hash = Hash{}
		}
		key := [2]uint64{uint64(disk), block}
		if i, ok := newest[key]; ok { // seq order: this one is newer
			step.Blocks[i] = b
			continue
		}
		newest[key] = len(step.Blocks)
		step.Blocks = append(step.Blocks, b)
	}
	return it.Error()
}

// StoredContent returns block b's content as stored (a zstd frame when
// zstd), checked against its checksum, or against its hash when it has none.
func (r *Repo) StoredContent(b StreamBlock, blockSize int) (stored []byte, zstd bool, err error) {
	if b.Hash == (Hash{}) {
		return nil, false, nil
	}
	loc := b.loc
	if r.isRetired(loc.seg) {
		if l, ok, err := r.relocated(b.Hash); err != nil {
			return nil, false, err
		} else if ok {
			loc = l
		}
	}
	stored = make([]byte, loc.n)
	if err := r.segs.readRaw(stored, loc.seg, loc.off); err != nil {
		return nil, false, damage(Disk{ID: b.Disk, BlockSize: blockSize}, b.Block, version{found: true, hash: b.Hash, loc: loc}, err)
	}
	v := version{found: true, hash: b.Hash, loc: loc}
	var decode func() error
	if loc.flags&flagSum == 0 {
		plain := make([]byte, blockSize)
		decode = func() error { return r.segs.decode(plain, stored, loc.flags) }
		if err := check(v, stored, plain, decode); err != nil {
			return nil, false, damage(Disk{ID: b.Disk, BlockSize: blockSize}, b.Block, v, err)
		}
	} else if err := check(v, stored, nil, nil); err != nil {
		return nil, false, damage(Disk{ID: b.Disk, BlockSize: blockSize}, b.Block, v, err)
	}
	return stored, loc.flags&flagZstd != 0, nil
}
