package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// Benchmarks of the store, and two helpers that scripts/bench-open.sh drives
// (a repository writer and a timer of opens through a real mount). Figures
// and how to reproduce them: docs/PERFORMANCE.md.

const benchBS = 4096

// benchJournal is the shape of a benchmark repository: a disk of blocks
// blocks, every one rewritten at each of points points, a minute apart, the
// first a day ago (so that every instant lies in the past for a mount).
type benchJournal struct {
	blocks, points int
}

func (j benchJournal) versions() int { return j.blocks * j.points }

// benchJournals are the journals BenchmarkOpenInstant measures: 1M block
// versions (a 1 GiB disk written 4 times) and, with HINDSIGHT_BENCH_10M=1,
// 10M (the same disk written 40 times; slow to build).
func benchJournals() map[string]benchJournal {
	js := map[string]benchJournal{"versions=1M": {blocks: 1 << 18, points: 4}}
	if os.Getenv("HINDSIGHT_BENCH_10M") == "1" {
		js["versions=10M"] = benchJournal{blocks: 1 << 18, points: 40}
	}
	return js
}

// benchPool is a small pool of distinct random blocks: content stays cheap
// (256 blocks stored once), while the index holds every version.
func benchPool() ([][]byte, []Hash) {
	rng := rand.New(rand.NewPCG(7, 7))
	pool := make([][]byte, 256)
	hashes := make([]Hash, len(pool))
	for i := range pool {
		pool[i] = make([]byte, benchBS)
		for j := range pool[i] {
			pool[i][j] = byte(rng.Uint32() | 1) // never all zeros
		}
		hashes[i] = HashBlock(pool[i])
	}
	return pool, hashes
}

// buildBenchRepo writes journal j into a new repository in dir and returns
// the first point's time.
func buildBenchRepo(tb testing.TB, dir string, j benchJournal) time.Time {
	tb.Helper()
	if err := Init(dir); err != nil {
		tb.Fatal(err)
	}
	r, err := Open(dir, Options{})
	if err != nil {
		tb.Fatal(err)
	}
	defer r.Close()
	d, err := r.CreateDisk("bench", int64(j.blocks)*benchBS, benchBS)
	if err != nil {
		tb.Fatal(err)
	}
	pool, hashes := benchPool()
	rng := rand.New(rand.NewPCG(1, 2))
	first := time.Now().Add(-24 * time.Hour).Truncate(time.Second).UTC()
	for p := 0; p < j.points; p++ {
		s, err := r.Begin(d.Timeline, first.Add(time.Duration(p)*time.Minute))
		if err != nil {
			tb.Fatal(err)
		}
		for b := 0; b < j.blocks; b++ {
			k := rng.IntN(len(pool))
			if err := s.PutHashed(d, uint64(b), pool[k], hashes[k]); err != nil {
				tb.Fatal(err)
			}
		}
		if _, err := s.Commit(); err != nil {
			tb.Fatal(err)
		}
	}
	return first
}

// percentile of sorted durations, p in [0, 1].
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(int(p*float64(len(sorted))), len(sorted)-1)]
}

