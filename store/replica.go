package store

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
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
// fn must not keep the step after it returns.
func (r *Repo) StreamAfter(ctx context.Context, tl uint32, after time.Time, upto uint64, fn func(*StreamStep) error) error {
	members := map[uint32]bool{}
	disks, err := r.Disks()
	if err != nil {
		return err
	}
	for _, d := range disks {
		if d.Timeline == tl {
			members[d.ID] = true
		}
	}
	var prev uint64
	lower := pointPrefix(tl)
	if !after.IsZero() {
		p, err := r.PointAt(tl, after)
		if err == nil {
			prev = p.Seq
		} else if !errors.Is(err, ErrNoPoint) {
			return err
		}
		lower = append(pointKey(tl, after), 0)
	}
	pts, err := r.db.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: prefixEnd(pointPrefix(tl))})
	if err != nil {
		return err
	}
	defer pts.Close()
	bms, err := r.Bookmarks(Disk{Timeline: tl})
	if err != nil {
		return err
	}
	step := &StreamStep{}
	newest := map[[2]uint64]int{} // disk, block → index in step.Blocks
	for ok := pts.First(); ok; ok = pts.Next() {
		if err := ctx.Err(); err != nil {
			return err
		}
		p, err := decodePoint(pts.Key(), pts.Value())
		if err != nil {
			return err
		}
		if p.Seq > upto {
			break
		}
		step.Point, step.Blocks, step.Bookmarks = p, step.Blocks[:0], step.Bookmarks[:0]
		clear(newest)
		if err := r.streamVersions(prev, p.Seq, members, step, newest); err != nil {
			return err
		}
		for _, bm := range bms {
			if bm.Seq == p.Seq {
				step.Bookmarks = append(step.Bookmarks, bm)
			}
		}
		if err := fn(step); err != nil {
			return err
		}
		prev = p.Seq
	}
	return pts.Error()
}

