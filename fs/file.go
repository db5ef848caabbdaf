package fs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// fileNode is a read-only file of an instant directory: an image or
// info.json, immutable and of exact size.
type fileNode struct {
	fs.Inode
	t     *tree
	r     io.ReaderAt // safe for concurrent use
	size  int64
	ino   uint64
	mtime time.Time
}

var (
	_ fs.NodeOpener    = (*fileNode)(nil)
	_ fs.NodeReader    = (*fileNode)(nil)
	_ fs.NodeGetattrer = (*fileNode)(nil)
)

func (f *fileNode) Getattr(ctx context.Context, _ fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	f.t.fileAttr(&out.Attr, f.ino, f.size, f.mtime)
	out.SetTimeout(immutableTimeout)
	return 0
}

// Open refuses writing (the mount is read-only as well) and keeps the page
// cache across opens: the content of a node never changes.
func (f *fileNode) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	if flags&syscall.O_ACCMODE != syscall.O_RDONLY || flags&syscall.O_TRUNC != 0 {
		return nil, 0, syscall.EROFS
	}
	return nil, fuse.FOPEN_KEEP_CACHE, 0
}

// Read reads straight into the request buffer; the kernel asks for whole
// pages, so the request is first cut at the end of the file.
func (f *fileNode) Read(ctx context.Context, _ fs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	if off < 0 {
		return nil, syscall.EINVAL
	}
	if off >= f.size {
		return fuse.ReadResultData(nil), 0
	}
	if rest := f.size - off; int64(len(dest)) > rest {
		dest = dest[:rest]
	}
	if err := ctx.Err(); err != nil {
		return nil, toErrno(err)
	}
	n, err := f.r.ReadAt(dest, off)
	if err != nil && !errors.Is(err, io.EOF) {
		// Part of a page with a failed rest is no answer: the kernel would
		// cache it as the whole page.
		return nil, f.t.errno(fmt.Sprintf("read inode %d at %d+%d", f.ino, off, len(dest)), err)
	}
	// io.EOF is the end of the data, not a failure: what came before it is
	// the answer. Short of the size we announced, it is a reader bug worth
	// a line (the kernel takes it as the end of the file).
	if n < len(dest) {
		f.t.logf("hindsight fs: inode %d: data ends at %d, size is %d", f.ino, off+int64(n), f.size)
	}
	return fuse.ReadResultData(dest[:n]), 0
}
