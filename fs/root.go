package fs

import (
	"context"
	"fmt"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/hindsight-cdp/hindsight/store"
)

// rootNode is the mount's root: one directory per disk and per group of the
// Source, asked anew on every Lookup and Readdir so that disks and groups
// created by other processes show.
type rootNode struct {
	fs.Inode
	t *tree
}

var (
	_ fs.NodeLookuper  = (*rootNode)(nil)
	_ fs.NodeReaddirer = (*rootNode)(nil)
	_ fs.NodeGetattrer = (*rootNode)(nil)
)

func (r *rootNode) Getattr(ctx context.Context, _ fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	r.t.dirAttr(&out.Attr, fuse.FUSE_ROOT_ID, r.t.mounted)
	out.SetTimeout(listingTimeout)
	return 0
}

func (r *rootNode) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	e, err := r.t.entry(ctx, name)
	if err != nil {
		return nil, r.t.errno(fmt.Sprintf("lookup %q", name), err)
	}
	n := &diskDir{t: r.t, e: e, ino: e.ino()}
	return r.t.listingDir(ctx, &r.Inode, n, n.ino, e.created, out), 0
}

func (r *rootNode) Readdir(ctx context.Context) (fs.DirStream, syscall.Errno) {
	es, err := r.t.entries(ctx)
	if err != nil {
		return nil, r.t.errno("list disks and groups", err)
	}
	dirents := make([]fuse.DirEntry, 0, len(es))
	for _, e := range es {
		dirents = append(dirents, fuse.DirEntry{Name: e.name, Mode: syscall.S_IFDIR, Ino: e.ino()})
	}
	return fs.NewListDirStream(dirents), 0
}

// entry is a directory at the root: a disk, or a consistency group whose
// instants show all its disks at one journal position.
type entry struct {
	name    string
	id      uint32 // the disk's or the group's ID
	created time.Time
	disks   []store.Disk // a disk: itself; a group: its members in order
	group   bool
	profile *store.Profile // the VM's recorded shape, if any
}

// ino hashes the entry's identity, not only its name, so that a disk deleted
// and created again under the same name is a new directory.
func (e entry) ino() uint64 {
	return inode(kindDisk, fuse.FUSE_ROOT_ID, e.name, uint64(e.id), unixNano(e.created))
}

// entries lists every disk, then every group, each by name.
func (t *tree) entries(ctx context.Context) ([]entry, error) {
	disks, err := t.src.Disks(ctx)
	if err != nil {
		return nil, err
	}
	groups, err := t.src.Groups(ctx)
	if err != nil {
		return nil, err
	}
	byName := make(map[string]store.Disk, len(disks))
	out := make([]entry, 0, len(disks)+len(groups))
	for _, d := range disks {
		byName[d.Name] = d
		out = append(out, entry{name: d.Name, id: d.ID, created: d.Created, disks: []store.Disk{d}, profile: d.Profile})
	}
	for _, g := range groups {
		e := entry{name: g.Name, id: g.ID, created: g.Created, group: true, profile: g.Profile}
		for _, dn := range g.Disks {
			if d, ok := byName[dn]; ok {
				e.disks = append(e.disks, d)
			}
		}
		out = append(out, e)
	}
	return out, nil
}

// entry returns the disk or group of that name, store.ErrUnknownDisk if there
// is none.
func (t *tree) entry(ctx context.Context, name string) (entry, error) {
	es, err := t.entries(ctx)
	if err != nil {
		return entry{}, err
	}
	for _, e := range es {
		if e.name == name {
			return e, nil
		}
	}
	return entry{}, fmt.Errorf("%q: %w", name, store.ErrUnknownDisk)
}

// diskIno is the number of a disk's own directory, which its image files
// hash so that every path to one disk at one point shares one inode.
func diskIno(d store.Disk) uint64 {
	return entry{name: d.Name, id: d.ID, created: d.Created}.ino()
}
