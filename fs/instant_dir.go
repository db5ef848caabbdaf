package fs

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/hindsight-cdp/hindsight/fs/image"
	"github.com/hindsight-cdp/hindsight/store"
)

const infoName = "info.json"

// instantDir is the directory of one disk at one point. Its content never
// changes, so it is built once, on first use (zipfs style), behind mu.
//
// Its files are handed out on Lookup with NewInode rather than added as
// persistent children in OnAdd: go-fuse never frees a directory that has
// children, nor persistent children, so every instant ever looked up (each
// lookup of latest or -15m is a new one) would stay in memory for the life of
// the mount. On-demand children let the kernel's FORGET free them.
type instantDir struct {
	fs.Inode
	t         *tree
	e         entry
	bookmark  *store.Bookmark // the bookmark the directory is, if it is one
	point     store.Point
	requested time.Time
	ino       uint64
	timeout   time.Duration // attribute timeout: 0 for latest and relative names

	mu    sync.Mutex
	files []instantFile // nil until built
}

// instantFile is one file of an instant directory.
type instantFile struct {
	name string
	ino  uint64
	r    io.ReaderAt
	size int64
}

var (
	_ fs.NodeLookuper  = (*instantDir)(nil)
	_ fs.NodeReaddirer = (*instantDir)(nil)
	_ fs.NodeGetattrer = (*instantDir)(nil)
)

// instantIno is the inode number of the instant directory name in the
// directory parent when it resolves to seq; see the package doc.
func instantIno(parent uint64, name string, requested time.Time, seq uint64) uint64 {
	return inode(kindInstant, parent, name, unixNano(requested), seq)
}

// newInstant returns the node for the instant directory name of parent, the
// entry's disks at point p (bm: the bookmark it shows, if any), and fills out
// for the entry. entryTimeout 0 (latest and relative names) also turns
// attribute caching off.
func (t *tree) newInstant(ctx context.Context, parent *fs.Inode, parentIno uint64, e entry,
	name string, p store.Point, requested time.Time, bm *store.Bookmark, entryTimeout time.Duration, out *fuse.EntryOut,
) *fs.Inode {
	attrTimeout := immutableTimeout
	if entryTimeout == 0 {
		attrTimeout = 0
	}
	n := &instantDir{
		t:         t,
		e:         e,
		bookmark:  bm,
		point:     p,
		requested: requested,
		ino:       instantIno(parentIno, name, requested, p.Seq),
		timeout:   attrTimeout,
	}
	t.dirAttr(&out.Attr, n.ino, p.Time)
	out.SetEntryTimeout(entryTimeout)
	out.SetAttrTimeout(attrTimeout)
	// A node already known under this number is used instead of n: same
	// parent, name, requested time and point, hence the same content.
	return parent.NewInode(ctx, n, fs.StableAttr{Mode: syscall.S_IFDIR, Ino: n.ino})
}

func (d *instantDir) Getattr(ctx context.Context, _ fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	d.t.dirAttr(&out.Attr, d.ino, d.point.Time)
	out.SetTimeout(d.timeout)
	return 0
}

func (d *instantDir) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	files, err := d.build(ctx)
	if err != nil {
		return nil, d.t.errno(d.op(), err)
	}
	for _, f := range files {
		if f.name != name {
			continue
		}
		n := &fileNode{t: d.t, r: f.r, size: f.size, ino: f.ino, mtime: d.point.Time}
		d.t.fileAttr(&out.Attr, f.ino, f.size, d.point.Time)
		out.SetEntryTimeout(immutableTimeout)
		out.SetAttrTimeout(immutableTimeout)
		// Image files of one point share their number whatever the path,
		// so the kernel gives them one node and one page cache.
		return d.NewInode(ctx, n, fs.StableAttr{Mode: syscall.S_IFREG, Ino: f.ino}), 0
	}
	return nil, syscall.ENOENT
}

func (d *instantDir) Readdir(ctx context.Context) (fs.DirStream, syscall.Errno) {
	files, err := d.build(ctx)
	if err != nil {
		return nil, d.t.errno(d.op(), err)
	}
	entries := make([]fuse.DirEntry, len(files))
	for i, f := range files {
		entries[i] = fuse.DirEntry{Name: f.name, Mode: syscall.S_IFREG, Ino: f.ino}
	}
	return fs.NewListDirStream(entries), 0
}

func (d *instantDir) op() string {
	return fmt.Sprintf("%q at seq %d", d.e.name, d.point.Seq)
}

// build makes the directory's files the first time it is asked; an error
// (an interrupt, say) is not kept, so the next call tries again.
func (d *instantDir) build(ctx context.Context) ([]instantFile, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.files != nil {
		return d.files, nil
	}

	bookmarks, err := d.t.src.Bookmarks(ctx, d.e.name)
	if err != nil {
		return nil, fmt.Errorf("bookmarks: %w", err)
	}
	var files []instantFile
	var vmdks []image.VMXDisk
	for _, disk := range d.e.disks {
		raw, err := d.t.src.Image(ctx, disk.Name, d.point.Seq)
		if err != nil {
			return nil, fmt.Errorf("image of %q: %w", disk.Name, err)
		}
		meta := ImageMeta(disk, d.point)
		if err := meta.Validate(); err != nil {
			return nil, err
		}
		imageDir := diskIno(disk) // not the parent: bookmarks/x and its instant share
		for _, f := range image.Files(meta, raw) {
			files = append(files, instantFile{
				name: f.Name,
				ino:  inode(kindImage, imageDir, f.Name, d.point.Seq),
				r:    f.R,
				size: f.Size,
			})
		}
		vmdks = append(vmdks, image.VMXDisk{File: disk.Name + ".vmdk", Controller: disk.Controller})
	}
	small := func(name string, content []byte) {
		files = append(files, instantFile{name: name, ino: inode(kindInfo, d.ino, name), r: bytes.NewReader(content), size: int64(len(content))})
	}
	var vmx image.VMXOptions
	if p := d.e.profile; p != nil {
		vmx = image.VMXOptions{MemoryMB: p.MemoryMB, CPUs: p.CPUs, GuestOS: p.GuestID}
	}
	small(d.e.name+".vmx", image.VMX(d.e.name, vmdks, vmx))
	info, err := json.MarshalIndent(newInfo(d.e, d.point, d.requested, bookmarks, d.bookmark), "", "  ")
	if err != nil {
		return nil, fmt.Errorf("info: %w", err)
	}
	small(infoName, append(info, '\n'))
	if d.bookmark != nil {
		taken := map[string]bool{}
		for _, f := range files {
			taken[f.name] = true
		}
		names := make([]string, 0, len(d.bookmark.Files))
		for name := range d.bookmark.Files {
			if validName(name) && !taken[name] { // never shadow an image or info.json
				names = append(names, name)
			}
		}
		sort.Strings(names)
		for _, name := range names {
			small(name, []byte(d.bookmark.Files[name]))
		}
	}
	d.files = files
	return files, nil
}

