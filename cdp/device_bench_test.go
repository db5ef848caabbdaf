package cdp

import (
	"context"
	"encoding/binary"
	"math/rand/v2"
	"syscall"
	"testing"
	"time"

	"github.com/hindsight-cdp/hindsight/store"
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
// "published" also syncs and publishes the journal every second, as the
// service does: that flushes the index's memtable each second, so its
// compactions take their share as they do under the tap (alone, 64 MiB of
// memtable hold ~350,000 writes before anything is flushed). Give it
// several seconds: -benchtime 300000x.
func BenchmarkDeviceWrite4KSync64(b *testing.B) {
	b.Run("alone", func(b *testing.B) { benchWrite4K(b, false) })
	b.Run("published", func(b *testing.B) { benchWrite4K(b, true) })
}

// publishEvery syncs and publishes the journal every interval, as the
// service's publisher does while there are writes.
func publishEvery(ctx context.Context, r *store.Repo, v *Device, interval time.Duration) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		head, last := r.Head(), v.LastWriteNano()
		if err := r.Sync(); err != nil {
			return err
		}
		if err := r.Publish(); err != nil {
			return err
		}
		v.Published(head, last)
	}
}

func benchWrite4K(b *testing.B, published bool) {
	r := newRepoB(b)
	d, _ := r.CreateDisk("b", 1<<30, 4096)
	v := NewDevice(r, d, "bench")
	if published {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- publishEvery(ctx, r, v, time.Second) }()
		defer func() {
			cancel()
			if err := <-done; err != nil {
				b.Error(err)
			}
		}()
	}
	b.SetBytes(4096)
	cpu0 := processCPU()
	b.ResetTimer()
	write4KSync64(b, v)
	// The CPU of the whole process (committer, compactions, GC) per write:
	// what limits the tap, where fio and FUSE take the other core.
	b.ReportMetric(float64((processCPU()-cpu0).Microseconds())/float64(b.N), "cpu-us/op")
}

// processCPU is the user and system time of this process so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// write4KSync64 writes b.N fresh 4 KiB blocks at random offsets of v's first
// GiB, with a Flush (fsync) every 64 and one at the end.
func write4KSync64(b *testing.B, v *Device) {
	buf := make([]byte, 4096)
	for i := range buf {
		buf[i] = byte(rand.Uint32())
	}
	rng := rand.New(rand.NewPCG(1, 2))
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
	if err := v.Flush(); err != nil {
		b.Fatal(err)
	}
}