// BenchmarkOpenInstant times what opening an instant costs the store: the
// point at a random time (PointAt), the image at that point, and a 4 KiB read
// at a random block, on a read-only view (as the mount opens it) of a
// repository with 1M (and, with HINDSIGHT_BENCH_10M=1, 10M) block versions.
// ns/op is the mean; p50-ns, p99-ns and max-ns are over the timed operations,
// first-ns is the first one after opening the view (empty block cache; the
// page cache holds the freshly written index).
func BenchmarkOpenInstant(b *testing.B) {
	js := benchJournals()
	names := make([]string, 0, len(js))
	for n := range js {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, name := range names {
		j := js[name]
		b.Run(name, func(b *testing.B) {
			dir := b.TempDir()
			start := time.Now()
			first := buildBenchRepo(b, dir, j)
			build := time.Since(start)
			r, err := Open(dir, Options{ReadOnly: true})
			if err != nil {
				b.Fatal(err)
			}
			defer r.Close()
			d, err := r.Disk("bench")
			if err != nil {
				b.Fatal(err)
			}
			span := int64(j.points) * int64(time.Minute) // up to a minute past the last point
			rng := rand.New(rand.NewPCG(3, 4))
			buf := make([]byte, benchBS)
			var lat []time.Duration
			for b.Loop() {
				at := first.Add(time.Duration(rng.Int64N(span)))
				blk := rng.Int64N(int64(j.blocks))
				t0 := time.Now()
				p, err := r.PointAt(d.Timeline, at)
				if err != nil {
					b.Fatal(err)
				}
				im, err := r.Image(d, p.Seq)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := im.ReadAt(buf, blk*benchBS); err != nil {
					b.Fatal(err)
				}
				lat = append(lat, time.Since(t0))
				if buf[0] == 0 {
					b.Fatalf("block %d at %v reads zeros", blk, at)
				}
			}
			b.ReportMetric(build.Seconds(), "build-s")
			firstLat := lat[0]
			slices.Sort(lat)
			b.ReportMetric(float64(firstLat.Nanoseconds()), "first-ns")
			b.ReportMetric(float64(percentile(lat, 0.5).Nanoseconds()), "p50-ns")
			b.ReportMetric(float64(percentile(lat, 0.99).Nanoseconds()), "p99-ns")
			b.ReportMetric(float64(lat[len(lat)-1].Nanoseconds()), "max-ns")
		})
	}
}

// BenchmarkReadImage reads the newest point of a 256 MiB disk (a base image
// and 10 points of 1 MiB of scattered 4 KiB writes) with 1 MiB ReadAt calls,
// straight from the store (no FUSE): the store's own share of a mount read,
// on one goroutine, with the segments in the page cache; with and without
// the read check, alternated.
func BenchmarkReadImage(b *testing.B) {
	for _, kind := range []string{"random", "half-compressible"} {
		b.Run(kind, func(b *testing.B) {
			const size = 256 << 20
			blocks := size / benchBS
			dir := b.TempDir()
			if err := Init(dir); err != nil {
				b.Fatal(err)
			}
			r, err := Open(dir, Options{})
			if err != nil {
				b.Fatal(err)
			}
			defer r.Close()
			d, err := r.CreateDisk("x", size, benchBS)
			if err != nil {
				b.Fatal(err)
			}
			rng := rand.New(rand.NewPCG(9, 9))
			block := func() []byte {
				p := make([]byte, benchBS)
				n := benchBS
				if kind != "random" {
					n /= 2
				}
				for i := 0; i < n; i++ {
					p[i] = byte(rng.Uint32())
				}
				return p
			}
			t0 := time.Now().Add(-time.Hour)
			for p := 0; p <= 10; p++ {
				s, err := r.Begin(d.Timeline, t0.Add(time.Duration(p)*time.Minute))
				if err != nil {
					b.Fatal(err)
				}
				n := blocks // the base writes every block, each point 1 MiB
				if p > 0 {
					n = (1 << 20) / benchBS
				}
				for i := 0; i < n; i++ {
					blk := i
					if p > 0 {
						blk = rng.IntN(blocks)
					}
					if err := s.Put(d, uint64(blk), block()); err != nil {
						b.Fatal(err)
					}
				}
				if _, err := s.Commit(); err != nil {
					b.Fatal(err)
				}
			}
			im, err := r.Image(d, r.Head())
			if err != nil {
				b.Fatal(err)
			}
			buf := make([]byte, 1<<20)
			// Each iteration reads the image twice, checked (as every read is
			// served) and unchecked (the check skipped), alternating which
			// goes first, so that both see the same machine: the A/B of what
			// the check costs. MB/s counts the checked reads.
			var took [2]time.Duration
			readAll := func(unchecked bool) {
				r.uncheckedReads = unchecked
				defer func() { r.uncheckedReads = false }()
				t0 := time.Now()
				for off := int64(0); off < size; off += int64(len(buf)) {
					if _, err := im.ReadAt(buf, off); err != nil && err != io.EOF {
						b.Fatal(err)
					}
				}
				if unchecked {
					took[1] += time.Since(t0)
				} else {
					took[0] += time.Since(t0)
				}
			}
			readAll(false) // warm the index's block cache: not counted
			took = [2]time.Duration{}
			b.SetBytes(size)
			n := 0
			for b.Loop() {
				first := n%2 == 1
				readAll(first)
				readAll(!first)
				n++
			}
			b.ReportMetric(float64(size)*float64(n)/took[0].Seconds()/1e6, "checked-MB/s")
			b.ReportMetric(float64(size)*float64(n)/took[1].Seconds()/1e6, "unchecked-MB/s")
			b.ReportMetric(took[0].Seconds()/took[1].Seconds(), "checked/unchecked")
		})
	}
}

// TestBenchRepo is a helper for scripts/bench-open.sh, skipped unless
// HINDSIGHT_BENCH_REPO names a directory: it writes the 1M-version journal of
// BenchmarkOpenInstant there (10M with HINDSIGHT_BENCH_10M=1) and prints the
// first point's and the last point's Unix times.
func TestBenchRepo(t *testing.T) {
	dir := os.Getenv("HINDSIGHT_BENCH_REPO")
	if dir == "" {
		t.Skip("HINDSIGHT_BENCH_REPO not set")
	}
	j := benchJournals()["versions=1M"]
	if os.Getenv("HINDSIGHT_BENCH_10M") == "1" {
		j = benchJournals()["versions=10M"]
	}
	start := time.Now()
	first := buildBenchRepo(t, dir, j)
	last := first.Add(time.Duration(j.points-1) * time.Minute)
	fmt.Printf("bench-repo versions=%d first=%d last=%d build-s=%.1f\n",
		j.versions(), first.Unix(), last.Unix(), time.Since(start).Seconds())
}

// TestBenchMountOpen is a helper for scripts/bench-open.sh, skipped unless
// HINDSIGHT_BENCH_MOUNT names a disk directory of a mounted bench repository
// (MNT/bench): it opens HINDSIGHT_BENCH_N (200) instants never looked up
// before, at random nanosecond times from HINDSIGHT_BENCH_FIRST to a minute
// past HINDSIGHT_BENCH_LAST (Unix seconds), each by a stat of the instant
// directory, an open of its flat image and a 4 KiB read at a random block,
// and prints the latencies' median, p99 and maximum, and the median of each
// part (stat, open, read). HINDSIGHT_BENCH_WARMUP opens as many untimed
// instants first; HINDSIGHT_BENCH_PACE_MS sleeps before each open.
func TestBenchMountOpen(t *testing.T) {
	dir := os.Getenv("HINDSIGHT_BENCH_MOUNT")
	if dir == "" {
		t.Skip("HINDSIGHT_BENCH_MOUNT not set")
	}
	envInt := func(name string, def int64) int64 {
		v, err := strconv.ParseInt(os.Getenv(name), 10, 64)
		if err != nil {
			if def < 0 {
				t.Fatalf("%s: %v", name, err)
			}
			return def
		}
		return v
	}
	first := time.Unix(envInt("HINDSIGHT_BENCH_FIRST", -1), 0)
	last := time.Unix(envInt("HINDSIGHT_BENCH_LAST", -1), 0)
	n := int(envInt("HINDSIGHT_BENCH_N", 200))
	seed := uint64(envInt("HINDSIGHT_BENCH_SEED", time.Now().UnixNano()))
	disk := filepath.Base(dir)
	rng := rand.New(rand.NewPCG(seed, 11))
	span := last.Add(time.Minute).Sub(first)
	buf := make([]byte, benchBS)
	warmup := int(envInt("HINDSIGHT_BENCH_WARMUP", 0))
	pace := time.Duration(envInt("HINDSIGHT_BENCH_PACE_MS", 0)) * time.Millisecond
	// HINDSIGHT_BENCH_TRACE_MS prints every open slower than that, when.
	traceSlow := time.Duration(envInt("HINDSIGHT_BENCH_TRACE_MS", 0)) * time.Millisecond
	var size int64
	var lat, stat, open, read []time.Duration
	for i := 0; i < warmup+n; i++ {
		time.Sleep(pace)
		at := first.Add(time.Duration(rng.Int64N(int64(span))))
		name := at.UTC().Format("20060102T150405.000000000Z") // ISO basic, as listed, with nanoseconds
		t0 := time.Now()
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
		t1 := time.Now()
		f, err := os.Open(filepath.Join(dir, name, disk+"-flat.vmdk"))
		if err != nil {
			t.Fatal(err)
		}
		t2 := time.Now()
		if size == 0 {
			st, err := f.Stat()
			if err != nil {
				t.Fatal(err)
			}
			size = st.Size()
		}
		blk := rng.Int64N(size / benchBS)
		t3 := time.Now()
		_, err = f.ReadAt(buf, blk*benchBS)
		t4 := time.Now()
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		if buf[0] == 0 {
			t.Fatalf("%s: block %d reads zeros", name, blk)
		}
		if i < warmup {
			continue
		}
		if l := t1.Sub(t0) + t2.Sub(t1) + t4.Sub(t3); traceSlow > 0 && l > traceSlow {
			fmt.Printf("bench-open slow %s at %s: stat %v open %v read %v\n", name, t0.Format("15:04:05.000000"), t1.Sub(t0), t2.Sub(t1), t4.Sub(t3))
		}
		lat = append(lat, t1.Sub(t0)+t2.Sub(t1)+t4.Sub(t3))
		stat, open, read = append(stat, t1.Sub(t0)), append(open, t2.Sub(t1)), append(read, t4.Sub(t3))
	}
	var sum time.Duration
	for _, l := range lat {
		sum += l
	}
	for _, s := range [][]time.Duration{lat, stat, open, read} {
		slices.Sort(s)
	}
	ms := func(d time.Duration) string { return fmt.Sprintf("%.3f", float64(d.Microseconds())/1000) }
	fmt.Printf("bench-open n=%d median-ms=%s p99-ms=%s max-ms=%s mean-ms=%s stat-ms=%s open-ms=%s read-ms=%s\n",
		n, ms(percentile(lat, 0.5)), ms(percentile(lat, 0.99)), ms(lat[len(lat)-1]), ms(sum/time.Duration(n)),
		ms(percentile(stat, 0.5)), ms(percentile(open, 0.5)), ms(percentile(read, 0.5)))
}

// TestBenchWriter is a helper for scripts/bench-open.sh, skipped unless
// HINDSIGHT_BENCH_WRITER names a bench repository: it plays the capture front
// end (protect) beside the mount for HINDSIGHT_BENCH_WRITER_SECONDS (25): a
// captured step of 256 blocks (1 MiB) every 20 ms, and Sync plus Publish
// every HINDSIGHT_BENCH_PUBLISH_MS (1000, protect's default sync interval),
// each publish a view that the mount moves to on its next lookup. It prints
// the steps and publishes made and their mean durations.
func TestBenchWriter(t *testing.T) {
	dir := os.Getenv("HINDSIGHT_BENCH_WRITER")
	if dir == "" {
		t.Skip("HINDSIGHT_BENCH_WRITER not set")
	}
	secs, err := strconv.Atoi(os.Getenv("HINDSIGHT_BENCH_WRITER_SECONDS"))
	if err != nil {
		secs = 25
	}
	every, err := strconv.Atoi(os.Getenv("HINDSIGHT_BENCH_PUBLISH_MS"))
	if err != nil {
		every = 1000
	}
	r, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	d, err := r.Disk("bench")
	if err != nil {
		t.Fatal(err)
	}
	pool, _ := benchPool()
	rng := rand.New(rand.NewPCG(5, 5))
	writes := make([]BlockWrite, 256)
	end := time.Now().Add(time.Duration(secs) * time.Second)
	next := time.Now().Add(time.Duration(every) * time.Millisecond)
	var steps, publishes int
	var stepTime, pubTime time.Duration
	for time.Now().Before(end) {
		t0 := time.Now()
		for i := range writes {
			writes[i] = BlockWrite{Disk: d, Block: uint64(rng.IntN(int(d.Blocks()))), Data: pool[rng.IntN(len(pool))]}
		}
		if _, err := r.Capture(d.Timeline, writes); err != nil {
			t.Fatal(err)
		}
		stepTime += time.Since(t0)
		steps++
		if time.Now().After(next) {
			t1 := time.Now()
			if os.Getenv("HINDSIGHT_BENCH_TRACE_MS") != "" {
				fmt.Printf("bench-writer publish at %s\n", t1.Format("15:04:05.000000"))
			}
			if err := r.Sync(); err != nil {
				t.Fatal(err)
			}
			if err := r.Publish(); err != nil {
				t.Fatal(err)
			}
			pubTime += time.Since(t1)
			publishes++
			next = next.Add(time.Duration(every) * time.Millisecond)
		}
		time.Sleep(20 * time.Millisecond)
	}
	fmt.Printf("bench-writer steps=%d step-ms=%.2f publishes=%d publish-ms=%.1f\n", steps,
		float64(stepTime.Microseconds())/1000/float64(steps), publishes, float64(pubTime.Microseconds())/1000/float64(max(publishes, 1)))
}

// BenchmarkVerifyFull re-reads and re-hashes the stored content of a 1 GiB
// disk (random, stored raw, and half-compressible, stored with zstd) as
// `verify --full` does, with the segments in the page cache; MB/s counts
// stored bytes. HINDSIGHT_BENCH_COLD=1 drops the page cache before each
// run (root) for the cold figure.
func BenchmarkVerifyFull(b *testing.B) {
	for _, kind := range []string{"random", "half-compressible"} {
		b.Run(kind, func(b *testing.B) {
			const size = 1 << 30
			dir := b.TempDir()
			if err := Init(dir); err != nil {
				b.Fatal(err)
			}
			r, err := Open(dir, Options{})
			if err != nil {
				b.Fatal(err)
			}
			d, err := r.CreateDisk("x", size, benchBS)
			if err != nil {
				b.Fatal(err)
			}
			rng := rand.New(rand.NewPCG(3, 3))
			s, err := r.Begin(d.Timeline, time.Time{})
			if err != nil {
				b.Fatal(err)
			}
			p := make([]byte, benchBS)
			for blk := range size / benchBS {
				n := benchBS
				if kind != "random" {
					n /= 2
				}
				for i := 0; i < n; i += 8 {
					binary.LittleEndian.PutUint64(p[i:], rng.Uint64())
				}
				if err := s.Put(d, uint64(blk), p); err != nil {
					b.Fatal(err)
				}
			}
			if _, err := s.Commit(); err != nil {
				b.Fatal(err)
			}
			r.Close()
			v, err := Open(dir, Options{ReadOnly: true})
			if err != nil {
				b.Fatal(err)
			}
			defer v.Close()
			stored, _ := v.ContentBytes()
			b.SetBytes(stored)
			cold := os.Getenv("HINDSIGHT_BENCH_COLD") == "1"
			for b.Loop() {
				if cold {
					b.StopTimer()
					exec.Command("sh", "-c", "sync; echo 3 > /proc/sys/vm/drop_caches").Run()
					b.StartTimer()
				}
				rep, err := v.Verify(b.Context(), VerifyOptions{Full: true})
				if err != nil || len(rep.Problems) > 0 {
					b.Fatalf("%+v %v", rep, err)
				}
			}
		})
	}
}

// BenchmarkCapture4KSync64 is the capture core's random-write workload:
// 4 KiB writes of new content at random blocks of a 1 GiB disk, a Sync
// (fsync) every 64, and Sync plus Publish every second as the service
// does. A/B in one run: "wal=prealloc" keeps pebble's WAL preallocation
// (71 MiB a file), "wal=grow" is what a repository does (walfs.go);
// "guard=off" skips the free-space check (space.go) to show its cost.
// The cases take turns, captureRounds times, so that a noisy neighbour
// weighs on each alike. Give it several seconds: -benchtime 100000x.
func BenchmarkCapture4KSync64(b *testing.B) {
	for range captureRounds {
		for _, c := range []struct {
			name     string
			prealloc bool
			guardOff bool
		}{
			{"wal=prealloc", true, false},
			{"wal=grow", false, false},
			{"wal=grow,guard=off", false, true},
		} {
			b.Run(c.name, func(b *testing.B) { benchCapture4K(b, c.prealloc, c.guardOff) })
		}
	}
}

const captureRounds = 4

func benchCapture4K(b *testing.B, prealloc, guardOff bool) {
	dir := b.TempDir()
	if err := Init(dir); err != nil {
		b.Fatal(err)
	}
	r, err := Open(dir, Options{walPrealloc: prealloc})
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	r.space.off = guardOff
	d, err := r.CreateDisk("b", 1<<30, benchBS)
	if err != nil {
		b.Fatal(err)
	}
	stop := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-stop:
				done <- nil
				return
			case <-t.C:
			}
			if err := errors.Join(r.Sync(), r.Publish()); err != nil {
				done <- err
				return
			}
		}
	}()
	buf := make([]byte, benchBS)
	for i := range buf {
		buf[i] = byte(rand.Uint32())
	}
	rng := rand.New(rand.NewPCG(1, 2))
	b.SetBytes(benchBS)
	cpu0 := processCPU()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		binary.LittleEndian.PutUint64(buf, uint64(i)) // new content: nothing dedupes
		if err := r.CaptureAsync(d.Timeline, []BlockWrite{{d, uint64(rng.IntN(int(d.Blocks()))), buf}}); err != nil {
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
	b.StopTimer()
	// The CPU of the whole process per write: less swayed by a busy host
	// than the time.
	b.ReportMetric(float64((processCPU()-cpu0).Microseconds())/float64(b.N), "cpu-us/op")
	close(stop)
	if err := <-done; err != nil {
		b.Fatal(err)
	}
}

// processCPU is the user and system time of this process so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkSpaceAdmit is the free-space check of one 4 KiB write alone,
// with the statfs it makes every spaceRefreshBytes (space.go).
func BenchmarkSpaceAdmit(b *testing.B) {
	g := newSpaceGuard(b.TempDir(), Options{MinFree: 1 << 20})
	for i := 0; i < b.N; i++ {
		if err := g.admit(benchBS); err != nil {
			b.Fatal(err)
		}
	}
}
