package cutfs

import (
	"context"
	"os"
	"path/filepath"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// node is a loopback node whose data and namespace changes go through
// the FS's model. Every method holds FS.mu throughout (see enter).
type node struct {
	*fs.LoopbackNode
	c *FS
}

var (
	_ = (fs.NodeWrapChilder)((*node)(nil))
	_ = (fs.NodeLookuper)((*node)(nil))
	_ = (fs.NodeGetattrer)((*node)(nil))
	_ = (fs.NodeStatxer)((*node)(nil))
	_ = (fs.NodeSetattrer)((*node)(nil))
	_ = (fs.NodeOpener)((*node)(nil))
	_ = (fs.NodeCreater)((*node)(nil))
	_ = (fs.NodeMkdirer)((*node)(nil))
	_ = (fs.NodeMknoder)((*node)(nil))
	_ = (fs.NodeSymlinker)((*node)(nil))
	_ = (fs.NodeLinker)((*node)(nil))
	_ = (fs.NodeUnlinker)((*node)(nil))
	_ = (fs.NodeRmdirer)((*node)(nil))
	_ = (fs.NodeRenamer)((*node)(nil))
	_ = (fs.NodeOpendirHandler)((*node)(nil))
	_ = (fs.NodeReaddirer)((*node)(nil))
	_ = (fs.NodeAllocater)((*node)(nil))
	_ = (fs.NodeCopyFileRanger)((*node)(nil))
	_ = (fs.NodeTmpfiler)((*node)(nil))
	_ = (fs.NodeStatfser)((*node)(nil))
	_ = (fs.NodeReadlinker)((*node)(nil))
)

func (n *node) WrapChild(ctx context.Context, ops fs.InodeEmbedder) fs.InodeEmbedder {
	return &node{LoopbackNode: ops.(*fs.LoopbackNode), c: n.c}
}

// enter starts an operation: EIO once the power is cut. Callers defer
// n.c.mu.Unlock() when it returns 0.
func (c *FS) enter() syscall.Errno {
	c.mu.Lock()
	if c.cut {
		c.mu.Unlock()
		return syscall.EIO
	}
	return 0
}

func (n *node) path() string { return filepath.Join(n.c.backing, n.Path(n.Root())) }

func (n *node) child(name string) string { return filepath.Join(n.path(), name) }

// ino is the backing inode of this node's entry.
func (n *node) ino() (uint64, syscall.Errno) {
	var st unix.Stat_t
	if err := unix.Lstat(n.path(), &st); err != nil {
		return 0, fs.ToErrno(err)
	}
	return st.Ino, 0
}

// size is what readers see as the size of the file with backing inode ino.
func (n *node) size(ino uint64, backing uint64) uint64 {
	if p := n.c.files[ino]; p != nil {
		return uint64(p.size)
	}
	return backing
}

func (n *node) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	if e := n.c.enter(); e != 0 {
		return e
	}
	defer n.c.mu.Unlock()
	return n.LoopbackNode.Statfs(ctx, out)
}

func (n *node) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if e := n.c.enter(); e != 0 {
		return nil, e
	}
	defer n.c.mu.Unlock()
	ch, e := n.LoopbackNode.Lookup(ctx, name, out)
	if e == 0 {
		out.Attr.Size = n.size(out.Attr.Ino, out.Attr.Size)
	}
	return ch, e
}

func (n *node) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	if e := n.c.enter(); e != 0 {
		return nil, e
	}
	defer n.c.mu.Unlock()
	return n.LoopbackNode.Readlink(ctx)
}

func (n *node) Getattr(ctx context.Context, f fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	if e := n.c.enter(); e != 0 {
		return e
	}
	defer n.c.mu.Unlock()
	return n.getattr(f, out)
}

func (n *node) getattr(f fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	var st syscall.Stat_t
	var err error
	if h, ok := f.(*handle); ok {
		err = syscall.Fstat(h.fd, &st)
	} else {
		err = syscall.Lstat(n.path(), &st)
	}
	if err != nil {
		return fs.ToErrno(err)
	}
	out.FromStat(&st)
	out.Size = n.size(st.Ino, out.Size)
	return 0
}

