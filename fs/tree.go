package fs

import (
	"context"
	"encoding/binary"
	"hash/fnv"
	"io"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/hindsight-cdp/hindsight/store"
)

// Source is what the tree reads history through; the engine implements it.
// Every method is called on every Lookup and Readdir that needs it, so a
// Source that refreshes itself makes new disks, points and bookmarks of other
// processes appear without a remount.
type Source interface {
	Disks(ctx context.Context) ([]store.Disk, error)
	Groups(ctx context.Context) ([]store.Group, error)
	// The calls below take the name of a timeline's owner: a disk, or a
	// group (whose member disks share its points and bookmarks).

	// Points returns the newest limit points, oldest first.
	Points(ctx context.Context, name string, limit int) ([]store.Point, error)
	// Skim is store.Repo.Skim: points in [from, to), one seek each, the
	// next at or after next(previous time).
	Skim(ctx context.Context, name string, from, to time.Time, next func(time.Time) time.Time, limit int) ([]store.Point, error)
	Bookmarks(ctx context.Context, name string) ([]store.Bookmark, error)
	// Resolve returns the newest point with Time <= t: store.ErrNoPoint if
	// there is none, store.ErrUnknownDisk for an unknown name.
	Resolve(ctx context.Context, name string, t time.Time) (store.Point, error)
	// Latest returns the newest point, store.ErrNoPoint if there is none yet.
	Latest(ctx context.Context, name string) (store.Point, error)
	// Image returns the whole disk at journal position seq: immutable and
	// safe for concurrent use.
	Image(ctx context.Context, disk string, seq uint64) (io.ReaderAt, error)
}

// Cache lifetimes handed to the kernel.
const (
	// immutableTimeout is for what can never change: an instant directory's
	// attributes and entries, and its files.
	immutableTimeout = time.Hour
	// listingTimeout is for entries of growing directories (disks, absolute
	// instants, bookmarks) and their attributes: short, so that new and
	// deleted entries show within a second.
	listingTimeout = time.Second
)

// tree is the state every node of one mount shares.
type tree struct {
	src        Source
	listPoints int
	now        func() time.Time
	logf       func(format string, args ...any)
	uid, gid   uint32
	dirMode    uint32 // permission bits only
	fileMode   uint32
	mounted    time.Time // times of the root
}

// dirAttr fills out with a directory's attributes; mtime is the instant the
// directory stands for where there is one.
func (t *tree) dirAttr(out *fuse.Attr, ino uint64, mtime time.Time) {
	out.Ino = ino
	out.Mode = syscall.S_IFDIR | t.dirMode
	out.Nlink = 1 // unknown subdirectory count: find must not assume leaves
	out.Owner = fuse.Owner{Uid: t.uid, Gid: t.gid}
	out.SetTimes(&mtime, &mtime, &mtime)
}

// listingDir makes n, a directory whose listing may grow, the child of parent
// and fills out for its entry.
func (t *tree) listingDir(ctx context.Context, parent *fs.Inode, n fs.InodeEmbedder, ino uint64, mtime time.Time, out *fuse.EntryOut) *fs.Inode {
	t.dirAttr(&out.Attr, ino, mtime)
	out.SetEntryTimeout(listingTimeout)
	out.SetAttrTimeout(listingTimeout)
	return parent.NewInode(ctx, n, fs.StableAttr{Mode: syscall.S_IFDIR, Ino: ino})
}

// fileAttr fills out with a regular file's attributes.
func (t *tree) fileAttr(out *fuse.Attr, ino uint64, size int64, mtime time.Time) {
	out.Ino = ino
	out.Mode = syscall.S_IFREG | t.fileMode
	out.Nlink = 1
	out.Size = uint64(size)
	out.Blksize = 1 << 20 // st_blksize: the request size reads should use
	out.Blocks = (uint64(size) + 511) / 512
	out.Owner = fuse.Owner{Uid: t.uid, Gid: t.gid}
	out.SetTimes(&mtime, &mtime, &mtime)
}

// Kinds of node, hashed into inode numbers so that different kinds of node
// can never collide by their inputs alone.
const (
	kindDisk byte = iota + 1
	kindBookmarks
	kindInstant
	kindImage
	kindInfo
	kindByTime
)

// inode returns the deterministic inode number of a node from its kind, its
// parent's number, its name and the numbers that say what it shows.
func inode(kind byte, parent uint64, name string, nums ...uint64) uint64 {
	h := fnv.New64a()
	var b [8]byte
	h.Write([]byte{kind})
	binary.BigEndian.PutUint64(b[:], parent)
	h.Write(b[:])
	binary.BigEndian.PutUint64(b[:], uint64(len(name)))
	h.Write(b[:])
	h.Write([]byte(name))
	for _, n := range nums {
		binary.BigEndian.PutUint64(b[:], n)
		h.Write(b[:])
	}
	ino := h.Sum64()
	// 0 is no inode, 1 the root (FUSE_ROOT_ID) and ^0 reserved by go-fuse.
	if ino <= fuse.FUSE_ROOT_ID || ino == ^uint64(0) {
		ino = 2
	}
	return ino
}

// unixNano gives time.Time a hashable form; the zero time hashes as 0.
func unixNano(t time.Time) uint64 {
	if t.IsZero() {
		return 0
	}
	return uint64(t.UnixNano())
}
