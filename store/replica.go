package store

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/klauspost/compress/zstd"
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

// HasContent sets out[i] to whether the repository holds content hs[i]. It
// waits for the writer: while an IncomingPart is open, ask the part.
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
// time (which must come after the timeline's newest, and after the step
// before it), as captured steps: visible at once, durable after the next
// Sync. Every block sent with content is checked against its hash first,
// and every block sent without must be held, or sent with content by an
// earlier block of the call: otherwise nothing is journaled (ErrBadContent,
// ErrMissingContent, ErrTimeOrder, ErrOutOfRange).
func (r *Repo) ApplySteps(tl uint32, steps []IncomingStep) error {
	if err := r.writable(); err != nil {
		return err
	}
	if err := r.space.admit(0); err != nil {
		return err
	}
	es := make([]*entry, len(steps))
	for i, st := range steps {
		if st.Time.IsZero() {
			return fmt.Errorf("%w: replicated step %d of %d has no time", ErrTimeOrder, i+1, len(steps))
		}
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
	// Every check comes before the first step's frame is appended: a frame
	// appended and then refused would be replayed by the next open after a
	// crash, as a step at the position the next one takes.
	last, err := r.lastTime(tl)
	if err != nil {
		return err
	}
	for i, e := range es {
		if !e.at.After(last) {
			return fmt.Errorf("%w: replicated step %d of %d is at %s, not after %s (the newest point or bookmark, or the step before)",
				ErrTimeOrder, i+1, len(es), e.at.UTC().Format(time.RFC3339Nano), last.Format(time.RFC3339Nano))
		}
		last = e.at
	}
	sent := map[Hash]bool{} // content sent earlier in this call serves the blocks after it
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
			if p.stored != nil {
				sent[p.hash] = true
			}
			if p.hash == (Hash{}) || p.stored != nil || sent[p.hash] {
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
	_, err = r.captureLocked(es, false)
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
	// Content is kept compressed only when that makes it smaller: a larger
	// frame would cost more than the block, up to maxStored for each.
	if (b.Zstd && len(b.Stored) >= b.Disk.BlockSize) || (!b.Zstd && len(b.Stored) != b.Disk.BlockSize) {
		return prepared{}, fmt.Errorf("%w: %d bytes for block %d of disk %q (%d bytes, smaller when compressed)",
			ErrBadContent, len(b.Stored), b.Block, b.Disk.Name, b.Disk.BlockSize)
	}
	plain := b.Stored
	flags := uint8(flagTried)
	if b.Zstd {
		plain = make([]byte, b.Disk.BlockSize)
		if err := r.decodeIncoming(plain, b.Stored); err != nil {
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

// decodeIncoming decodes a zstd frame sent for a block into dst (a
// block), decoding no more than that: a small frame may claim, or hold,
// gigabytes, and the repository's own decoder would make room for them.
func (r *Repo) decodeIncoming(dst, stored []byte) error {
	r.inDecOnce.Do(func() {
		r.inDec, r.inDecErr = zstd.NewReader(nil, zstd.WithDecodeAllCapLimit(true),
			zstd.WithDecoderConcurrency(runtime.GOMAXPROCS(0)))
	})
	if r.inDecErr != nil {
		return r.inDecErr
	}
	out, err := r.inDec.DecodeAll(stored, dst[:0:len(dst)])
	if err != nil || len(out) != len(dst) || &out[0] != &dst[0] {
		return fmt.Errorf("compressed content does not decode to a block of %d bytes (%v)", len(dst), err)
	}
	return nil
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
	names := map[string]bool{name: group}
	for _, s := range specs {
		if err := validSpec(s); err != nil {
			return 0, nil, err
		}
		if names[s.Name] {
			return 0, nil, fmt.Errorf("%w: replica %q names %q twice (as its group or a disk)", ErrDiskExists, name, s.Name)
		}
		names[s.Name] = true
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
// point, records the handover on it and bookmarks it ("failover-<time>"),
// in one synced batch. The handover's time comes after everything the
// replica holds, even when the source's clock ran ahead of this one.
func (r *Repo) Failover(name string) (Handover, error) {
	if err := r.writable(); err != nil {
		return Handover{}, err
	}
	r.acquire()
	defer r.wmu.Unlock()
	tl, disks, err := r.Members(name)
	if err != nil {
		return Handover{}, err
	}
	if len(disks) == 0 {
		return Handover{}, fmt.Errorf("%w: group %q has no disks", ErrNotReplica, name)
	}
	if disks[0].Replica == nil {
		return Handover{}, fmt.Errorf("%w: %q is already writable here", ErrNotReplica, name)
	}
	last, err := r.LastPoint(tl)
	if err != nil {
		return Handover{}, fmt.Errorf("store: fail over %q: it has received nothing yet: %w", name, err)
	}
	newest, err := r.lastTime(tl)
	if err != nil {
		return Handover{}, err
	}
	now := time.Now().UTC()
	h := Handover{Source: disks[0].Replica.Source, Diverged: last.Time, At: now}
	if !h.At.After(newest) {
		h.At = newest.Add(time.Nanosecond)
	}
	bm := Bookmark{Name: "failover-" + stamp(h.At), Disk: timelineName(disks[0]), Seq: last.Seq, Time: h.At, Kind: KindUser, Created: now}
	b := r.db.NewBatch()
	defer b.Close()
	if err := r.replicaRecords(b, disks, nil, &h); err != nil {
		return Handover{}, err
	}
	v, _ := json.Marshal(bm)
	b.Set(bookmarkKey(tl, bm.Name), v, nil)
	if err := r.commitSynced(b, r.head.Load()); err != nil {
		return Handover{}, fmt.Errorf("store: fail over %q: %w", name, err)
	}
	r.lastTimes[tl] = h.At // the next write comes after the handover
	return h, r.publish()
}

// stamp is a time as a bookmark name can hold it.
func stamp(t time.Time) string { return t.UTC().Format("20060102T150405.000000000Z") }

// replicaRecords sets in b the replica and handover records of disks (and
// of their group); the writer is held.
func (r *Repo) replicaRecords(b *pebble.Batch, disks []Disk, of *ReplicaOf, h *Handover) error {
	for _, d := range disks {
		d.Replica, d.Handover = of, h
		v, _ := json.Marshal(d)
		b.Set(diskKey(d.Name), v, nil)
	}
	if disks[0].Group != "" {
		g, err := r.Group(disks[0].Group)
		if err != nil {
			return err
		}
		g.Replica, g.Handover = of, h
		v, _ := json.Marshal(g)
		b.Set(groupKey(g.Name), v, nil)
	}
	return nil
}

// AcceptFailback turns name, a writable disk or group that shares its
// history up to diverged with the other site, into a replica of source
// again: it bookmarks its head ("failback-<time>"), then journals at time at
// (the other site's handover) one step that brings every block written
// since diverged back to its content then, so that the stream of what the
// other site wrote since at follows; that step and the replica record are
// one batch. Blocks are only re-pointed at content the repository holds:
// nothing crosses the wire for them. Writes to name must have stopped: one
// at or after at is refused (ErrTimeOrder).
func (r *Repo) AcceptFailback(ctx context.Context, name, source string, diverged, at time.Time) error {
	if err := r.writable(); err != nil {
		return err
	}
	tl, disks, err := r.Members(name)
	if err != nil {
		return err
	}
	if len(disks) == 0 {
		return fmt.Errorf("%w: group %q has no disks", ErrNotReplica, name)
	}
	for _, d := range disks {
		if err := notClone(d); err != nil {
			return err
		}
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
	r.acquire()
	last, err := r.lastTime(tl)
	r.wmu.Unlock()
	if err != nil {
		return err
	}
	if !at.After(last) {
		return fmt.Errorf("%w: %q was written here at %s, after the other site took over at %s: stop writing it here first, or check both clocks", ErrTimeOrder, name, last.Format(time.RFC3339Nano), at.Format(time.RFC3339Nano))
	}
	// The handover, and what this site wrote after the divergence, stay named.
	if _, err := r.Mark(disks[0], Bookmark{Name: "failback-" + stamp(at), Time: last, Kind: KindUser}); err != nil && !errors.Is(err, ErrBookmarkExists) {
		return err
	}
	st, err := r.Begin(tl, at) // refuses a write that came since
	if err != nil {
		return err
	}
	head := st.Seq() - 1
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
	if err := r.replicaRecords(st.b, disks, &ReplicaOf{Source: source, Since: time.Now().UTC()}, nil); err != nil {
		st.Abort()
		return err
	}
	_, err = st.Commit()
	return err
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
// (other writes of the repository wait, and so does Repo.HasContent: ask
// the part instead), and is durable once Commit returns.
type IncomingPart struct {
	st      *Step
	checked bool // the disks were found still a replica
}

// BeginIncoming starts a replicated step on timeline tl at its source time.
func (r *Repo) BeginIncoming(tl uint32, at time.Time) (*IncomingPart, error) {
	if at.IsZero() {
		return nil, fmt.Errorf("%w: a replicated step has no time", ErrTimeOrder)
	}
	st, err := r.Begin(tl, at)
	if err != nil {
		return nil, err
	}
	return &IncomingPart{st: st}, nil
}

// errPartEnded: a part of a step that was committed or aborted.
var errPartEnded = errors.New("store: the replicated step has ended (committed or aborted)")

// HasContent is Repo.HasContent for the step's next part: it counts the
// content of its earlier parts, and does not wait for the writer the step
// holds.
func (p *IncomingPart) HasContent(hs []Hash, out []bool) error {
	if p.st.done {
		return errPartEnded
	}
	for i, h := range hs {
		_, ok, err := p.st.stored(h)
		if err != nil {
			return err
		}
		out[i] = ok
	}
	return nil
}

// Put journals blocks of the step, checked as ApplySteps checks them.
func (p *IncomingPart) Put(blocks []IncomingBlock) error {
	if p.st.done {
		return errPartEnded
	}
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

// Commit ends the step: durable and visible.
func (p *IncomingPart) Commit() (Point, error) { return p.st.Commit() }

// Abort drops the step.
func (p *IncomingPart) Abort() error { return p.st.Abort() }
