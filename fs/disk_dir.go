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
)

// Reserved names of a disk directory; neither parses as a time.
const (
	latestName    = "latest"
	bookmarksName = "bookmarks"
	byTimeName    = "by-time"
)

// diskDir is one disk's directory. Its listing grows with every point, so it
// keeps nothing: Lookup and Readdir ask the Source each time, and Lookup
// resolves any time, listed or not.
type diskDir struct {
	fs.Inode
	t   *tree
	e   entry
	ino uint64
}

var (
	_ fs.NodeLookuper  = (*diskDir)(nil)
	_ fs.NodeReaddirer = (*diskDir)(nil)
	_ fs.NodeGetattrer = (*diskDir)(nil)
)

func (d *diskDir) Getattr(ctx context.Context, _ fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	d.t.dirAttr(&out.Attr, d.ino, d.e.created)
	out.SetTimeout(listingTimeout)
	return 0
}

func (d *diskDir) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	// A directory the kernel still holds may outlive its disk, or a disk
	// created again under its name: answer only for the disk it was made for.
	cur, err := d.t.entry(ctx, d.e.name)
	if err != nil {
		return nil, d.t.errno(fmt.Sprintf("%q: lookup %q", d.e.name, name), err)
	}
	if cur.ino() != d.ino {
		return nil, syscall.ENOENT
	}

	switch name {
	case latestName:
		p, err := d.t.src.Latest(ctx, d.e.name)
		if err != nil {
			return nil, d.t.errno(fmt.Sprintf("%q: latest", d.e.name), err)
		}
		// Not cached: the next lookup must see the next point.
		return d.t.newInstant(ctx, &d.Inode, d.ino, cur, name, p, p.Time, nil, 0, out), 0

	case byTimeName:
		b := &byTimeDir{t: d.t, e: cur, ino: inode(kindByTime, d.ino, byTimeName)}
		return d.t.listingDir(ctx, &d.Inode, b, b.ino, d.e.created, out), 0

	case bookmarksName:
		b := &bookmarksDir{t: d.t, e: cur, ino: inode(kindBookmarks, d.ino, bookmarksName)}
		return d.t.listingDir(ctx, &d.Inode, b, b.ino, d.e.created, out), 0
	}

	now := d.t.now()
	at, err := timespec.Parse(name, now)
	if err != nil || at.After(now) {
		return nil, syscall.ENOENT // not a time, or one that has not happened yet
	}
	p, err := d.t.src.Resolve(ctx, d.e.name, at)
	if err != nil {
		return nil, d.t.errno(fmt.Sprintf("%q: resolve %q", d.e.name, name), err)
	}
	timeout := listingTimeout
	if timespec.IsRelative(name) {
		timeout = 0 // -15m names another instant a moment later
	}
	return d.t.newInstant(ctx, &d.Inode, d.ino, cur, name, p, at, nil, timeout, out), 0
}

func (d *diskDir) Readdir(ctx context.Context) (fs.DirStream, syscall.Errno) {
	points, err := d.t.src.Points(ctx, d.e.name, d.t.listPoints)
	if err != nil {
		return nil, d.t.errno(fmt.Sprintf("%q: list points", d.e.name), err)
	}
	bookmarks, err := d.t.src.Bookmarks(ctx, d.e.name)
	if err != nil {
		return nil, d.t.errno(fmt.Sprintf("%q: list bookmarks", d.e.name), err)
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
		Ino: inode(kindBookmarks, d.ino, bookmarksName)}, fuse.DirEntry{Name: byTimeName, Mode: syscall.S_IFDIR,
		Ino: inode(kindByTime, d.ino, byTimeName)})
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
	t   *tree
	e   entry
	ino uint64
}

var (
	_ fs.NodeLookuper  = (*bookmarksDir)(nil)
	_ fs.NodeReaddirer = (*bookmarksDir)(nil)
	_ fs.NodeGetattrer = (*bookmarksDir)(nil)
)

func (b *bookmarksDir) Getattr(ctx context.Context, _ fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	b.t.dirAttr(&out.Attr, b.ino, b.e.created)
	out.SetTimeout(listingTimeout)
	return 0
}

func (b *bookmarksDir) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	bookmarks, err := b.t.src.Bookmarks(ctx, b.e.name)
	if err != nil {
		return nil, b.t.errno(fmt.Sprintf("%q: list bookmarks", b.e.name), err)
	}
	for _, bm := range bookmarks {
		if bm.Name == name {
			// The bookmark names an instant; info.json shows the point that holds it.
			p, err := b.t.src.Resolve(ctx, b.e.name, bm.Time)
			if err != nil {
				return nil, b.t.errno(fmt.Sprintf("%q: bookmark %q", b.e.name, name), err)
			}
			return b.t.newInstant(ctx, &b.Inode, b.ino, b.e, name, p, bm.Time, &bm, listingTimeout, out), 0
		}
	}
	return nil, syscall.ENOENT
}

func (b *bookmarksDir) Readdir(ctx context.Context) (fs.DirStream, syscall.Errno) {
	bookmarks, err := b.t.src.Bookmarks(ctx, b.e.name)
	if err != nil {
		return nil, b.t.errno(fmt.Sprintf("%q: list bookmarks", b.e.name), err)
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