// ImageMeta describes the image of disk d at point p as the tree serves it;
// exports use it too, so that an exported VMDK or VHD matches the served one.
func ImageMeta(d store.Disk, p store.Point) image.Meta {
	return image.Meta{
		Name:    d.Name,
		Size:    d.Size,
		Created: p.Time, // the instant, as the formats' timestamps
		ID:      imageID(d, p.Seq),
	}
}

// imageID is the identity written into the image formats (VMDK UUID, VHD
// unique ID): fixed for a disk at one point, different between points, so
// that two instants of one disk can be attached side by side.
func imageID(d store.Disk, seq uint64) [16]byte {
	h := sha256.New()
	fmt.Fprintf(h, "hindsight image\x00%s\x00", d.Name)
	var b [8]byte
	for _, n := range []uint64{uint64(d.ID), unixNano(d.Created), seq} {
		binary.BigEndian.PutUint64(b[:], n)
		h.Write(b[:])
	}
	var id [16]byte
	copy(id[:], h.Sum(nil))
	return id
}

// info is the content of info.json.
type info struct {
	Disk           string       `json:"disk"` // the disk, or the group
	Group          bool         `json:"group,omitempty"`
	Disks          []diskInfo   `json:"disks"`
	Requested      time.Time    `json:"requested"` // RFC 3339 with nanoseconds, UTC
	Seq            uint64       `json:"seq"`
	Time           time.Time    `json:"time"`
	Resolved       pointRef     `json:"resolved"` // the point served, as seq and time: see the package doc
	BookmarkBefore *bookmarkRef `json:"bookmark_before"`
	BookmarkAfter  *bookmarkRef `json:"bookmark_after"`
	Size           int64        `json:"size,omitempty"` // of a disk; a group's are in disks
	BlockSize      int          `json:"block_size,omitempty"`
	// Bookmark is the bookmark this directory shows, with its consistency
	// and the quiesce report of the agents that ran for it.
	Bookmark *store.Bookmark `json:"bookmark,omitempty"`
	// Consistency is "application" only where quiescing succeeded, else
	// "crash": every instant is crash-consistent.
	Consistency string `json:"consistency"`
}

type diskInfo struct {
	Name      string `json:"name"`
	Size      int64  `json:"size"`
	BlockSize int    `json:"block_size"`
}

// pointRef names a point: its time and journal position.
type pointRef struct {
	Time time.Time `json:"time"`
	Seq  uint64    `json:"seq"`
}

type bookmarkRef struct {
	Name string    `json:"name"`
	Time time.Time `json:"time"`
	Seq  uint64    `json:"seq"`
	Kind string    `json:"kind,omitempty"` // crash, application or user
}

// newInfo describes disk at point p, asked for at requested. The nearest
// bookmarks are chosen by journal position, the order of the timeline: the
// newest at or before p and the oldest after it.
func newInfo(e entry, p store.Point, requested time.Time, bookmarks []store.Bookmark, bm *store.Bookmark) info {
	in := info{
		Disk:        e.name,
		Group:       e.group,
		Disks:       []diskInfo{},
		Requested:   requested.UTC(),
		Seq:         p.Seq,
		Time:        p.Time.UTC(),
		Resolved:    pointRef{Time: p.Time.UTC(), Seq: p.Seq},
		Bookmark:    bm,
		Consistency: store.KindCrash,
	}
	for _, d := range e.disks {
		in.Disks = append(in.Disks, diskInfo{d.Name, d.Size, d.BlockSize})
	}
	if !e.group && len(e.disks) == 1 {
		in.Size, in.BlockSize = e.disks[0].Size, e.disks[0].BlockSize
	}
	if bm != nil && bm.Kind == store.KindApplication {
		in.Consistency = store.KindApplication
	}
	var before, after *store.Bookmark
	for i := range bookmarks {
		b := &bookmarks[i]
		if b.Seq <= p.Seq {
			if before == nil || b.Seq > before.Seq || (b.Seq == before.Seq && b.Name < before.Name) {
				before = b
			}
		} else if after == nil || b.Seq < after.Seq || (b.Seq == after.Seq && b.Name < after.Name) {
			after = b
		}
	}
	in.BookmarkBefore = newBookmarkRef(before)
	in.BookmarkAfter = newBookmarkRef(after)
	return in
}

func newBookmarkRef(b *store.Bookmark) *bookmarkRef {
	if b == nil {
		return nil
	}
	return &bookmarkRef{Name: b.Name, Time: b.Time.UTC(), Seq: b.Seq, Kind: b.Kind}
}
