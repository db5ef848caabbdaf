package cutfs

import (
	"context"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// handle is an open file: a read-write descriptor of the backing file,
// which only a sync writes through.
type handle struct {
	c   *FS
	fd  int
	ino uint64
}

var (
	_ = (fs.FileReader)((*handle)(nil))
	_ = (fs.FileWriter)((*handle)(nil))
	_ = (fs.FileFsyncer)((*handle)(nil))
	_ = (fs.FileFlusher)((*handle)(nil))
	_ = (fs.FileReleaser)((*handle)(nil))
)

func (h *handle) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	if e := h.c.enter(); e != 0 {
		return nil, e
	}
	defer h.c.mu.Unlock()
	p, err := h.c.state(h.ino, h.fd)
	if err != nil {
		return nil, fs.ToErrno(err)
	}
	n, err := p.read(h.fd, dest, off)
	if err != nil {
		return nil, fs.ToErrno(err)
	}
	return fuse.ReadResultData(dest[:n]), 0
}

func (h *handle) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	if e := h.c.enter(); e != 0 {
		return 0, e
	}
	defer h.c.mu.Unlock()
	p, err := h.c.state(h.ino, h.fd)
	if err != nil {
		return 0, fs.ToErrno(err)
	}
	p.write(off, data)
	return uint32(len(data)), 0
}

// Fsync makes the file's pending changes durable (fsync and fdatasync
// alike: the model has no metadata apart from the size).
func (h *handle) Fsync(ctx context.Context, flags uint32) syscall.Errno {
	if e := h.c.enter(); e != 0 {
		return e
	}
	defer h.c.mu.Unlock()
	return fs.ToErrno(h.c.sync(h.ino, h.fd))
}

func (h *handle) Flush(ctx context.Context) syscall.Errno {
	if e := h.c.enter(); e != 0 {
		return e
	}
	h.c.mu.Unlock()
	return 0
}

// Release closes the backing descriptor, after a cut too.
func (h *handle) Release(ctx context.Context) syscall.Errno {
	return fs.ToErrno(unix.Close(h.fd))
}

// dirHandle is an open directory; its fsync makes the namespace
// operations in it durable.
type dirHandle struct {
	n  *node
	ds fs.DirStream
}

var (
	_ = (fs.FileReaddirenter)((*dirHandle)(nil))
	_ = (fs.FileSeekdirer)((*dirHandle)(nil))
	_ = (fs.FileReleasedirer)((*dirHandle)(nil))
	_ = (fs.FileFsyncdirer)((*dirHandle)(nil))
)

func (d *dirHandle) Readdirent(ctx context.Context) (*fuse.DirEntry, syscall.Errno) {
	if e := d.n.c.enter(); e != 0 {
		return nil, e
	}
	defer d.n.c.mu.Unlock()
	return d.ds.(fs.FileReaddirenter).Readdirent(ctx)
}

func (d *dirHandle) Seekdir(ctx context.Context, off uint64) syscall.Errno {
	if e := d.n.c.enter(); e != 0 {
		return e
	}
	defer d.n.c.mu.Unlock()
	return d.ds.(fs.FileSeekdirer).Seekdir(ctx, off)
}

func (d *dirHandle) Releasedir(ctx context.Context, flags uint32) {
	d.ds.Close()
}

func (d *dirHandle) Fsyncdir(ctx context.Context, flags uint32) syscall.Errno {
	if e := d.n.c.enter(); e != 0 {
		return e
	}
	defer d.n.c.mu.Unlock()
	ino, e := d.n.ino()
	if e != 0 {
		return e
	}
	return fs.ToErrno(d.n.c.syncDir(ino))
}
