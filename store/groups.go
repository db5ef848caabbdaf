package store

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// CreateGroup makes a consistency group of the named disks: from now on they
// share one timeline, so every instant shows all of them at one journal
// position. Each disk must be empty (no point yet) and in no other group; a
// group may start empty and take disks with JoinGroup.
func (r *Repo) CreateGroup(name string, disks []string) (Group, error) {
	if err := r.writable(); err != nil {
		return Group{}, err
	}
	if err := ValidName("group", name); err != nil {
		return Group{}, err
	}
	r.acquire()
	defer r.wmu.Unlock()
	if err := r.nameFree(name); err != nil {
		return Group{}, err
	}
	next, err := r.getU64(metaNextDisk)
	if err != nil {
		return Group{}, err
	}
	g := Group{ID: uint32(next) + 1, Name: name, Disks: []string{}, Created: time.Now().UTC()}
	b := r.db.NewBatch()
	defer b.Close()
	b.Set(metaNextDisk, be64(nil, uint64(g.ID)), nil)
	for _, dn := range disks {
		if err := r.join(b, &g, dn); err != nil {
			return Group{}, err
		}
	}
	if err := r.commitGroup(b, g); err != nil {
		return Group{}, err
	}
	return g, r.publish()
}

// JoinGroup adds an empty disk to a group.
func (r *Repo) JoinGroup(group, disk string) (Group, error) {
	if err := r.writable(); err != nil {
		return Group{}, err
	}
	r.acquire()
	defer r.wmu.Unlock()
	g, err := r.Group(group)
	if err != nil {
		return Group{}, err
	}
	b := r.db.NewBatch()
	defer b.Close()
	if err := r.join(b, &g, disk); err != nil {
		return Group{}, err
	}
	if err := r.commitGroup(b, g); err != nil {
		return Group{}, err
	}
	return g, r.publish()
}

// join moves disk dn onto g's timeline in b, if it may.
func (r *Repo) join(b *pebble.Batch, g *Group, dn string) error {
	d, err := r.Disk(dn)
	if err != nil {
		return err
	}
	if d.Group != "" || slices.Contains(g.Disks, dn) {
		return fmt.Errorf("store: disk %q is already in group %q", dn, cmp.Or(d.Group, g.Name))
	}
	if _, err := r.LastPoint(d.Timeline); !errors.Is(err, ErrNoPoint) {
		if err != nil {
			return err
		}
		return fmt.Errorf("%w: disk %q cannot join group %q: disks join a group only while empty (create a new disk with --group, then import or resync into it)", ErrNotEmpty, dn, g.Name)
	}
	d.Timeline, d.Group = g.ID, g.Name
	v, _ := json.Marshal(d)
	b.Set(diskKey(d.Name), v, nil)
	g.Disks = append(g.Disks, dn)
	return nil
}

func (r *Repo) commitGroup(b *pebble.Batch, g Group) error {
	v, _ := json.Marshal(g)
	b.Set(groupKey(g.Name), v, nil)
	if err := r.commitSynced(b, r.head.Load()); err != nil {
		return fmt.Errorf("store: group %q: %w", g.Name, err)
	}
	return nil
}

// nameFree checks that no disk or group is called name: both are directories
// side by side at the top of the tree.
func (r *Repo) nameFree(name string) error {
	for _, k := range [][]byte{diskKey(name), groupKey(name)} {
		_, ok, err := r.get(k)
		if err != nil {
			return err
		}
		if ok {
			return fmt.Errorf("%w: %q is already a disk or group name", ErrDiskExists, name)
		}
	}
	return nil
}

// Group returns the group of that name, or ErrUnknownGroup.
func (r *Repo) Group(name string) (Group, error) {
	v, ok, err := r.get(groupKey(name))
	if err != nil {
		return Group{}, err
	}
	if !ok || ValidName("group", name) != nil {
		return Group{}, fmt.Errorf("%w: %q (list groups with 'hindsight group list')", ErrUnknownGroup, name)
	}
	var g Group
	if err := json.Unmarshal(v, &g); err != nil {
		return Group{}, fmt.Errorf("store: group %q: %v: %w", name, err, ErrCorrupt)
	}
	return g, nil
}

// Groups lists every group by name.
func (r *Repo) Groups() ([]Group, error) {
	var out []Group
	err := r.scan([]byte{kindGroup}, func(k, v []byte) error {
		var g Group
		if err := json.Unmarshal(v, &g); err != nil {
			return fmt.Errorf("store: group %q: %v: %w", k[1:], err, ErrCorrupt)
		}
		out = append(out, g)
		return nil
	})
	return out, err
}

// Members resolves name, a disk or a group, to its timeline and its disks in
// the group's order (a lone disk: itself).
func (r *Repo) Members(name string) (uint32, []Disk, error) {
	d, err := r.Disk(name)
	if err == nil {
		return d.Timeline, []Disk{d}, nil
	}
	if !errors.Is(err, ErrUnknownDisk) {
		return 0, nil, err
	}
	g, gerr := r.Group(name)
	if errors.Is(gerr, ErrUnknownGroup) {
		return 0, nil, fmt.Errorf("%w: %q is neither a disk nor a group (list them with 'hindsight disk list' and 'hindsight group list')", ErrUnknownDisk, name)
	}
	if gerr != nil {
		return 0, nil, gerr
	}
	disks := make([]Disk, 0, len(g.Disks))
	for _, dn := range g.Disks {
		d, err := r.Disk(dn)
		if err != nil {
			return 0, nil, fmt.Errorf("group %q: %w", name, err)
		}
		disks = append(disks, d)
	}
	return g.ID, disks, nil
}

// Handle is the group as a Disk-shaped value for the lookups that go by
// timeline (points, bookmarks, instants): its name and its timeline.
func (g Group) Handle() Disk {
	return Disk{ID: g.ID, Name: g.Name, Timeline: g.ID, Group: g.Name, Created: g.Created}
}
