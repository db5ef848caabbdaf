package tap

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"

	"github.com/hindsight-cdp/hindsight/cdp"
	"github.com/hindsight-cdp/hindsight/store"
)

// BenchmarkTapWrite1M writes 1 MiB of new random data per op through a real
// FUSE mount of the tap, sequentially as dd does, and fsyncs at the end.
// Needs root (FUSE); the repository lives in TMPDIR.
func BenchmarkTapWrite1M(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root for FUSE")
	}
	dir := b.TempDir()
	repo := filepath.Join(dir, "repo")
	if err := store.Init(repo); err != nil {
		b.Fatal(err)
	}
	r, err := store.Open(repo, store.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	const size = 1 << 30
	d, err := r.CreateDisk("d", size, 4096)
	if err != nil {
		b.Fatal(err)
	}
	dev := cdp.NewDevice(r, d, "tap")
	mnt := filepath.Join(dir, "mnt")
	os.Mkdir(mnt, 0o700)
	srv, err := Mount(context.Background(), mnt, "d.img", dev, Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer func() { srv.Unmount(); srv.Wait() }()
	f, err := os.OpenFile(filepath.Join(mnt, "d.img"), os.O_WRONLY, 0)
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
