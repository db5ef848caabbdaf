package store

import (
	"cmp"
	"encoding/json"
	"fmt"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// CloneDisk makes a new writable disk whose content is base at journal
// position seq, copy-on-write: nothing is copied, blocks the clone never
// wrote read from the base, and the base's history is never touched. The
// clone is on its own timeline, with a first point (no blocks) at its
// creation, so that its "latest" is the base's instant until it is written.
func (r *Repo) CloneDisk(name string, base Disk, seq uint64) (Disk, error) {
	if err := ValidName("disk", name); err != nil {
		return Disk{}, err
	}
	if seq == 0 || seq > r.head.Load() {
		return Disk{}, fmt.Errorf("store: clone of %q at position %d: not a committed position (head %d)", base.Name, seq, r.head.Load())
	}
	s, err := r.Begin(0, time.Time{})
	if err != nil {
		return Disk{}, err
	}
	if err := r.nameFree(name); err != nil {
		s.Abort()
		return Disk{}, err
	}
	next, err := r.getU64(metaNextDisk)
	if err != nil {
		s.Abort()
		return Disk{}, err
	}
	id := uint32(next) + 1
	d := Disk{ID: id, Name: name, Size: base.Size, BlockSize: base.BlockSize, Created: time.Now().UTC(), Timeline: id,
		Base: &Base{Disk: base.Name, ID: base.ID, Seq: seq}}
	v, _ := json.Marshal(d)
	s.tl = id // the new timeline has no point yet: s.last stays zero
	s.b.Set(diskKey(name), v, nil)
	s.b.Set(metaNextDisk, be64(nil, uint64(id)), nil)
	if _, err := s.Commit(); err != nil {
		return Disk{}, fmt.Errorf("store: clone %q: %w", name, err)
	}
	return d, nil
}

// baseImage is the image a clone's unwritten blocks read from.
func (r *Repo) baseImage(d Disk) (*Image, error) {
	bd, err := r.Disk(d.Base.Disk)
	if err != nil {
		return nil, fmt.Errorf("clone %q: base: %w", d.Name, err)
	}
	if bd.ID != d.Base.ID {
		return nil, fmt.Errorf("store: clone %q: base disk %q was replaced: %w", d.Name, d.Base.Disk, ErrCorrupt)
	}
	return r.Image(bd, d.Base.Seq)
}

// DeleteDisk removes a disk and its history: its block versions, journal
// records, points, bookmarks and retention policy. Content shared with other disks stays. A
// disk that is a clone's base, or a member of a group, is refused.
func (r *Repo) DeleteDisk(name string) error {
	if err := r.writable(); err != nil {
		return err
	}
	r.acquire()
	defer r.wmu.Unlock()
	d, err := r.Disk(name)
	if err != nil {
		return err
	}
	if d.Group != "" {
		return fmt.Errorf("%w: disk %q is in group %q", ErrInUse, name, d.Group)
	}
	all, err := r.Disks()
	if err != nil {
		return err
	}
	for _, o := range all {
		if o.Base != nil && o.Base.ID == d.ID {
			return fmt.Errorf("%w: disk %q is the base of clone %q (delete the clone first)", ErrInUse, name, o.Name)
		}
	}
	b := r.db.NewBatch()
	defer b.Close()
	if err := r.deleteDisk(b, d); err != nil {
		return err
	}
	for _, p := range [][]byte{pointPrefix(d.Timeline), bookmarkPrefix(d.Timeline)} {
		b.DeleteRange(p, prefixEnd(p), nil)
	}
	b.Delete(policyKey(d.Timeline), nil) // a lone disk's timeline is its own
	if err := r.commitSynced(b, r.head.Load()); err != nil {
		return fmt.Errorf("store: delete disk %q: %w", name, err)
	}
	delete(r.lastTimes, d.Timeline)
	return r.publish()
}

// CloneGroup clones bases (all at journal position seq) as the disks names
// of a new group: copy-on-write as CloneDisk, but on one timeline, so that
// writes to the clones (a VM booted from a group's instant) keep their order
// across disks. The group has a first point (no blocks) at its creation.
func (r *Repo) CloneGroup(group string, names []string, bases []Disk, seq uint64) (Group, []Disk, error) {
	if len(names) != len(bases) || len(names) == 0 {
		return Group{}, nil, fmt.Errorf("store: clone group %q: %d names for %d disks", group, len(names), len(bases))
	}
	for _, n := range append([]string{group}, names...) {
		if err := ValidName("disk", n); err != nil {
			return Group{}, nil, err
		}
	}
	if seq == 0 || seq > r.head.Load() {
		return Group{}, nil, fmt.Errorf("store: clone group %q at position %d: not a committed position (head %d)", group, seq, r.head.Load())
	}
	s, err := r.Begin(0, time.Time{})
	if err != nil {
		return Group{}, nil, err
	}
	next, err := r.getU64(metaNextDisk)
	if err != nil {
		s.Abort()
		return Group{}, nil, err
	}
	now := time.Now().UTC()
	g := Group{ID: uint32(next) + 1, Name: group, Created: now}
	var disks []Disk
	seen := map[string]bool{}
	for i, n := range append([]string{group}, names...) {
		if err := r.nameFree(n); err != nil || seen[n] {
			s.Abort()
			return Group{}, nil, cmp.Or(err, fmt.Errorf("%w: %q given twice", ErrDiskExists, n))
		}
		seen[n] = true
		if i == 0 {
			continue
		}
		base := bases[i-1]
		d := Disk{ID: g.ID + uint32(i), Name: n, Size: base.Size, BlockSize: base.BlockSize, Created: now,
			Timeline: g.ID, Group: group, Base: &Base{Disk: base.Name, ID: base.ID, Seq: seq}}
		v, _ := json.Marshal(d)
		s.b.Set(diskKey(n), v, nil)
		disks = append(disks, d)
		g.Disks = append(g.Disks, n)
	}
	v, _ := json.Marshal(g)
	s.b.Set(groupKey(group), v, nil)
	s.b.Set(metaNextDisk, be64(nil, uint64(g.ID)+uint64(len(names))), nil)
	s.tl = g.ID // a new timeline: s.last stays zero
	if _, err := s.Commit(); err != nil {
		return Group{}, nil, fmt.Errorf("store: clone group %q: %w", group, err)
	}
	return g, disks, nil
}

// DeleteGroup removes a group and its disks with their history (see
// DeleteDisk), refusing if any of them is a clone's base outside the group.
func (r *Repo) DeleteGroup(name string) error {
	if err := r.writable(); err != nil {
		return err
	}
	r.acquire()
	defer r.wmu.Unlock()
	g, err := r.Group(name)
	if err != nil {
		return err
	}
	all, err := r.Disks()
	if err != nil {
		return err
	}
	members := map[uint32]Disk{}
	for _, d := range all {
		if d.Group == name {
			members[d.ID] = d
		}
	}
	for _, o := range all {
		if _, in := members[o.ID]; !in && o.Base != nil {
			if _, used := members[o.Base.ID]; used {
				return fmt.Errorf("%w: disk %q of group %q is the base of clone %q (delete the clone first)", ErrInUse, o.Base.Disk, name, o.Name)
			}
		}
	}
	b := r.db.NewBatch()
	defer b.Close()
	for _, d := range members {
		if err := r.deleteDisk(b, d); err != nil {
			return err
		}
	}
	for _, p := range [][]byte{pointPrefix(g.ID), bookmarkPrefix(g.ID)} {
		b.DeleteRange(p, prefixEnd(p), nil)
	}
	b.Delete(groupKey(name), nil)
	b.Delete(policyKey(g.ID), nil)
	if err := r.commitSynced(b, r.head.Load()); err != nil {
		return fmt.Errorf("store: delete group %q: %w", name, err)
	}
	delete(r.lastTimes, g.ID)
	return r.publish()
}

// deleteDisk adds to b the removal of d's versions, journal records, count
// and record (its timeline's points and bookmarks are the caller's).
func (r *Repo) deleteDisk(b *pebble.Batch, d Disk) error {
	// The journal is keyed by time; the disk's versions say which of its keys are the disk's.
	err := r.scan(versionPrefix(d.ID), func(k, v []byte) error {
		_, block, seq, ok := versionBlock(k)
		if !ok {
			return fmt.Errorf("store: version key %x: %w", k, ErrCorrupt)
		}
		b.Delete(journalKey(seq, d.ID, block), nil)
		if versionValueOK(v) && v[len(Hash{})]&flagZero == 0 {
			h := Hash(v[:len(Hash{})])
			b.Delete(refKey(h, d.ID, block, seq), nil)
			b.Set(candidateKey(h), nil, nil)
		}
		return nil
	})
	if err != nil {
		return err
	}
	p := versionPrefix(d.ID)
	b.DeleteRange(p, prefixEnd(p), nil)
	b.Delete(diskVersionsKey(d.ID), nil)
	b.Delete(diskKey(d.Name), nil)
	delete(r.versions, d.ID)
	return nil
}
