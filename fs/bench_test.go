package fs

import (
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// BenchmarkSequentialRead reads a 256 MiB image from an in-memory Source
// through the mount with 1 MiB reads. cold drops the file's page cache
// before each pass, so every byte goes through the FUSE server; cached
// measures FOPEN_KEEP_CACHE's repeat reads.
func BenchmarkSequentialRead(b *testing.B) {
	const size = 256 << 20
	src := newFakeSource()
	src.addDisk("big", size, t0)
	src.addPoint("big", t0)
	mnt := testMount(b, src, Options{Now: func() time.Time { return t0.Add(time.Hour) }})
	path := filepath.Join(mnt, "big", "latest", "big-flat.vmdk")

	for _, cold := range []bool{true, false} {
		name := "cached"
		if cold {
			name = "cold"
		}
		b.Run(name, func(b *testing.B) {
			f, err := os.Open(path)
			if err != nil {
				b.Fatal(err)
			}
			defer f.Close()
			buf := make([]byte, 1<<20)
			read := func() {
				var total int64
				for {
					n, err := f.ReadAt(buf, total)
					total += int64(n)
					if err == io.EOF {
						break
					}
					if err != nil {
						b.Fatal(err)
					}
				}
				if total != size {
					b.Fatalf("read %d bytes, want %d", total, size)
				}
			}
			if !cold {
				read() // fill the cache
			}
			b.SetBytes(size)
			b.ResetTimer()
			for b.Loop() {
				if cold {
					b.StopTimer()
					if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
						b.Fatal(err)
					}
					b.StartTimer()
				}
				read()
			}
		})
	}
}