func (n *node) Statx(ctx context.Context, f fs.FileHandle, flags uint32, mask uint32, out *fuse.StatxOut) syscall.Errno {
	if e := n.c.enter(); e != 0 {
		return e
	}
	defer n.c.mu.Unlock()
	var st unix.Statx_t
	var err error
	if h, ok := f.(*handle); ok {
		err = unix.Statx(h.fd, "", unix.AT_EMPTY_PATH|int(flags), int(mask), &st)
	} else {
		err = unix.Statx(unix.AT_FDCWD, n.path(), unix.AT_SYMLINK_NOFOLLOW|int(flags), int(mask), &st)
	}
	if err != nil {
		return fs.ToErrno(err)
	}
	out.FromStatx(&st)
	out.Size = n.size(st.Ino, out.Size)
	return 0
}

// Setattr keeps a size change apart (a truncate, durable once the file is
// synced) and passes the rest through.
func (n *node) Setattr(ctx context.Context, f fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if e := n.c.enter(); e != 0 {
		return e
	}
	defer n.c.mu.Unlock()
	if sz, ok := in.GetSize(); ok {
		fd, closeFd, e := n.backingFd(f)
		if e != 0 {
			return e
		}
		var st unix.Stat_t
		err := unix.Fstat(fd, &st)
		var p *pending
		if err == nil {
			p, err = n.c.state(st.Ino, fd)
		}
		closeFd()
		if err != nil {
			return fs.ToErrno(err)
		}
		p.truncate(int64(sz))
		in.Valid &^= fuse.FATTR_SIZE
	}
	const passed = fuse.FATTR_MODE | fuse.FATTR_UID | fuse.FATTR_GID | fuse.FATTR_ATIME | fuse.FATTR_MTIME | fuse.FATTR_ATIME_NOW | fuse.FATTR_MTIME_NOW
	if in.Valid&passed != 0 {
		if e := n.LoopbackNode.Setattr(ctx, nil, in, out); e != 0 {
			return e
		}
	}
	return n.getattr(f, out)
}

// backingFd is f's backing descriptor, or one opened for the call.
func (n *node) backingFd(f fs.FileHandle) (int, func(), syscall.Errno) {
	if h, ok := f.(*handle); ok {
		return h.fd, func() {}, 0
	}
	fd, err := unix.Open(n.path(), unix.O_RDWR|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
	if err != nil {
		return 0, nil, fs.ToErrno(err)
	}
	return fd, func() { unix.Close(fd) }, 0
}

// Open opens the backing file read-write whatever the caller asked (the
// kernel checked the permissions): syncs write through it. O_TRUNC is
// kept apart; O_DIRECT and O_APPEND are the kernel's business.
func (n *node) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	if e := n.c.enter(); e != 0 {
		return nil, 0, e
	}
	defer n.c.mu.Unlock()
	return n.open(n.path(), flags)
}

