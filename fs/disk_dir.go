package fs

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/hindsight-cdp/hindsight/cdp/timespec"
	"github.com/hindsight-cdp/hindsight/store"
)

// Reserved names of a disk directory; neither parses as a time.
const (
	latestName    = "latest"
	bookmarksName = "bookmarks"
)

// diskDir is one disk's directory. Its listing grows with every point, so it
// keeps nothing: Lookup and Readdir ask the Source each time, and Lookup
// resolves any time, listed or not.
type diskDir struct {
	fs.Inode
	t    *tree
	disk store.Disk
	ino  uint64
}

var (
	_ fs.NodeLookuper  = (*diskDir)(nil)
	_ fs.NodeReaddirer = (*diskDir)(nil)
	_ fs.NodeGetattrer = (*diskDir)(nil)
)

func (d *diskDir) Getattr(ctx context.Context, _ fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	d.t.dirAttr(&out.Attr, d.ino, d.disk.Created)
	out.SetTimeout(listingTimeout)
	return 0
}

func (d *diskDir) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	// A directory the kernel still holds may outlive its disk, or a disk
	// created again under its name: answer only for the disk it was made for.
	cur, err := d.t.disk(ctx, d.disk.Name)
	if err != nil {
		return nil, d.t.errno(fmt.Sprintf("disk %q: lookup %q", d.disk.Name, name), err)
	}
	if diskIno(cur) != d.ino {
		return nil, syscall.ENOENT
	}

	switch name {
	case latestName:
		p, err := d.t.src.Latest(ctx, d.disk.Name)
		if err != nil {
			return nil, d.t.errno(fmt.Sprintf("disk %q: latest", d.disk.Name), err)
		}
		// Not cached: the next lookup must see the next point.
		return d.t.newInstant(ctx, &d.Inode, d.ino, d.disk, name, p, p.Time, 0, out), 0

	case bookmarksName:
		b := &bookmarksDir{t: d.t, disk: d.disk, ino: inode(kindBookmarks, d.ino, bookmarksName)}
		d.t.dirAttr(&out.Attr, b.ino, d.disk.Created)
		out.SetEntryTimeout(listingTimeout)
		out.SetAttrTimeout(listingTimeout)
		return d.NewInode(ctx, b, fs.StableAttr{Mode: syscall.S_IFDIR, Ino: b.ino}), 0
	}

	now := d.t.now()
	at, err := timespec.Parse(name, now)
	if err != nil || at.After(now) {
		return nil, syscall.ENOENT // not a time, or one that has not happened yet
	}
	p, err := d.t.src.Resolve(ctx, d.disk.Name, at)
	if err != nil {
		return nil, d.t.errno(fmt.Sprintf("disk %q: resolve %q", d.disk.Name, name), err)
	}
	timeout := listingTimeout
	if timespec.IsRelative(name) {
		timeout = 0 // -15m names another instant a moment later
	}
	return d.t.newInstant(ctx, &d.Inode, d.ino, d.disk, name, p, at, timeout, out), 0
}

func (d *diskDir) Readdir(ctx context.Context) (fs.DirStream, syscall.Errno) {
	points, err := d.t.src.Points(ctx, d.disk.Name, d.t.listPoints)
	if err != nil {
		return nil, d.t.errno(fmt.Sprintf("disk %q: list points", d.disk.Name), err)
	}
	bookmarks, err := d.t.src.Bookmarks(ctx, d.disk.Name)
	if err != nil {
		return nil, d.t.errno(fmt.Sprintf("disk %q: list bookmarks", d.disk.Name), err)
	}

	type instant struct {
		at  time.Time
		seq uint64
	}
	// Only names Lookup answers: none in the future of the clock.
	now := d.t.now()
	instants := make(map[string]instant, len(points)+len(bookmarks))
	for _, p := range points { // oldest first: of points with one name, the newest wins, as in Resolve
		if !p.Time.After(now) {
			instants[timespec.Format(p.Time)] = instant{p.Time, p.Seq}
		}
	}
	for _, b := range bookmarks {
		if name := timespec.Format(b.Time); !b.Time.After(now) && instants[name] == (instant{}) {
			instants[name] = instant{b.Time, b.Seq}
		}
	}
	names := make([]string, 0, len(instants))
	for name := range instants {
		names = append(names, name)
	}
	sort.Slice(names, func(i, j int) bool { return instants[names[i]].at.Before(instants[names[j]].at) })

	entries := make([]fuse.DirEntry, 0, len(names)+2)
	if len(points) > 0 {
		last := points[len(points)-1]
		entries = append(entries, fuse.DirEntry{Name: latestName, Mode: syscall.S_IFDIR,
			Ino: instantIno(d.ino, latestName, last.Time, last.Seq)})
	}
	entries = append(entries, fuse.DirEntry{Name: bookmarksName, Mode: syscall.S_IFDIR,
		Ino: inode(kindBookmarks, d.ino, bookmarksName)})
	for _, name := range names {
		in := instants[name]
		entries = append(entries, fuse.DirEntry{Name: name, Mode: syscall.S_IFDIR,
			Ino: instantIno(d.ino, name, in.at, in.seq)})
	}
	return fs.NewListDirStream(entries), 0
}

// bookmarksDir lists a disk's bookmarks by name, each the directory of the
// instant it names.
type bookmarksDir struct {
	fs.Inode
	t    *tree
	disk store.Disk
	ino  uint64
}

var (
	_ fs.NodeLookuper  = (*bookmarksDir)(nil)
	_ fs.NodeReaddirer = (*bookmarksDir)(nil)
	_ fs.NodeGetattrer = (*bookmarksDir)(nil)
)

func (b *bookmarksDir) Getattr(ctx context.Context, _ fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	b.t.dirAttr(&out.Attr, b.ino, b.disk.Created)
	out.SetTimeout(listingTimeout)
	return 0
}

func (b *bookmarksDir) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	bookmarks, err := b.t.src.Bookmarks(ctx, b.disk.Name)
	if err != nil {
		return nil, b.t.errno(fmt.Sprintf("disk %q: list bookmarks", b.disk.Name), err)
	}
	for _, bm := range bookmarks {
		if bm.Name == name {
			// The bookmark names an instant; info.json shows the point that holds it.
			p, err := b.t.src.Resolve(ctx, b.disk.Name, bm.Time)
			if err != nil {
				return nil, b.t.errno(fmt.Sprintf("disk %q: bookmark %q", b.disk.Name, name), err)
			}
			return b.t.newInstant(ctx, &b.Inode, b.ino, b.disk, name, p, bm.Time, listingTimeout, out), 0
		}
	}
	return nil, syscall.ENOENT
}

func (b *bookmarksDir) Readdir(ctx context.Context) (fs.DirStream, syscall.Errno) {
	bookmarks, err := b.t.src.Bookmarks(ctx, b.disk.Name)
	if err != nil {
		return nil, b.t.errno(fmt.Sprintf("disk %q: list bookmarks", b.disk.Name), err)
	}
	entries := make([]fuse.DirEntry, 0, len(bookmarks))
	for _, bm := range bookmarks {
		if !validName(bm.Name) {
			continue
		}
		entries = append(entries, fuse.DirEntry{Name: bm.Name, Mode: syscall.S_IFDIR,
			Ino: instantIno(b.ino, bm.Name, bm.Time, bm.Seq)})
	}
	return fs.NewListDirStream(entries), 0
}

// validName reports whether name can be a directory entry; the store should
// not allow others, but one bad name must not break a listing.
func validName(name string) bool {
	return name != "" && name != "." && name != ".." && !strings.ContainsAny(name, "/\x00")
}
