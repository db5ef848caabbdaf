// Package tap presents a protected disk as one writable file on a FUSE mount,
// <mount>/<disk>.img, that losetup, QEMU or any program uses like a disk: the
// capture front end of DESIGN.md. A consistency group's disks are files of
// one mount (MountAll), journaled by one process on one timeline. The caller names the file (vSphere instant
// recovery serves <disk>-flat.vmdk) and may add small read-only files beside
// it (that disk's VMDK descriptor). Reads show the newest state; each write is
// handed to the Device, which journals it before the write returns; fsync and
// flush (close) return only when everything written before is durable.
//
// The file is served with direct I/O (no page cache in between, so no mmap).
// It keeps its size: a write past the end gets ENOSPC, truncation EPERM.
// Writes need not be aligned to sectors, as in any file: FUSE direct I/O
// splits a write from a buffer that is not page-aligned at page boundaries,
// so the tap cannot tell a misaligned write from a piece of an aligned one;
// a partial sector is read, patched and journaled. Punching a hole
// (fallocate, or discard from a loop device) writes zeros, which cost no
// content in the journal.
package tap

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/hindsight-cdp/hindsight/cdp"
	"github.com/hindsight-cdp/hindsight/fs/fusesrv"
	"github.com/hindsight-cdp/hindsight/store"
)

// Device is the protected disk the file shows.
type Device interface {
	Size() int64
	ReadAt(p []byte, off int64) (int, error)
	WriteFileAt(p []byte, off int64) (int, error) // any byte range
	Zero(off, n int64) error
	Flush() error
}

// Options tune the mount.
type Options struct {
	// AllowOther lets users other than the server's own open the files
	// (FUSE allow_other, the kernel checking modes): the disk files are
	// mode 0660 and belong to group GID, so only its members may, never
	// everyone. Without it they are mode 0600, the owner's only.
	AllowOther bool
	// GID is the group of the files with AllowOther; 0 leaves them in the
	// server's own group.
	GID   int
	Debug bool
	Logf  func(format string, args ...any)
	// Files are small read-only files shown beside the disk file, such as
	// the VMDK descriptor of a disk served as <name>-flat.vmdk.
	Files map[string][]byte
	// IOUring serves the mount over FUSE's io_uring transport where the
	// kernel has it (see fusesrv.Config.IOUring): each request is answered
	// on the CPU that issued it, which more than doubles small writes.
	IOUring bool
}

// Mount serves dev as dir/name until ctx ends or the returned server is unmounted.
func Mount(ctx context.Context, dir, name string, dev Device, opt Options) (*fusesrv.Server, error) {
	return MountAll(ctx, dir, []File{{Name: name, Dev: dev}}, opt)
}

// File is one disk file of a mount.
type File struct {
	Name string
	Dev  Device
}

// MountAll serves several disks, each as dir/Name: the disks of a
// consistency group, whose writes one process must journal.
func MountAll(ctx context.Context, dir string, files []File, opt Options) (*fusesrv.Server, error) {
	mode := uint32(0o600)
	owner := fuse.Owner{Uid: uint32(syscall.Getuid()), Gid: uint32(syscall.Getgid())}
	if opt.AllowOther {
		mode = 0o660 // never world-writable: a disk file holds every byte of the disk
		if opt.GID != 0 {
			owner.Gid = uint32(opt.GID)
		}
	}
	logf := opt.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	root := &root{extra: opt.Files, mode: mode &^ 0o222, owner: owner, mtime: time.Now()}
	for _, f := range files {
		root.files = append(root.files, named{f.Name, &file{dev: f.Dev, mode: mode, owner: owner, logf: logf, mtime: root.mtime}})
	}
	return fusesrv.Mount(ctx, dir, root, fusesrv.Config{Name: "hindsight-tap", AllowOther: opt.AllowOther, Debug: opt.Debug, Logf: logf, IOUring: opt.IOUring})
}

type named struct {
	name string
	file *file
}

type root struct {
	fs.Inode
	files []named
	extra map[string][]byte
	mode  uint32
	owner fuse.Owner
	mtime time.Time
}

var _ = (fs.NodeOnAdder)((*root)(nil))

func (r *root) OnAdd(ctx context.Context) {
	ino := uint64(2)
	for _, f := range r.files {
		r.AddChild(f.name, r.NewPersistentInode(ctx, f.file, fs.StableAttr{Mode: syscall.S_IFREG, Ino: ino}), false)
		ino++
	}
	names := make([]string, 0, len(r.extra))
	for n := range r.extra {
		names = append(names, n)
	}
	slices.Sort(names) // stable inode numbers
	for _, n := range names {
		ro := &roFile{data: r.extra[n], mode: r.mode, owner: r.owner, mtime: r.mtime}
		r.AddChild(n, r.NewPersistentInode(ctx, ro, fs.StableAttr{Mode: syscall.S_IFREG, Ino: ino}), false)
		ino++
	}
}

// roFile is a small read-only file beside the disk file.
type roFile struct {
	fs.Inode
	data  []byte
	mode  uint32
	owner fuse.Owner
	mtime time.Time
}

var (
	_ = (fs.NodeGetattrer)((*roFile)(nil))
	_ = (fs.NodeOpener)((*roFile)(nil))
	_ = (fs.NodeReader)((*roFile)(nil))
)

