package store

import (
	"encoding/json"
	"errors"
	"fmt"
)

// SetProfile records the VM profile of name, a disk (a lone one: a group
// member's VM is its group's) or a group. Zero fields keep what was there.
func (r *Repo) SetProfile(name string, p Profile) error {
	return r.update(name, func(d *Disk, g *Group) error {
		cur := &Profile{}
		switch {
		case d != nil && d.Group != "":
			return fmt.Errorf("store: disk %q is in group %q: set the group's profile", name, d.Group)
		case d != nil && d.Profile != nil:
			cur = d.Profile
		case g != nil && g.Profile != nil:
			cur = g.Profile
		}
		merged := *cur
		if p.MemoryMB > 0 {
			merged.MemoryMB = p.MemoryMB
		}
		if p.CPUs > 0 {
			merged.CPUs = p.CPUs
		}
		if p.GuestID != "" {
			merged.GuestID = p.GuestID
		}
		if d != nil {
			d.Profile = &merged
		} else {
			g.Profile = &merged
		}
		return nil
	})
}

// SetController records the kind of controller disk hangs on in its VM.
func (r *Repo) SetController(disk, kind string) error {
	return r.update(disk, func(d *Disk, g *Group) error {
		if d == nil {
			return fmt.Errorf("%w: %q is a group: set the controller of each of its disks", ErrUnknownDisk, disk)
		}
		d.Controller = kind
		return nil
	})
}

// update applies fn to the disk or the group called name and saves it.
func (r *Repo) update(name string, fn func(*Disk, *Group) error) error {
	if err := r.writable(); err != nil {
		return err
	}
	r.acquire()
	defer r.wmu.Unlock()
	var key []byte
	var v any
	if d, err := r.Disk(name); err == nil {
		if err := fn(&d, nil); err != nil {
			return err
		}
		key, v = diskKey(name), d
	} else if !errors.Is(err, ErrUnknownDisk) {
		return err
	} else {
		g, gerr := r.Group(name)
		if errors.Is(gerr, ErrUnknownGroup) {
			return err
		} else if gerr != nil {
			return gerr
		}
		if err := fn(nil, &g); err != nil {
			return err
		}
		key, v = groupKey(name), g
	}
	j, _ := json.Marshal(v)
	b := r.db.NewBatch()
	defer b.Close()
	b.Set(key, j, nil)
	if err := r.commitSynced(b, r.head.Load()); err != nil {
		return fmt.Errorf("store: update %q: %w", name, err)
	}
	return r.publish()
}