func (n *node) open(path string, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
	if err != nil {
		return nil, 0, fs.ToErrno(err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, 0, fs.ToErrno(err)
	}
	h := &handle{c: n.c, fd: fd, ino: st.Ino}
	if flags&syscall.O_TRUNC != 0 && flags&syscall.O_ACCMODE != syscall.O_RDONLY {
		p, err := n.c.state(st.Ino, fd)
		if err != nil {
			unix.Close(fd)
			return nil, 0, fs.ToErrno(err)
		}
		p.truncate(0)
	}
	return h, 0, 0
}

func (n *node) Create(ctx context.Context, name string, flags uint32, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	if e := n.c.enter(); e != 0 {
		return nil, nil, 0, e
	}
	defer n.c.mu.Unlock()
	p := n.child(name)
	dir, e := n.ino()
	if e != 0 {
		return nil, nil, 0, e
	}
	_, err := os.Lstat(p)
	existed := err == nil
	ch, lf, _, e := n.LoopbackNode.Create(ctx, name, flags&^uint32(syscall.O_TRUNC|syscall.O_DIRECT), mode, out)
	if e != 0 {
		return nil, nil, 0, e
	}
	if r, ok := lf.(fs.FileReleaser); ok {
		r.Release(ctx)
	}
	if !existed {
		n.c.record(nsop{kind: nsCreate, dirs: []uint64{dir}, path: n.c.rel(p)})
	}
	h, _, e := n.open(p, flags)
	if e != 0 {
		return nil, nil, 0, e
	}
	out.Attr.Size = n.size(out.Attr.Ino, out.Attr.Size)
	return ch, h, 0, 0
}

// create runs mk, a loopback call that makes the entry name in n, and
// records the entry as made.
func (n *node) create(name string, mk func() (*fs.Inode, syscall.Errno)) (*fs.Inode, syscall.Errno) {
	if e := n.c.enter(); e != 0 {
		return nil, e
	}
	defer n.c.mu.Unlock()
	dir, e := n.ino()
	if e != 0 {
		return nil, e
	}
	ch, e := mk()
	if e == 0 {
		n.c.record(nsop{kind: nsCreate, dirs: []uint64{dir}, path: n.c.rel(n.child(name))})
	}
	return ch, e
}

func (n *node) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	return n.create(name, func() (*fs.Inode, syscall.Errno) { return n.LoopbackNode.Mkdir(ctx, name, mode, out) })
}

func (n *node) Mknod(ctx context.Context, name string, mode, rdev uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	return n.create(name, func() (*fs.Inode, syscall.Errno) { return n.LoopbackNode.Mknod(ctx, name, mode, rdev, out) })
}

func (n *node) Symlink(ctx context.Context, target, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	return n.create(name, func() (*fs.Inode, syscall.Errno) { return n.LoopbackNode.Symlink(ctx, target, name, out) })
}

func (n *node) Link(ctx context.Context, target fs.InodeEmbedder, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	return n.create(name, func() (*fs.Inode, syscall.Errno) {
		t, ok := target.(*node)
		if !ok {
			return nil, syscall.EXDEV
		}
		ch, e := n.LoopbackNode.Link(ctx, t.LoopbackNode, name, out)
		if e == 0 {
			out.Attr.Size = n.size(out.Attr.Ino, out.Attr.Size)
		}
		return ch, e
	})
}

// Unlink moves the entry to the trash, so that a cut can put it back.
func (n *node) Unlink(ctx context.Context, name string) syscall.Errno {
	if e := n.c.enter(); e != 0 {
		return e
	}
	defer n.c.mu.Unlock()
	return n.remove(name, false)
}

func (n *node) Rmdir(ctx context.Context, name string) syscall.Errno {
	if e := n.c.enter(); e != 0 {
		return e
	}
	defer n.c.mu.Unlock()
	return n.remove(name, true)
}

func (n *node) remove(name string, isDir bool) syscall.Errno {
	dir, e := n.ino()
	if e != 0 {
		return e
	}
	p := n.child(name)
	fi, err := os.Lstat(p)
	if err != nil {
		return fs.ToErrno(err)
	}
	switch {
	case isDir && !fi.IsDir():
		return syscall.ENOTDIR
	case !isDir && fi.IsDir():
		return syscall.EISDIR
	case isDir && !emptyDir(p):
		return syscall.ENOTEMPTY
	}
	t, err := n.c.toTrash(p)
	if err != nil {
		return fs.ToErrno(err)
	}
	n.c.record(nsop{kind: nsRemove, dirs: []uint64{dir}, path: n.c.rel(p), trash: t})
	return 0
}

func emptyDir(p string) bool {
	f, err := os.Open(p)
	if err != nil {
		return false
	}
	defer f.Close()
	names, _ := f.Readdirnames(1)
	return len(names) == 0
}