func (f *roFile) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	out.Mode = syscall.S_IFREG | f.mode
	out.Size = uint64(len(f.data))
	out.Nlink = 1
	out.SetTimes(nil, &f.mtime, &f.mtime)
	out.Owner = f.owner
	return 0
}

func (f *roFile) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	if flags&(syscall.O_WRONLY|syscall.O_RDWR|syscall.O_TRUNC) != 0 {
		return nil, 0, syscall.EROFS
	}
	return nil, fuse.FOPEN_KEEP_CACHE, 0
}

func (f *roFile) Read(ctx context.Context, fh fs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	if off >= int64(len(f.data)) {
		return fuse.ReadResultData(nil), 0
	}
	return fuse.ReadResultData(f.data[off:min(off+int64(len(dest)), int64(len(f.data)))]), 0
}

type file struct {
	fs.Inode
	dev   Device
	mode  uint32
	owner fuse.Owner
	logf  func(string, ...any)
	mtime time.Time
}

var (
	_ = (fs.NodeGetattrer)((*file)(nil))
	_ = (fs.NodeSetattrer)((*file)(nil))
	_ = (fs.NodeOpener)((*file)(nil))
	_ = (fs.NodeReader)((*file)(nil))
	_ = (fs.NodeWriter)((*file)(nil))
	_ = (fs.NodeFsyncer)((*file)(nil))
	_ = (fs.NodeFlusher)((*file)(nil))
	_ = (fs.NodeAllocater)((*file)(nil))
)

func (f *file) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	out.Mode = syscall.S_IFREG | f.mode
	out.Size = uint64(f.dev.Size())
	out.Nlink = 1
	out.Blksize = 4096
	out.Blocks = (out.Size + 511) / 512
	out.SetTimes(nil, &f.mtime, &f.mtime)
	out.Owner = f.owner
	return 0
}

// Setattr accepts what does not change the size (touch; chmod and chown are
// ignored, so the mode stays what Options says); a disk cannot grow or shrink.
func (f *file) Setattr(ctx context.Context, fh fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if sz, ok := in.GetSize(); ok && int64(sz) != f.dev.Size() {
		return syscall.EPERM
	}
	return f.Getattr(ctx, fh, out)
}

func (f *file) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	if flags&syscall.O_TRUNC != 0 {
		return nil, 0, syscall.EPERM
	}
	// Direct I/O: a write goes from the caller's pages straight into the
	// request, not through a page-cache copy first, and the disk is not
	// cached twice (loop devices and guests cache above it). The file
	// cannot be mmapped.
	return nil, fuse.FOPEN_DIRECT_IO, 0
}

func (f *file) Read(ctx context.Context, fh fs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	if off >= f.dev.Size() {
		return fuse.ReadResultData(nil), 0
	}
	n, err := f.dev.ReadAt(dest, off)
	if err != nil && n < len(dest) && off+int64(n) < f.dev.Size() {
		return nil, f.errno("read", off, err)
	}
	return fuse.ReadResultData(dest[:n]), 0
}

func (f *file) Write(ctx context.Context, fh fs.FileHandle, data []byte, off int64) (uint32, syscall.Errno) {
	n, err := f.dev.WriteFileAt(data, off)
	if err != nil {
		return 0, f.errno("write", off, err)
	}
	return uint32(n), 0
}

func (f *file) Fsync(ctx context.Context, fh fs.FileHandle, flags uint32) syscall.Errno {
	if err := f.dev.Flush(); err != nil {
		return f.errno("fsync", 0, err)
	}
	return 0
}

// Flush is called on every close: what a program wrote is durable when its
// close returns, as if it had called fsync.
func (f *file) Flush(ctx context.Context, fh fs.FileHandle) syscall.Errno {
	return f.Fsync(ctx, fh, 0)
}

// Allocate punches holes (discard) as zeros; plain allocation is a no-op, the
// whole disk exists already.
func (f *file) Allocate(ctx context.Context, fh fs.FileHandle, off, size uint64, mode uint32) syscall.Errno {
	const punchHole = 0x02 // FALLOC_FL_PUNCH_HOLE
	if mode&punchHole == 0 {
		if int64(off+size) > f.dev.Size() {
			return syscall.ENOSPC
		}
		return 0
	}
	if err := f.dev.Zero(int64(off), int64(size)); err != nil {
		return f.errno("punch hole", int64(off), err)
	}
	return 0
}

// errno maps an error to what the kernel returns, logging the unexpected.
func (f *file) errno(op string, off int64, err error) syscall.Errno {
	switch {
	case errors.Is(err, store.ErrOutOfRange):
		return syscall.ENOSPC
	case errors.Is(err, store.ErrNoSpace):
		// The repository's filesystem is at its reserve: the write was
		// refused whole and the journal is intact. Not logged per write:
		// the service warns once when space runs low and when it runs out.
		return syscall.ENOSPC
	case errors.Is(err, cdp.ErrMisaligned):
		return syscall.EINVAL
	case errors.Is(err, context.Canceled):
		return syscall.EINTR
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		f.logf("tap: %s at %d: %v", op, off, err)
		return errno
	}
	f.logf("tap: %s at %d: %v", op, off, err)
	return syscall.EIO
}

// String names the node in go-fuse's debug output.
func (f *file) String() string { return fmt.Sprintf("tap(%d bytes)", f.dev.Size()) }
