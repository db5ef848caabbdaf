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
	var alone, with, repl, catchup time.Duration
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

		// The stream alone, the source idle: what replication moves
		// when it does not share the cores with the writer it follows,
		// as it does not when the sites are two machines.
		cs, cd := repoWith(b, "web", 1<<30)
		journal4K(b, cs, cd, writes, 4)
		dr2 := newSite(b, "dr2", tokensFile(b, "primary "+testToken+" web"), nil)
		start = time.Now()
		s2, _ := startSender(b, cs, "web", Target{Addr: dr2.addr, CA: dr2.ca.pem, Token: testToken}, SendOptions{}, nil)
		waitAcked(b, cs, s2, 10*time.Minute)
		catchup += time.Since(start)
	}
	mb := float64(writes*4096*b.N) / 1e6
	b.ReportMetric(mb/catchup.Seconds(), "catchup-MB/s")
	b.ReportMetric(alone.Seconds()/catchup.Seconds(), "catchup/src")
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

// BenchmarkSyncFlush measures what a flush costs a writer: a 4 KiB write
// then a flush (Sync, then WaitAcked of what is durable, as the service's
// Synced hook does), without replication, with asynchronous replication
// (the flush does not wait for it) and with --sync; beside them the two
// parts --sync adds: a round trip on the link (a PING answered) and the
// target's own sync of one such write. Give it one iteration.
func BenchmarkSyncFlush(b *testing.B) {
	const flushes = 2000
	for b.Loop() {
		for _, mode := range []string{"none", "async", "sync"} {
			src, d := repoWith(b, "web", 1<<30)
			wait := func() error { return nil }
			if mode != "none" {
				dr := newSite(b, "dr", tokensFile(b, "primary "+testToken+" web"), nil)
				s, _ := startSender(b, src, "web", Target{Addr: dr.addr, CA: dr.ca.pem, Token: testToken}, SendOptions{Sync: mode == "sync"}, nil)
				if mode == "sync" {
					wait = func() error { return s.WaitAcked(b.Context(), src.Durable()) }
				}
			}
			lat := flushLatencies(b, src, d, flushes, wait)
			b.ReportMetric(lat[len(lat)/2].Seconds()*1e3, mode+"-p50-ms")
			b.ReportMetric(lat[len(lat)*99/100].Seconds()*1e3, mode+"-p99-ms")
		}
		dst, d := repoWith(b, "web", 1<<30)
		lat := flushLatencies(b, dst, d, flushes, func() error { return nil })
		b.ReportMetric(lat[len(lat)/2].Seconds()*1e3, "target-sync-p50-ms")
	}
}

// flushLatencies times n rounds of a 4 KiB write, Sync and wait.
func flushLatencies(b *testing.B, r *store.Repo, d store.Disk, n int, wait func() error) []time.Duration {
	rng := mrand.New(mrand.NewPCG(9, 9))
	buf := make([]byte, 4096)
	lat := make([]time.Duration, 0, n)
	for i := range n {
		for j := 0; j < len(buf); j += 8 {
			binary.LittleEndian.PutUint64(buf[j:], rng.Uint64())
		}
		start := time.Now()
		if err := r.CaptureAsync(d.Timeline, []store.BlockWrite{{Disk: d, Block: uint64(i) % d.Blocks(), Data: buf}}); err != nil {
			b.Fatal(err)
		}
		if err := r.Sync(); err != nil {
			b.Fatal(err)
		}
		if err := wait(); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(start))
	}
	slices.Sort(lat)
	return lat
}
