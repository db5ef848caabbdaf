package tap

import (
	"crypto/rand"
	"encoding/binary"
	"os"
	"testing"
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