// streamVersions adds to step the newest version of each block of members
// journaled in (lo, hi].
func (r *Repo) streamVersions(lo, hi uint64, members map[uint32]bool, step *StreamStep, newest map[[2]uint64]int) error {
	it, err := r.db.NewIter(&pebble.IterOptions{
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
		v, ok, err := r.get(versionKey(disk, block, seq))
		if err != nil {
			return err
		}
		if !ok || !versionValueOK(v) {
			return fmt.Errorf("store: journal entry %d of block %d of disk %d has no version: %w", seq, block, disk, ErrCorrupt)
		}
		b := StreamBlock{Disk: disk, Block: block}
		copy(b.Hash[:], v)
		if b.loc, err = decodeLocation(v[len(Hash{}):]); err != nil {
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

// HasContent sets out[i] to whether the repository holds content hs[i].
func (r *Repo) HasContent(hs []Hash, out []bool) error {
	r.wmu.Lock()
	defer r.wmu.Unlock()
	for i, h := range hs {
		_, ok, err := r.holds(h)
		if err != nil {
			return err
		}
		out[i] = ok
	}
	return nil
}

// holds finds content h in the writer's unsynced content or the index; the
// writer is held.
func (r *Repo) holds(h Hash) (location, bool, error) {
	if loc, ok := r.unsynced[h]; ok {
		return loc, true, nil
	}
	if !r.known.mayHold(h) {
		return location{}, false, nil
	}
	v, ok, err := r.get(hashKey(h))
	if err != nil || !ok {
		return location{}, false, err
	}
	loc, err := decodeLocation(v)
	return loc, err == nil, err
}

// IncomingBlock is one block of a replicated step.
type IncomingBlock struct {
	Disk   Disk
	Block  uint64
	Hash   Hash   // the zero Hash: zeros
	Stored []byte // the content as sent; nil when the repository holds it
	Zstd   bool   // Stored is a zstd frame
}

// IncomingStep is one replicated step: its source time and its blocks.
type IncomingStep struct {
	Time   time.Time
	Blocks []IncomingBlock
}

// ApplySteps journals replicated steps on timeline tl, each at its source
// time (which must come after the timeline's newest), as captured steps:
// visible at once, durable after the next Sync. Every block sent with
// content is checked against its hash first, and every block sent without
// must be held: otherwise nothing is journaled (ErrBadContent,
// ErrMissingContent).
func (r *Repo) ApplySteps(tl uint32, steps []IncomingStep) error {
	if err := r.writable(); err != nil {
		return err
	}
	if err := r.space.admit(0); err != nil {
		return err
	}
	es := make([]*entry, len(steps))
	for i, st := range steps {
		e := &entry{tl: tl, at: st.Time, writes: make([]BlockWrite, len(st.Blocks)), prep: make([]prepared, len(st.Blocks))}
		for j, b := range st.Blocks {
			if b.Disk.Timeline != tl {
				return fmt.Errorf("store: disk %q is not on timeline %d", b.Disk.Name, tl)
			}
			p, err := r.incoming(b)
			if err != nil {
				return err
			}
			e.writes[j] = BlockWrite{Disk: b.Disk, Block: b.Block}
			e.prep[j] = p
		}
		es[i] = e
	}
	if err := r.drain(); err != nil {
		return err
	}
	r.wmu.Lock()
	defer r.wmu.Unlock()
	for _, e := range es {
		if len(e.writes) > 0 {
			if err := r.stillReplica(e.writes[0].Disk); err != nil {
				return err
			}
			break
		}
	}
	for _, e := range es {
		for j, p := range e.prep {
			if p.hash == (Hash{}) || p.stored != nil {
				continue
			}
			if _, ok, err := r.holds(p.hash); err != nil {
				return err
			} else if !ok {
				w := e.writes[j]
				return fmt.Errorf("%w: %x for block %d of disk %q", ErrMissingContent, p.hash[:8], w.Block, w.Disk.Name)
			}
		}
	}
	_, err := r.captureLocked(es, false)
	return err
}

// stillReplica refuses a stream's steps into d once d was failed over (the
// writer is held, as Failover holds it to make the change).
func (r *Repo) stillReplica(d Disk) error {
	cur, err := r.Disk(d.Name)
	if err != nil {
		return err
	}
	if cur.Replica == nil || cur.ID != d.ID {
		return fmt.Errorf("%w: %q is writable here now (failed over): its stream ends", ErrNotReplica, d.Name)
	}
	return nil
}

// incoming checks one replicated block and prepares it for the journal.
func (r *Repo) incoming(b IncomingBlock) (prepared, error) {
	if b.Block >= b.Disk.Blocks() {
		return prepared{}, fmt.Errorf("%w: block %d of disk %q", ErrOutOfRange, b.Block, b.Disk.Name)
	}
	if b.Hash == (Hash{}) || b.Hash == r.zeroHash(b.Disk.BlockSize) {
		return prepared{}, nil
	}
	if b.Stored == nil {
		return prepared{hash: b.Hash}, nil
	}
	if len(b.Stored) > maxStored || (!b.Zstd && len(b.Stored) != b.Disk.BlockSize) {
		return prepared{}, fmt.Errorf("%w: %d bytes for block %d of disk %q", ErrBadContent, len(b.Stored), b.Block, b.Disk.Name)
	}
	plain := b.Stored
	flags := uint8(flagTried)
	if b.Zstd {
		plain = make([]byte, b.Disk.BlockSize)
		if err := r.segs.decode(plain, b.Stored, flagZstd); err != nil {
			return prepared{}, fmt.Errorf("%w: block %d of disk %q: %v", ErrBadContent, b.Block, b.Disk.Name, err)
		}
		flags |= flagZstd
	}
	if HashBlock(plain) != b.Hash {
		return prepared{}, fmt.Errorf("%w: block %d of disk %q", ErrBadContent, b.Block, b.Disk.Name)
	}
	if IsZero(plain) {
		return prepared{}, nil
	}
	return prepared{hash: b.Hash, stored: b.Stored, flags: flags}, nil
}

// zeroHash is ZeroHash(n), cached; safe without the writer.
func (r *Repo) zeroHash(n int) Hash {
	if h, ok := r.zeroCache.Load(n); ok {
		return h.(Hash)
	}
	h := ZeroHash(n)
	r.zeroCache.Store(n, h)
	return h
}

// ReplicaPosition is the time of timeline tl's newest point: where a stream
// into it resumes (the zero time: from the start).
func (r *Repo) ReplicaPosition(tl uint32) (time.Time, error) {
	p, err := r.LastPoint(tl)
	if errors.Is(err, ErrNoPoint) {
		return time.Time{}, nil
	}
	return p.Time, err
}

// CreateReplica makes name a replica of source: a lone disk (one spec) or a
// group of the specs' disks, created empty where it does not exist. An
// existing one must be a replica of source with the same disks. It returns
// the timeline and the disks in the specs' order.
func (r *Repo) CreateReplica(name, source string, group bool, specs []DiskSpec) (uint32, []Disk, error) {
	if err := r.writable(); err != nil {
		return 0, nil, err
	}
	if len(specs) == 0 || (!group && (len(specs) != 1 || specs[0].Name != name)) {
		return 0, nil, fmt.Errorf("store: replica %q: a lone disk is one spec of its own name, a group one spec per disk", name)
	}
	if tl, disks, err := r.Members(name); err == nil {
		return tl, disks, sameReplica(name, source, group, specs, disks)
	} else if !errors.Is(err, ErrUnknownDisk) {
		return 0, nil, err
	}
	r.acquire()
	defer r.wmu.Unlock()
	if err := r.nameFree(name); err != nil {
		return 0, nil, err
	}
	next, err := r.getU64(metaNextDisk)
	if err != nil {
		return 0, nil, err
	}
	now := time.Now().UTC()
	of := &ReplicaOf{Source: source, Since: now}
	b := r.db.NewBatch()
	defer b.Close()
	var g *Group
	if group {
		next++
		g = &Group{ID: uint32(next), Name: name, Disks: []string{}, Created: now, Replica: of}
	}
	disks := make([]Disk, 0, len(specs))
	for _, s := range specs {
		if err := validSpec(s); err != nil {
			return 0, nil, err
		}
		if group {
			if err := r.nameFree(s.Name); err != nil {
				return 0, nil, err
			}
		}
		next++
		d := Disk{ID: uint32(next), Name: s.Name, Size: s.Size, BlockSize: s.BlockSize, Created: now, Timeline: uint32(next), Replica: of}
		if g != nil {
			d.Timeline, d.Group = g.ID, g.Name
			g.Disks = append(g.Disks, d.Name)
		}
		v, _ := json.Marshal(d)
		b.Set(diskKey(d.Name), v, nil)
		disks = append(disks, d)
	}
	if g != nil {
		v, _ := json.Marshal(g)
		b.Set(groupKey(g.Name), v, nil)
	}
	b.Set(metaNextDisk, be64(nil, next), nil)
	if err := r.commitSynced(b, r.head.Load()); err != nil {
		return 0, nil, fmt.Errorf("store: create replica %q: %w", name, err)
	}
	return disks[0].Timeline, disks, r.publish()
}

func validSpec(s DiskSpec) error {
	if err := ValidName("disk", s.Name); err != nil {
		return err
	}
	if s.BlockSize < MinBlockSize || s.BlockSize > MaxBlockSize || s.BlockSize&(s.BlockSize-1) != 0 ||
		s.Size <= 0 || s.Size > MaxDiskSize || s.Size%int64(s.BlockSize) != 0 {
		return fmt.Errorf("%w: disk %q of %d bytes in blocks of %d", ErrBadGeometry, s.Name, s.Size, s.BlockSize)
	}
	return nil
}

// sameReplica checks that existing disks are the replica specs describe.
func sameReplica(name, source string, group bool, specs []DiskSpec, disks []Disk) error {
	if len(disks) != len(specs) || (group && disks[0].Group != name) || (!group && disks[0].Group != "") {
		return fmt.Errorf("%w: %q here has other disks than the source's", ErrNotReplica, name)
	}
	for i, d := range disks {
		if d.Replica == nil {
			return fmt.Errorf("%w: %q is a writable disk here (fail back into it with replicate --failback from the other site)", ErrNotReplica, d.Name)
		}
		if d.Replica.Source != source {
			return fmt.Errorf("%w: %q replicates %q, not %q", ErrNotReplica, d.Name, d.Replica.Source, source)
		}
		s := specs[i]
		if d.Name != s.Name || d.Size != s.Size || d.BlockSize != s.BlockSize {
			return fmt.Errorf("%w: disk %q here is %d bytes in blocks of %d, the source's %q %d in %d", ErrNotReplica, d.Name, d.Size, d.BlockSize, s.Name, s.Size, s.BlockSize)
		}
	}
	return nil
}

// Failover makes the replica name (a disk or group) writable at its newest
// point, records the handover on it and bookmarks it ("failover-<time>").
func (r *Repo) Failover(name string) (Handover, error) {
	if err := r.writable(); err != nil {
		return Handover{}, err
	}
	tl, disks, err := r.Members(name)
	if err != nil {
		return Handover{}, err
	}
	if disks[0].Replica == nil {
		return Handover{}, fmt.Errorf("%w: %q is already writable here", ErrNotReplica, name)
	}
	last, err := r.LastPoint(tl)
	if err != nil {
		return Handover{}, fmt.Errorf("store: fail over %q: it has received nothing yet: %w", name, err)
	}
	h := Handover{Source: disks[0].Replica.Source, Diverged: last.Time, At: time.Now().UTC()}
	if !h.At.After(last.Time) {
		h.At = last.Time.Add(time.Nanosecond)
	}
	err = r.setReplica(name, disks, func(d *ReplicaOf, ho **Handover) (*ReplicaOf, *Handover) { return nil, &h })
	if err != nil {
		return Handover{}, err
	}
	_, err = r.Mark(disks[0], Bookmark{Name: "failover-" + stamp(h.At), Time: h.At, Kind: KindUser})
	return h, err
}

// stamp is a time as a bookmark name can hold it.
func stamp(t time.Time) string { return t.UTC().Format("20060102T150405.000000000Z") }

// setReplica rewrites the replica and handover records of name's disks
// (and group) with what set returns, in one synced batch.
func (r *Repo) setReplica(name string, disks []Disk, set func(*ReplicaOf, **Handover) (*ReplicaOf, *Handover)) error {
	r.acquire()
	defer r.wmu.Unlock()
	b := r.db.NewBatch()
	defer b.Close()
	for _, d := range disks {
		d.Replica, d.Handover = set(d.Replica, &d.Handover)
		v, _ := json.Marshal(d)
		b.Set(diskKey(d.Name), v, nil)
	}
	if disks[0].Group != "" {
		g, err := r.Group(disks[0].Group)
		if err != nil {
			return err
		}
		g.Replica, g.Handover = set(g.Replica, &g.Handover)
		v, _ := json.Marshal(g)
		b.Set(groupKey(g.Name), v, nil)
	}
	if err := r.commitSynced(b, r.head.Load()); err != nil {
		return fmt.Errorf("store: replica record of %q: %w", name, err)
	}
	return r.publish()
}

// AcceptFailback turns name, a writable disk or group that shares its
// history up to diverged with the other site, into a replica of source
// again: it bookmarks its head ("failback-<time>"), then journals at time at
// (the other site's handover) one step that brings every block written
// since diverged back to its content then, so that the stream of what the
// other site wrote since at follows. Blocks are only re-pointed at content
// the repository holds: nothing crosses the wire for them.
func (r *Repo) AcceptFailback(ctx context.Context, name, source string, diverged, at time.Time) error {
	if err := r.writable(); err != nil {
		return err
	}
	tl, disks, err := r.Members(name)
	if err != nil {
		return err
	}
	if disks[0].Replica != nil {
		if disks[0].Replica.Source != source {
			return fmt.Errorf("%w: %q replicates %q, not %q", ErrNotReplica, name, disks[0].Replica.Source, source)
		}
		return nil // accepted before: the stream resumes
	}
	base, err := r.PointAt(tl, diverged)
	if err != nil || !base.Time.Equal(diverged) {
		return fmt.Errorf("%w: %q here has no point at %s, the last instant the other site has of it: the two do not share that history", ErrNotReplica, name, diverged.Format(time.RFC3339Nano))
	}
	last, err := r.lastTime(tl)
	if err != nil {
		return err
	}
	if !at.After(last) {
		return fmt.Errorf("%w: %q was written here at %s, after the other site took over at %s: stop writing it here first, or check both clocks", ErrTimeOrder, name, last.Format(time.RFC3339Nano), at.Format(time.RFC3339Nano))
	}
	head := r.Head()
	// The handover, and what this site wrote after the divergence, stay named.
	if _, err := r.Mark(disks[0], Bookmark{Name: "failback-" + stamp(at), Time: last, Kind: KindUser}); err != nil && !errors.Is(err, ErrBookmarkExists) {
		return err
	}
	st, err := r.Begin(tl, at)
	if err != nil {
		return err
	}
	for _, d := range disks {
		if err := ctx.Err(); err != nil {
			st.Abort()
			return err
		}
		if err := r.revertBlocks(st, d, base.Seq, head); err != nil {
			st.Abort()
			return err
		}
	}
	if _, err := st.Commit(); err != nil {
		return err
	}
	of := &ReplicaOf{Source: source, Since: time.Now().UTC()}
	return r.setReplica(name, disks, func(*ReplicaOf, **Handover) (*ReplicaOf, *Handover) { return of, nil })
}

// revertBlocks puts into st, for each block of d written in (base, head],
// its version at base.
func (r *Repo) revertBlocks(st *Step, d Disk, base, head uint64) error {
	var changed []uint64
	it, err := r.db.NewIter(&pebble.IterOptions{LowerBound: be64([]byte{kindJournal}, base+1), UpperBound: be64([]byte{kindJournal}, head+1)})
	if err != nil {
		return err
	}
	for ok := it.First(); ok; ok = it.Next() {
		k := it.Key()
		if len(k) == 21 && binary.BigEndian.Uint32(k[9:]) == d.ID {
			changed = append(changed, binary.BigEndian.Uint64(k[13:]))
		}
	}
	if err := errors.Join(it.Error(), it.Close()); err != nil {
		return err
	}
	slices.Sort(changed)
	changed = slices.Compact(changed)
	im, err := r.Image(d, base)
	if err != nil {
		return err
	}
	vs := make([]version, 1)
	for _, blk := range changed {
		if err := im.versions(blk, vs); err != nil {
			return err
		}
		v := vs[0]
		if !v.found || v.loc.flags&flagZero != 0 {
			st.index(d, blk, st.zeroHash(d.BlockSize), location{flags: flagZero})
			continue
		}
		st.index(d, blk, v.hash, v.loc)
	}
	return nil
}

// IncomingPart journals a replicated step too large for one ApplySteps, a
// part at a time. It holds the writer from BeginIncoming to Commit or Abort
// (other writes of the repository wait), and is durable once Commit returns.
type IncomingPart struct {
	st      *Step
	checked bool // the disks were found still a replica
}

// BeginIncoming starts a replicated step on timeline tl at its source time.
func (r *Repo) BeginIncoming(tl uint32, at time.Time) (*IncomingPart, error) {
	st, err := r.Begin(tl, at)
	if err != nil {
		return nil, err
	}
	return &IncomingPart{st: st}, nil
}

// Put journals blocks of the step, checked as ApplySteps checks them.
func (p *IncomingPart) Put(blocks []IncomingBlock) error {
	if len(blocks) > 0 && !p.checked {
		if err := p.st.r.stillReplica(blocks[0].Disk); err != nil {
			return err
		}
		p.checked = true
	}
	for _, b := range blocks {
		if err := p.st.check(b.Disk, b.Block, nil); err != nil {
			return err
		}
		prep, err := p.st.r.incoming(b)
		if err != nil {
			return err
		}
		if prep.hash != (Hash{}) && prep.stored == nil {
			if _, ok, err := p.st.stored(prep.hash); err != nil {
				return err
			} else if !ok {
				return fmt.Errorf("%w: %x for block %d of disk %q", ErrMissingContent, prep.hash[:8], b.Block, b.Disk.Name)
			}
		}
		if err := p.st.putPrepared(b.Disk, b.Block, prep); err != nil {
			return err
		}
	}
	return nil
}

// HasContent is Repo.HasContent for the stream that holds the writer with
// p (Repo.HasContent would wait for it): the step's own content counts.
func (p *IncomingPart) HasContent(hs []Hash, out []bool) error {
	for i, h := range hs {
		_, ok, err := p.st.stored(h)
		if err != nil {
			return err
		}
		out[i] = ok
	}
	return nil
}

// Commit ends the step: durable and visible.
func (p *IncomingPart) Commit() (Point, error) { return p.st.Commit() }

// Abort drops the step.
func (p *IncomingPart) Abort() error { return p.st.Abort() }
