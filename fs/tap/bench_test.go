package tap

import (
	"crypto/rand"
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// BenchmarkTapWrite1M writes 1 MiB of new random data per op through a real
// FUSE mount of the tap, sequentially as dd does, and fsyncs at the end.
// Needs root (FUSE); the repository lives in TMPDIR.
func BenchmarkTapWrite1M(b *testing.B) {
	const size = 1 << 30
	_, file := mountTest(b, size, Options{})
	f, err := os.OpenFile(file, os.O_WRONLY, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	rand.Read(buf)
	b.SetBytes(int64(len(buf)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for off := 0; off < len(buf); off += 4096 { // every block new: nothing dedupes
			binary.LittleEndian.PutUint64(buf[off:], uint64(i))
		}
		if _, err := f.WriteAt(buf, int64(i%(size>>20))<<20); err != nil {
			b.Fatal(err)
		}
	}
	if err := f.Sync(); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkTapWrite4KSync64 is issue 3's small-write workload from Go, as
// fio runs it (psync, one thread): one 4 KiB write of fresh data per op at
// a random block of a 1 GiB file, fsync after every 64. Variants:
//
//	plain    a plain file in TMPDIR, written in full: the target's reference
//	memory   the tap over FUSE io_uring in front of a memory-backed device
//	         that journals nothing: the cost of the FUSE transport alone
//	journal  the tap as protect serves it (io_uring, journaled)
//
// The memory variant bounds what any journal behind FUSE can reach.
func BenchmarkTapWrite4KSync64(b *testing.B) {
	const size = 1 << 30
	run := func(b *testing.B, file string) {
		f, err := os.OpenFile(file, os.O_WRONLY, 0)
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		buf := make([]byte, 4096)
		rand.Read(buf)
		x := uint64(88172645463325252)
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			x ^= x << 13
			x ^= x >> 7
			x ^= x << 17
			binary.LittleEndian.PutUint64(buf, x) // fresh content: nothing dedupes
			if _, err := f.WriteAt(buf, int64(x%(size/4096))*4096); err != nil {
				b.Fatal(err)
			}
			if i%64 == 63 {
				if err := f.Sync(); err != nil {
					b.Fatal(err)
				}
			}
		}
		if err := f.Sync(); err != nil {
			b.Fatal(err)
		}
	}
	b.Run("plain", func(b *testing.B) {
		file := filepath.Join(b.TempDir(), "plain.img")
		// Written in full and synced first, as bench-write.sh's dd does:
		// the writes then overwrite allocated blocks, not fill holes.
		f, err := os.Create(file)
		if err != nil {
			b.Fatal(err)
		}
		// Random data: zeros are not stored by this VM's host, whose first
		// real writes to them would then cost an allocation each.
		fill := make([]byte, 1<<20)
		rand.Read(fill)
		for off := int64(0); off < size; off += int64(len(fill)) {
			if _, err := f.Write(fill); err != nil {
				b.Fatal(err)
			}
		}
		if err := f.Sync(); err != nil {
			b.Fatal(err)
		}
		// And out of the page cache, as fio's invalidate option (on by
		// default) does: the large folios a sequential write leaves would
		// make each 4 KiB write dirty, and fsync write back, up to 2 MiB
		// (measured: 50 instead of 16 us per op).
		if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
			b.Fatal(err)
		}
		if err := f.Close(); err != nil {
			b.Fatal(err)
		}
		run(b, file)
	})
	b.Run("memory", func(b *testing.B) {
		if os.Geteuid() != 0 {
			b.Skip("needs root for FUSE")
		}
		run(b, mountDev(b, b.TempDir(), &memDevice{data: make([]byte, size)}, Options{IOUring: true}))
	})
	b.Run("journal", func(b *testing.B) {
		_, file := mountTest(b, size, Options{IOUring: true})
		run(b, file)
	})
}

// memDevice is a Device held in memory that journals nothing.
type memDevice struct{ data []byte }

func (m *memDevice) Size() int64                                  { return int64(len(m.data)) }
func (m *memDevice) ReadAt(p []byte, off int64) (int, error)      { return copy(p, m.data[off:]), nil }
func (m *memDevice) WriteFileAt(p []byte, off int64) (int, error) { return copy(m.data[off:], p), nil }
func (m *memDevice) Zero(off, n int64) error                      { clear(m.data[off : off+n]); return nil }
func (m *memDevice) Flush() error                                 { return nil }
