package fuseuring

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// The tree the tests mount: a read-write disk file served with direct I/O,
// as the tap serves a disk, backed by a byte slice the tests compare with
// their own model, and a directory of read-only files, as an instant's tree.
//
//	disk.img      read-write, direct I/O
//	docs/fNN      read-only, page cache, content docContent(NN)
//	empty/        a directory with nothing in it

const docCount = 40

func docContent(i int) []byte {
	b := make([]byte, 100+i*997)
	for j := range b {
		b[j] = byte(i*31 + j*7)
	}
	return b
}

type treeRoot struct {
	fs.Inode
	disk *diskFile
}

var (
	_ = (fs.NodeOnAdder)((*treeRoot)(nil))
	_ = (fs.NodeStatfser)((*treeRoot)(nil))
)

func (r *treeRoot) OnAdd(ctx context.Context) {
	r.AddChild("disk.img", r.NewPersistentInode(ctx, r.disk, fs.StableAttr{Mode: syscall.S_IFREG, Ino: 2}), false)
	docs := r.NewPersistentInode(ctx, &fs.Inode{}, fs.StableAttr{Mode: syscall.S_IFDIR, Ino: 3})
	r.AddChild("docs", docs, false)
	for i := range docCount {
		f := &docFile{data: docContent(i)}
		docs.AddChild(fmt.Sprintf("f%02d", i), r.NewPersistentInode(ctx, f, fs.StableAttr{Ino: uint64(100 + i)}), false)
	}
	r.AddChild("empty", r.NewPersistentInode(ctx, &fs.Inode{}, fs.StableAttr{Mode: syscall.S_IFDIR, Ino: 4}), false)
}

func (r *treeRoot) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	*out = fuse.StatfsOut{Blocks: 1000, Bfree: 400, Bavail: 300, Files: 50, Ffree: 7, Bsize: 4096, NameLen: 255, Frsize: 4096}
	return 0
}

// docFile is a read-only file, cached by the kernel.
type docFile struct {
	fs.Inode
	data []byte
}

var (
	_ = (fs.NodeGetattrer)((*docFile)(nil))
	_ = (fs.NodeOpener)((*docFile)(nil))
	_ = (fs.NodeReader)((*docFile)(nil))
)

func (f *docFile) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	out.Mode = syscall.S_IFREG | 0o444
	out.Size = uint64(len(f.data))
	out.Nlink = 1
	return 0
}

func (f *docFile) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	if flags&(syscall.O_WRONLY|syscall.O_RDWR|syscall.O_TRUNC) != 0 {
		return nil, 0, syscall.EROFS
	}
	return nil, fuse.FOPEN_KEEP_CACHE, 0
}

func (f *docFile) Read(ctx context.Context, fh fs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	if off >= int64(len(f.data)) {
		return fuse.ReadResultData(nil), 0
	}
	return fuse.ReadResultData(f.data[off:min(off+int64(len(dest)), int64(len(f.data)))]), 0
}

// diskFile is the read-write file.
type diskFile struct {
	fs.Inode
	mu      sync.Mutex
	data    []byte
	fsyncs  atomic.Int64
	flushes atomic.Int64

	// If hold is set, Fsync waits until its context ends or hold is
	// closed, and reports which on held.
	hold chan struct{}
	held chan error
}

var (
	_ = (fs.NodeGetattrer)((*diskFile)(nil))
	_ = (fs.NodeSetattrer)((*diskFile)(nil))
	_ = (fs.NodeOpener)((*diskFile)(nil))
	_ = (fs.NodeReader)((*diskFile)(nil))
	_ = (fs.NodeWriter)((*diskFile)(nil))
	_ = (fs.NodeFsyncer)((*diskFile)(nil))
	_ = (fs.NodeFlusher)((*diskFile)(nil))
	_ = (fs.NodeAllocater)((*diskFile)(nil))
	_ = (fs.NodeLseeker)((*diskFile)(nil))
)

func (f *diskFile) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	f.mu.Lock()
	defer f.mu.Unlock()
	out.Mode = syscall.S_IFREG | 0o600
	out.Size = uint64(len(f.data))
	out.Nlink = 1
	out.Blksize = 4096
	return 0
}

func (f *diskFile) Setattr(ctx context.Context, fh fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if sz, ok := in.GetSize(); ok {
		f.mu.Lock()
		f.data = resize(f.data, int(sz))
		f.mu.Unlock()
	}
	return f.Getattr(ctx, fh, out)
}

func (f *diskFile) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	return nil, fuse.FOPEN_DIRECT_IO, 0
}

func (f *diskFile) Read(ctx context.Context, fh fs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if off >= int64(len(f.data)) {
		return fuse.ReadResultData(nil), 0
	}
	n := copy(dest, f.data[off:])
	return fuse.ReadResultData(dest[:n]), 0
}

func (f *diskFile) Write(ctx context.Context, fh fs.FileHandle, data []byte, off int64) (uint32, syscall.Errno) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if end := int(off) + len(data); end > len(f.data) {
		f.data = resize(f.data, end)
	}
	copy(f.data[off:], data)
	return uint32(len(data)), 0
}

func (f *diskFile) Fsync(ctx context.Context, fh fs.FileHandle, flags uint32) syscall.Errno {
	f.fsyncs.Add(1)
	if f.hold != nil {
		select {
		case <-ctx.Done():
			f.held <- ctx.Err()
			return syscall.EINTR
		case <-f.hold:
			f.held <- nil
		}
	}
	return 0
}

func (f *diskFile) Flush(ctx context.Context, fh fs.FileHandle) syscall.Errno {
	f.flushes.Add(1)
	return 0
}

// Allocate punches holes as zeros (FALLOC_FL_PUNCH_HOLE, with KEEP_SIZE)
// and otherwise extends the file.
func (f *diskFile) Allocate(ctx context.Context, fh fs.FileHandle, off, size uint64, mode uint32) syscall.Errno {
	const keepSize, punchHole = 0x01, 0x02
	f.mu.Lock()
	defer f.mu.Unlock()
	end := int(off + size)
	if mode&punchHole != 0 {
		clear(f.data[min(int(off), len(f.data)):min(end, len(f.data))])
		return 0
	}
	if mode&keepSize == 0 && end > len(f.data) {
		f.data = resize(f.data, end)
	}
	return 0
}

// Lseek: the whole file is data.
func (f *diskFile) Lseek(ctx context.Context, fh fs.FileHandle, off uint64, whence uint32) (uint64, syscall.Errno) {
	const seekData, seekHole = 3, 4
	f.mu.Lock()
	defer f.mu.Unlock()
	size := uint64(len(f.data))
	if off >= size {
		return 0, syscall.ENXIO
	}
	if whence == seekHole {
		return size, 0
	}
	return off, 0
}

func (f *diskFile) snapshot() []byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]byte(nil), f.data...)
}

func resize(b []byte, n int) []byte {
	if n <= len(b) {
		return b[:n]
	}
	return append(b, make([]byte, n-len(b))...)
}
