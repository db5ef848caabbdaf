package tap

import (
	"bytes"
	"context"
	"crypto/rand"
	"os"
	"path/filepath"
	"testing"

	"github.com/hindsight-cdp/hindsight/cdp"
	"github.com/hindsight-cdp/hindsight/store/storetest"
)

// TestTapUnalignedBuffers writes through a real FUSE mount of the tap, over
// both transports, from buffers that are not page-aligned (as fio's are):
// FUSE direct I/O splits such a write at page boundaries into pieces that are
// not sector-aligned, and the tap must journal them as the one write they
// were. A genuinely misaligned write is patched in as in any file. The
// journal's newest state and the file's reads must equal a model.
func TestTapUnalignedBuffers(t *testing.T) {
	for _, uring := range []bool{false, true} {
		name := "dev-fuse"
		if uring {
			name = "io-uring"
		}
		t.Run(name, func(t *testing.T) {
			const size = 8 << 20
			dev, file := mountTest(t, size, Options{IOUring: uring})
			f, err := os.OpenFile(file, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()

			model := make([]byte, size)
			// Large Go allocations start on a page, so buf[k:] is k bytes into one.
			buf := make([]byte, 3<<20)
			rand.Read(buf)
			for _, w := range []struct{ skew, off, n int }{
				{16, 0, 1 << 20},                 // aligned write, buffer 16 bytes into a page
				{4095, 1<<20 + 4096, 1 << 20},    // worst skew, block-aligned offset
				{512, 3<<20 + 512, 2<<20 + 1024}, // sector-aligned, several pieces
				{0, 7, 100},                      // misaligned in itself: patched, as in a file
				{100, 6<<20 + 4000, 5000},        // across a block boundary
			} {
				p := buf[w.skew : w.skew+w.n]
				if n, err := f.WriteAt(p, int64(w.off)); err != nil || n != w.n {
					t.Fatalf("write %d bytes at %d (buffer skew %d): n=%d, %v", w.n, w.off, w.skew, n, err)
				}
				copy(model[w.off:], p)
			}
			if err := f.Sync(); err != nil {
				t.Fatal(err)
			}
			got := make([]byte, size)
			if _, err := dev.ReadAt(got, 0); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, model) {
				t.Fatalf("journal's newest state differs from the model at byte %d", firstDiff(got, model))
			}
			clear(got)
			if _, err := f.ReadAt(got[1:], 1); err != nil { // an unaligned read too
				t.Fatal(err)
			}
			if !bytes.Equal(got[1:], model[1:]) {
				t.Fatalf("read through the tap differs from the model at byte %d", firstDiff(got, model))
			}
		})
	}
}

// mountTest serves a new disk of size bytes of a new repository (in TMPDIR)
// as the tap's file on a real FUSE mount, all undone at cleanup, and returns
// its Device and the file's path. It skips unless root (FUSE).
func mountTest(tb testing.TB, size int64, opt Options) (*cdp.Device, string) {
	if os.Geteuid() != 0 {
		tb.Skip("needs root for FUSE")
	}
	r, repo := storetest.Repo(tb)
	d, err := r.CreateDisk("d", size, 4096)
	if err != nil {
		tb.Fatal(err)
	}
	dev := cdp.NewDevice(r, d, "tap")
	mnt := filepath.Join(filepath.Dir(repo), "mnt")
	os.Mkdir(mnt, 0o700)
	return dev, mountDev(tb, mnt, dev, opt)
}

// mountDev serves dev as mnt/d.img on a real FUSE mount, undone at cleanup,
// and returns the file's path.
func mountDev(tb testing.TB, mnt string, dev Device, opt Options) string {
	srv, err := Mount(context.Background(), mnt, "d.img", dev, opt)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { srv.Unmount(); srv.Wait() })
	return filepath.Join(mnt, "d.img")
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}
