package cdp

import (
	"encoding/binary"
	"math/rand/v2"
	"testing"
)

// fresh makes every block of buf new content for write i, so that nothing
// dedupes: what dd of random data or a busy database writes.
func fresh(buf []byte, i int) {
	for off := 0; off < len(buf); off += 4096 {
		binary.LittleEndian.PutUint64(buf[off:], uint64(i))
	}
}

// BenchmarkDeviceWrite1M measures the capture core alone (no FUSE, no NBD):
// 1 MiB writes of new incompressible data, each journaled as one point.
func BenchmarkDeviceWrite1M(b *testing.B) {
	r := newRepoB(b)
	d, _ := r.CreateDisk("b", 4<<30, 4096)
	v := NewDevice(r, d, "bench")
	buf := make([]byte, 1<<20)
	for i := range buf {
		buf[i] = byte(rand.Uint32())
	}
	b.SetBytes(int64(len(buf)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		fresh(buf, i)
		if _, err := v.WriteAt(buf, int64(i%4000)<<20); err != nil {
			b.Fatal(err)
		}
	}
	v.Flush()
}

// BenchmarkDeviceWrite4KSync64 is the core's share of the tap's random-write
// workload: 4 KiB writes at random offsets, a Flush (fsync) every 64.
func BenchmarkDeviceWrite4KSync64(b *testing.B) {
	r := newRepoB(b)
	d, _ := r.CreateDisk("b", 1<<30, 4096)
	v := NewDevice(r, d, "bench")
	buf := make([]byte, 4096)
	for i := range buf {
		buf[i] = byte(rand.Uint32())
	}
	rng := rand.New(rand.NewPCG(1, 2))
	b.SetBytes(int64(len(buf)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		fresh(buf, i)
		if _, err := v.WriteAt(buf, rng.Int64N(1<<18)<<12); err != nil {
			b.Fatal(err)
		}
		if i%64 == 63 {
			if err := v.Flush(); err != nil {
				b.Fatal(err)
			}
		}
	}
	v.Flush()
}
