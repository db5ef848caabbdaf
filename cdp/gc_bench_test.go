package cdp

import (
	"context"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/hindsight-cdp/hindsight/store"
)

// BenchmarkWrite4KDuringGC is BenchmarkDeviceWrite4KSync64's published
// workload on one disk while garbage collection rewrites another disk's
// pruned history in the same repository ("gc"), and the same workload on
// the same repository without it ("alone"): capture during gc must keep
// at least 0.7 of its throughput. "gc-share" is the part of the timed
// writes gc was running for (give it a benchtime gc outlasts: 30000x).
func BenchmarkWrite4KDuringGC(b *testing.B) {
	b.Run("alone", func(b *testing.B) { benchWriteDuringGC(b, false) })
	b.Run("gc", func(b *testing.B) { benchWriteDuringGC(b, true) })
}

func benchWriteDuringGC(b *testing.B, gc bool) {
	r := newRepoB(b)
	pruneableHistory(b, r)
	d, _ := r.CreateDisk("b", 1<<30, 4096)
	v := NewDevice(r, d, "bench")
	ctx, cancel := context.WithCancel(context.Background())
	pub := make(chan error, 1)
	go func() { pub <- publishEvery(ctx, r, v, time.Second) }()
	gcDone := make(chan time.Time, 1)
	b.SetBytes(4096)
	b.ResetTimer()
	start := time.Now()
	if gc {
		go func() {
			if _, err := r.Collect(context.Background(), store.GCOptions{}); err != nil {
				b.Error(err)
			}
			gcDone <- time.Now()
		}()
	}
	write4KSync64(b, v)
	end := time.Now()
	b.StopTimer()
	if gc {
		until := <-gcDone
		b.ReportMetric(min(1, until.Sub(start).Seconds()/end.Sub(start).Seconds()), "gc-share")
	}
	cancel()
	if err := <-pub; err != nil {
		b.Error(err)
	}
}

// pruneableHistory writes a 256 MiB disk whole, overwrites every other
// 64 KiB of it, and prunes the first point: half of the first write is
// then content gc frees by rewriting its segment.
func pruneableHistory(b *testing.B, r *store.Repo) {
	d, err := r.CreateDisk("old", 256<<20, 4096)
	if err != nil {
		b.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(3, 4))
	block := make([]byte, 4096)
	t0 := time.Now().Add(-time.Hour)
	for step := range 2 {
		s, err := r.Begin(d.Timeline, t0.Add(time.Duration(step)*time.Minute))
		if err != nil {
			b.Fatal(err)
		}
		for blk := range d.Blocks() {
			if step == 1 && blk/16%2 == 0 {
				continue
			}
			for i := range block {
				block[i] = byte(rng.Uint32())
			}
			if err := s.Put(d, blk, block); err != nil {
				b.Fatal(err)
			}
		}
		if _, err := s.Commit(); err != nil {
			b.Fatal(err)
		}
	}
	last, err := r.LastPoint(d.Timeline)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := r.Prune(context.Background(), d.Timeline, store.PruneOptions{Keep: []uint64{last.Seq}}); err != nil {
		b.Fatal(err)
	}
}
