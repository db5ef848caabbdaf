package cdp

import (
	"math/rand/v2"
	"testing"
)

// BenchmarkDeviceWrite1M measures the capture core alone (no FUSE, no NBD):
// 1 MiB writes of incompressible data, each journaled as one point.
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
		buf[0] = byte(i)
		buf[4096] = byte(i >> 8)
		if _, err := v.WriteAt(buf, int64(i%4000)<<20); err != nil {
			b.Fatal(err)
		}
	}
	v.Flush()
}
