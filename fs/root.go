package fs

import (
	"context"
	"fmt"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/hindsight-cdp/hindsight/store"
)

// rootNode is the mount's root: one directory per disk of the Source, asked
// anew on every Lookup and Readdir so disks created by other processes show.
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
	d, err := r.t.disk(ctx, name)
	if err != nil {
		return nil, r.t.errno(fmt.Sprintf("lookup disk %q", name), err)
	}
	n := &diskDir{t: r.t, disk: d, ino: diskIno(d)}
	r.t.dirAttr(&out.Attr, n.ino, d.Created)
	out.SetEntryTimeout(listingTimeout)
	out.SetAttrTimeout(listingTimeout)
	return r.NewInode(ctx, n, fs.StableAttr{Mode: syscall.S_IFDIR, Ino: n.ino}), 0
}

func (r *rootNode) Readdir(ctx context.Context) (fs.DirStream, syscall.Errno) {
	disks, err := r.t.src.Disks(ctx)
	if err != nil {
		return nil, r.t.errno("list disks", err)
	}
	entries := make([]fuse.DirEntry, 0, len(disks))
	for _, d := range disks {
		entries = append(entries, fuse.DirEntry{Name: d.Name, Mode: syscall.S_IFDIR, Ino: diskIno(d)})
	}
	return fs.NewListDirStream(entries), 0
}

// diskIno hashes the disk's identity, not only its name, so that a disk
// deleted and created again under the same name is a new directory.
func diskIno(d store.Disk) uint64 {
	return inode(kindDisk, fuse.FUSE_ROOT_ID, d.Name, uint64(d.ID), unixNano(d.Created))
}

// disk returns the Source's disk of that name, store.ErrUnknownDisk if it has
// none.
func (t *tree) disk(ctx context.Context, name string) (store.Disk, error) {
	disks, err := t.src.Disks(ctx)
	if err != nil {
		return store.Disk{}, err
	}
	for _, d := range disks {
		if d.Name == name {
			return d, nil
		}
	}
	return store.Disk{}, fmt.Errorf("disk %q: %w", name, store.ErrUnknownDisk)
}
