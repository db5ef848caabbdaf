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
