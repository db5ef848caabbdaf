package recovery

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/hindsight-cdp/hindsight/cdp"
	"github.com/hindsight-cdp/hindsight/fs/fusesrv"
	"github.com/hindsight-cdp/hindsight/fs/tap"
)

// MethodClone: the filesystem's log needed replaying, so the partition was
// mounted from a disposable copy-on-write clone that took the replay; the
// instant itself is never written.
const MethodClone = "cow-clone"

const sector = 512

// cow is a disposable copy-on-write clone of size bytes of base from off:
// reads come from base until a sector is written; writes go to a sparse
// scratch file. It is served as a writable file by the tap, so that a
// filesystem can replay its journal on it.
type cow struct {
	base    *os.File
	off     int64
	size    int64
	scratch *os.File
	mu      sync.RWMutex
	written []uint64   // one bit per sector
	patch   sync.Mutex // one WriteFileAt at a time: a partial sector is read, patched, written
}

func newCOW(flat string, off, size int64, scratch string) (*cow, error) {
	base, err := os.Open(flat)
	if err != nil {
		return nil, err
	}
	s, err := os.OpenFile(scratch, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		base.Close()
		return nil, err
	}
	return &cow{base: base, off: off, size: size, scratch: s, written: make([]uint64, (size/sector+63)/64)}, nil
}

func (c *cow) Size() int64 { return c.size }

func (c *cow) isWritten(s int64) bool { return c.written[s/64]&(1<<(s%64)) != 0 }

// ReadAt reads runs of sectors from the scratch file or the base; any
// offset and length within the clone.
func (c *cow) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(p)) > c.size {
		return 0, fmt.Errorf("cow: read of %d at %d: %w", len(p), off, os.ErrInvalid)
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	end := int64(len(p))
	for i := int64(0); i < end; {
		w := c.isWritten((off + i) / sector)
		j := min(end, ((off+i)/sector+1)*sector-off) // to the end of this sector
		for j < end && c.isWritten((off+j)/sector) == w {
			j = min(end, j+sector)
		}
		var err error
		if w {
			_, err = c.scratch.ReadAt(p[i:j], off+i)
		} else {
			_, err = c.base.ReadAt(p[i:j], c.off+off+i)
		}
		if err != nil {
			return int(i), err
		}
		i = j
	}
	return len(p), nil
}

func (c *cow) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 || off%sector != 0 || len(p)%sector != 0 || off+int64(len(p)) > c.size {
		return 0, fmt.Errorf("cow: write of %d at %d: %w", len(p), off, os.ErrInvalid)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, err := c.scratch.WriteAt(p, off); err != nil {
		return 0, err
	}
	for s := off / sector; s < (off+int64(len(p)))/sector; s++ {
		c.written[s/64] |= 1 << (s % 64)
	}
	return len(p), nil
}

// WriteFileAt writes any byte range, as the tap needs (see tap.Device):
// partial sectors at either end are read from the clone and patched.
func (c *cow) WriteFileAt(p []byte, off int64) (int, error) {
	end := off + int64(len(p))
	first, last := off/sector*sector, (end+sector-1)/sector*sector
	if off < 0 || end > c.size {
		return 0, fmt.Errorf("cow: write of %d at %d: %w", len(p), off, os.ErrInvalid)
	}
	if first == off && last == end {
		return c.WriteAt(p, off)
	}
	c.patch.Lock()
	defer c.patch.Unlock()
	buf := make([]byte, last-first)
	if _, err := c.ReadAt(buf[:sector], first); err != nil {
		return 0, err
	}
	if _, err := c.ReadAt(buf[len(buf)-sector:], last-sector); err != nil {
		return 0, err
	}
	copy(buf[off-first:], p)
	if _, err := c.WriteAt(buf, first); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (c *cow) Zero(off, n int64) error { return cdp.WriteZeros(c, off, n) }

// Flush has nothing to make durable: the clone is thrown away.
func (c *cow) Flush() error { return nil }

func (c *cow) close() error {
	c.base.Close()
	name := c.scratch.Name()
	c.scratch.Close()
	return os.Remove(name)
}

// clone is a partition's disposable clone and its mount, undone by release.
type clone struct {
	dev *cow
	srv *fusesrv.Server
	dir string
}

// newClone serves a copy-on-write clone of the partition (off, size) of the
// flat image as dir/part.img.
func newClone(ctx context.Context, flat string, off, size int64, dir string) (*clone, error) {
	if err := os.Mkdir(dir, 0o700); err != nil {
		return nil, err
	}
	dev, err := newCOW(flat, off, size, filepath.Join(dir, "scratch"))
	if err != nil {
		os.Remove(dir)
		return nil, err
	}
	mnt := filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o700); err != nil {
		dev.close()
		os.Remove(dir)
		return nil, err
	}
	srv, err := tap.Mount(context.WithoutCancel(ctx), mnt, "part.img", dev, tap.Options{})
	if err != nil {
		dev.close()
		os.Remove(mnt)
		os.Remove(dir)
		return nil, err
	}
	return &clone{dev: dev, srv: srv, dir: dir}, nil
}

func (c *clone) file() string { return filepath.Join(c.dir, "mnt", "part.img") }

// release unmounts the clone (after the filesystem on it; the kernel lets
// go of the loop device's file a moment later) and drops its scratch file.
func (c *clone) release() error {
	if err := c.srv.UnmountWait(context.Background(), fusesrv.UnmountTimeout); err != nil {
		return fmt.Errorf("clone: %w", err)
	}
	err := c.dev.close()
	os.Remove(filepath.Join(c.dir, "mnt"))
	os.Remove(c.dir)
	return err
}
