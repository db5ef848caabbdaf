package replica

import (
	"encoding/binary"
	mrand "math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/hindsight-cdp/hindsight/store"
)

// journal4K captures n 4 KiB writes of new incompressible data at random
// blocks of d, a Sync every 64 (fio's --fsync=64), and returns how long
// the source took.
func journal4K(b *testing.B, r *store.Repo, d store.Disk, n int, seed uint64) time.Duration {
	rng := mrand.New(mrand.NewPCG(seed, 1))
	buf := make([]byte, 4096)
	for i := 0; i < len(buf); i += 8 {
		binary.LittleEndian.PutUint64(buf[i:], rng.Uint64())
	}
	start := time.Now()
	for i := range n {
		binary.LittleEndian.PutUint64(buf, uint64(i)^seed<<32)
		if err := r.CaptureAsync(d.Timeline, []store.BlockWrite{{Disk: d, Block: rng.Uint64N(d.Blocks()), Data: buf}}); err != nil {
			b.Fatal(err)
		}
		if i%64 == 63 {
			if err := r.Sync(); err != nil {
				b.Fatal(err)
			}
		}
	}
	if err := r.Sync(); err != nil {
		b.Fatal(err)
	}
	return time.Since(start)
}

// BenchmarkReplicate compares the source's journaling rate of a 4 KiB
// write workload, alone, with the rate at which a stream over TLS on
// loopback gets the same workload durable on a target while it is written
// (from the first write to the last acknowledgement); the lag (RPO) is
// sampled every 10 ms meanwhile. Give it one iteration: -benchtime 1x.
func BenchmarkReplicate(b *testing.B) {
	const writes = 16384 // 64 MiB
	var alone, with, repl time.Duration
	var lags []float64
	for b.Loop() {
		r, d := repoWith(b, "web", 1<<30)
		alone += journal4K(b, r, d, writes, 1)

		dr := newSite(b, "dr", tokensFile(b, "primary "+testToken+" web"), nil)
		src, sd := repoWith(b, "web", 1<<30)
		s, _ := startSender(b, src, "web", Target{Addr: dr.addr, CA: dr.ca.pem, Token: testToken}, SendOptions{}, nil)
		stop := make(chan struct{})
		sampled := make(chan []float64)
		go func() {
			var ls []float64
			tk := time.NewTicker(10 * time.Millisecond)
			defer tk.Stop()
			for {
				select {
				case <-stop:
					sampled <- ls
					return
				case <-tk.C:
					ls = append(ls, s.Status().LagSeconds)
				}
			}
		}()
		start := time.Now()
		with += journal4K(b, src, sd, writes, 2)
		waitAcked(b, src, s, 10*time.Minute)
		repl += time.Since(start)
		close(stop)
		lags = append(lags, <-sampled...)
	}
	mb := float64(writes*4096*b.N) / 1e6
	b.ReportMetric(mb/alone.Seconds(), "src-MB/s")
	b.ReportMetric(mb/with.Seconds(), "src-replicated-MB/s")
	b.ReportMetric(mb/repl.Seconds(), "repl-MB/s")
	b.ReportMetric(alone.Seconds()/repl.Seconds(), "repl/src")
	slices.Sort(lags)
	if len(lags) > 0 {
		b.ReportMetric(lags[len(lags)/2], "lag-p50-s")
		b.ReportMetric(lags[len(lags)*99/100], "lag-p99-s")
	}
}

// BenchmarkReplicateDelayed streams the same journaled workload through
// the test's proxy, once relayed at once and once with 25 ms added each
// way (50 ms round trip), and compares the two rates: round trips are
// pipelined, so the delay should cost little. -benchtime 1x.
func BenchmarkReplicateDelayed(b *testing.B) {
	const writes = 8192 // 32 MiB
	var took [2]time.Duration
	for b.Loop() {
		for i, delay := range []time.Duration{0, 25 * time.Millisecond} {
			src, d := repoWith(b, "web", 1<<30)
			journal4K(b, src, d, writes, 3)
			dr := newSite(b, "dr", tokensFile(b, "primary "+testToken+" web"), nil)
			px := newProxy(b, dr.addr, delay)
			start := time.Now()
			s, _ := startSender(b, src, "web", Target{Addr: px.addr(), CA: dr.ca.pem, Token: testToken}, SendOptions{}, nil)
			waitAcked(b, src, s, 10*time.Minute)
			took[i] += time.Since(start)
		}
	}
	mb := float64(writes*4096*b.N) / 1e6
	b.ReportMetric(mb/took[0].Seconds(), "MB/s")
	b.ReportMetric(mb/took[1].Seconds(), "delayed-MB/s")
	b.ReportMetric(took[0].Seconds()/took[1].Seconds(), "delayed/undelayed")
}
