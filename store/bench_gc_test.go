package store

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"
)

// BenchmarkPruneCollect prunes and collects the same history (hist steps of
// 16 fresh 4 KiB blocks each, every other point removed) in a repository
// that holds only it ("1x") and in one that holds nine times as much other
// content before it ("10x"): prune and gc must cost what they remove, not
// the repository's size. The history starts its own segment in both, so gc
// rewrites the same bytes. Reports the seconds of each phase and MB/s of
// stored content reclaimed.
func BenchmarkPruneCollect(b *testing.B) {
	for _, scale := range []int{1, 10} {
		b.Run(fmt.Sprintf("%dx", scale), func(b *testing.B) {
			var prune, gc time.Duration
			var freed int64
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				r, d := gcBenchRepo(b, scale)
				b.StartTimer()
				pts, err := r.Points(d.Timeline, time.Unix(0, 0), time.Now().Add(time.Hour), 0)
				if err != nil {
					b.Fatal(err)
				}
				var keep []uint64
				for j, p := range pts {
					if j%2 == 1 { // the second write of each group
						keep = append(keep, p.Seq)
					}
				}
				t0 := time.Now()
				res, err := r.Prune(context.Background(), d.Timeline, PruneOptions{Keep: keep})
				if err != nil {
					b.Fatal(err)
				}
				t1 := time.Now()
				g, err := r.Collect(context.Background(), GCOptions{})
				if err != nil {
					b.Fatal(err)
				}
				prune += t1.Sub(t0)
				gc += time.Since(t1)
				freed += g.FreedBytes
				if res.Versions == 0 || g.Rewritten == 0 {
					b.Fatalf("nothing to do: %d versions collapsed, %d segments rewritten", res.Versions, g.Rewritten)
				}
				b.StopTimer()
				r.Close()
				b.StartTimer()
			}
			b.ReportMetric(prune.Seconds()/float64(b.N), "prune-s/op")
			b.ReportMetric(gc.Seconds()/float64(b.N), "gc-s/op")
			b.ReportMetric(float64(freed)/1e6/(prune+gc).Seconds(), "MB/s-reclaimed")
		})
	}
}

// gcBenchRepo makes a repository with (scale-1)×64 MiB of other content,
// then, in a new segment, disk "h" with 2048 steps of 16 fresh blocks (the
// history a benchmark prunes, 128 MiB, each group of 16 blocks written by
// two steps in a row).
func gcBenchRepo(b *testing.B, scale int) (*Repo, Disk) {
	dir := b.TempDir()
	if err := Init(dir); err != nil {
		b.Fatal(err)
	}
	r, err := Open(dir, Options{})
	if err != nil {
		b.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(uint64(scale), 5))
	block := func() []byte {
		p := make([]byte, 4096)
		for i := 0; i < len(p); i += 8 {
			v := rng.Uint64()
			for k := range 8 {
				p[i+k] = byte(v >> (8 * k))
			}
		}
		return p
	}
	if scale > 1 {
		other, err := r.CreateDisk("other", int64(scale-1)<<26, 4096)
		if err != nil {
			b.Fatal(err)
		}
		s, err := r.Begin(other.Timeline, time.Time{})
		if err != nil {
			b.Fatal(err)
		}
		for blk := range other.Blocks() {
			if err := s.Put(other, blk, block()); err != nil {
				b.Fatal(err)
			}
		}
		if _, err := s.Commit(); err != nil {
			b.Fatal(err)
		}
	}
	d, err := r.CreateDisk("h", 64<<20, 4096)
	if err != nil {
		b.Fatal(err)
	}
	r.acquire()
	if r.segs.wLen > 0 {
		err = r.segs.rotate()
	}
	r.wmu.Unlock()
	if err != nil {
		b.Fatal(err)
	}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range 2048 {
		ws := make([]BlockWrite, 16)
		base := uint64(i/2) % (d.Blocks() / 16) // two steps write each group
		for k := range ws {
			ws[k] = BlockWrite{Disk: d, Block: base*16 + uint64(k), Data: block()}
		}
		if _, err := r.CaptureAt(d.Timeline, t0.Add(time.Duration(i)*time.Second), ws); err != nil {
			b.Fatal(err)
		}
	}
	if err := r.Sync(); err != nil {
		b.Fatal(err)
	}
	// The timed part starts once the index's own work is done: a setup's
	// compactions would otherwise run into it, more of them for more data.
	if err := r.db.Flush(); err != nil {
		b.Fatal(err)
	}
	for r.db.Metrics().Compact.NumInProgress > 0 {
		time.Sleep(10 * time.Millisecond)
	}
	return r, d
}