// Rename keeps a replaced target in the trash, so that a cut can undo it.
func (n *node) Rename(ctx context.Context, name string, newParent fs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	if e := n.c.enter(); e != 0 {
		return e
	}
	defer n.c.mu.Unlock()
	np, ok := newParent.(*node)
	if !ok {
		return syscall.EXDEV
	}
	d1, e := n.ino()
	if e != 0 {
		return e
	}
	d2, e := np.ino()
	if e != 0 {
		return e
	}
	dirs := []uint64{d1}
	if d2 != d1 {
		dirs = append(dirs, d2)
	}
	from, to := n.child(name), np.child(newName)
	switch flags {
	case unix.RENAME_EXCHANGE:
		if err := unix.Renameat2(unix.AT_FDCWD, from, unix.AT_FDCWD, to, unix.RENAME_EXCHANGE); err != nil {
			return fs.ToErrno(err)
		}
		n.c.record(nsop{kind: nsExchange, dirs: dirs, path: n.c.rel(from), to: n.c.rel(to)})
		return 0
	case 0, unix.RENAME_NOREPLACE:
	default:
		return syscall.EINVAL
	}
	src, err := os.Lstat(from)
	if err != nil {
		return fs.ToErrno(err)
	}
	var trash string
	if dst, err := os.Lstat(to); err == nil {
		switch {
		case flags == unix.RENAME_NOREPLACE:
			return syscall.EEXIST
		case os.SameFile(src, dst):
			return 0 // two names of one file: rename does nothing
		case src.IsDir() && !dst.IsDir():
			return syscall.ENOTDIR
		case !src.IsDir() && dst.IsDir():
			return syscall.EISDIR
		case dst.IsDir() && !emptyDir(to):
			return syscall.ENOTEMPTY
		}
		if trash, err = n.c.toTrash(to); err != nil {
			return fs.ToErrno(err)
		}
	}
	if err := os.Rename(from, to); err != nil {
		if trash != "" {
			os.Rename(trash, to)
		}
		return fs.ToErrno(err)
	}
	n.c.record(nsop{kind: nsRename, dirs: dirs, path: n.c.rel(from), to: n.c.rel(to), trash: trash})
	return 0
}

func (n *node) OpendirHandle(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	if e := n.c.enter(); e != 0 {
		return nil, 0, e
	}
	defer n.c.mu.Unlock()
	ds, e := fs.NewLoopbackDirStream(n.path())
	if e != 0 {
		return nil, 0, e
	}
	return &dirHandle{n: n, ds: ds}, 0, 0
}

func (n *node) Readdir(ctx context.Context) (fs.DirStream, syscall.Errno) {
	if e := n.c.enter(); e != 0 {
		return nil, e
	}
	defer n.c.mu.Unlock()
	return fs.NewLoopbackDirStream(n.path())
}

// Allocate: see the package doc.
func (n *node) Allocate(ctx context.Context, f fs.FileHandle, off uint64, size uint64, mode uint32) syscall.Errno {
	if e := n.c.enter(); e != 0 {
		return e
	}
	defer n.c.mu.Unlock()
	h, ok := f.(*handle)
	if !ok {
		return syscall.EBADF
	}
	p, err := n.c.state(h.ino, h.fd)
	if err != nil {
		return fs.ToErrno(err)
	}
	o, l := int64(off), int64(size)
	switch mode {
	case unix.FALLOC_FL_KEEP_SIZE:
	case 0:
		if o+l > p.size {
			p.truncate(o + l)
		}
	case unix.FALLOC_FL_PUNCH_HOLE | unix.FALLOC_FL_KEEP_SIZE, unix.FALLOC_FL_ZERO_RANGE | unix.FALLOC_FL_KEEP_SIZE:
		p.zero(o, l)
	case unix.FALLOC_FL_ZERO_RANGE:
		if o+l > p.size {
			p.truncate(o + l)
		}
		p.zero(o, l)
	default:
		return syscall.EOPNOTSUPP
	}
	return 0
}

// CopyFileRange is refused so that the kernel copies through Read and
// Write, which the model sees.
func (n *node) CopyFileRange(ctx context.Context, fhIn fs.FileHandle, offIn uint64, out *fs.Inode, fhOut fs.FileHandle, offOut uint64, len uint64, flags uint64) (uint32, syscall.Errno) {
	return 0, syscall.EOPNOTSUPP
}

// Tmpfile is refused: an unnamed file would need a handle of its own kind.
func (n *node) Tmpfile(ctx context.Context, flags uint32, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	return nil, nil, 0, syscall.EOPNOTSUPP
}
