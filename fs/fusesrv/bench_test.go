package fusesrv

import (
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/hindsight-cdp/hindsight/fs/fuseuring"
)

// noopFile takes every write and keeps nothing: what is measured is the
// transport.
type noopFile struct{ fs.Inode }

const noopSize = 1 << 30

func (f *noopFile) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	out.Mode = syscall.S_IFREG | 0o600
	out.Size = noopSize
	return 0
}

func (f *noopFile) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	return nil, fuse.FOPEN_DIRECT_IO, 0
}

func (f *noopFile) Write(ctx context.Context, fh fs.FileHandle, data []byte, off int64) (uint32, syscall.Errno) {
	return uint32(len(data)), 0
}

func (f *noopFile) Fsync(ctx context.Context, fh fs.FileHandle, flags uint32) syscall.Errno { return 0 }

func (f *noopFile) Flush(ctx context.Context, fh fs.FileHandle) syscall.Errno { return 0 }

type noopRoot struct{ fs.Inode }

func (r *noopRoot) OnAdd(ctx context.Context) {
	r.AddChild("disk.img", r.NewPersistentInode(ctx, &noopFile{}, fs.StableAttr{Mode: syscall.S_IFREG, Ino: 2}), false)
}

// BenchmarkUringWrite4K writes 4 KiB at random aligned offsets of a no-op
// file with an fsync every 64 writes, from one thread, as
// fio --rw=randwrite --bs=4k --fsync=64 --ioengine=psync does, over
// /dev/fuse and over io_uring.
func BenchmarkUringWrite4K(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("mounting needs root")
	}
	for _, tc := range []struct {
		name  string
		uring bool
	}{{"devfuse", false}, {"uring", true}} {
		b.Run(tc.name, func(b *testing.B) {
			if tc.uring {
				if err := fuseuring.Available(); err != nil && !errors.Is(err, fuseuring.ErrSwitchOff) {
					b.Skip(err)
				}
			}
			dir := b.TempDir()
			srv, err := Mount(context.Background(), dir, &noopRoot{}, Config{Name: "bench", IOUring: tc.uring, Logf: b.Logf})
			if err != nil {
				b.Fatal(err)
			}
			defer func() {
				if err := srv.Unmount(); err != nil {
					b.Error(err)
				}
			}()
			if srv.IOUring() != tc.uring {
				b.Fatalf("served over io_uring: %v", srv.IOUring())
			}
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			fd, err := unix.Open(filepath.Join(dir, "disk.img"), unix.O_RDWR|unix.O_CLOEXEC, 0)
			if err != nil {
				b.Fatal(err)
			}
			defer unix.Close(fd)
			buf := make([]byte, 4096)
			rng := rand.New(rand.NewPCG(1, 1))
			b.SetBytes(int64(len(buf)))
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				if _, err := unix.Pwrite(fd, buf, int64(rng.IntN(noopSize/4096))*4096); err != nil {
					b.Fatal(err)
				}
				if i%64 == 63 {
					if err := unix.Fsync(fd); err != nil {
						b.Fatal(err)
					}
				}
			}
		})
	}
}
