package fs

import (
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/hindsight-cdp/hindsight/cdp"
	"github.com/hindsight-cdp/hindsight/store"
)

func TestLeafNames(t *testing.T) {
	start := time.Date(2026, 11, 25, 10, 15, 0, 0, time.UTC)
	for _, ns := range []int{0, 1, 500_000_000, 123_456_789, 999_999_999} {
		at := start.Add(42*time.Second + time.Duration(ns))
		got, ok := parseLeaf(start, leafName(at))
		if !ok || !got.Equal(at) {
			t.Errorf("leaf %q parses to %v %v, want %v", leafName(at), got, ok, at)
		}
	}
	for _, bad := range []string{"60", "5", "05.", "05.1234567890", "x5", "-1", "05.-1", "05.1e3"} {
		if _, ok := parseLeaf(start, bad); ok {
			t.Errorf("leaf %q accepted", bad)
		}
	}
	d := &byTimeDir{level: levelMonth, start: time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC)}
	for name, ok := range map[string]bool{"28": true, "29": false, "00": false, "1": false, "01": true} {
		if _, got := d.parseUnit(name); got != ok {
			t.Errorf("February day %q: accepted %v, want %v", name, got, ok)
		}
	}
}

// byTimeRepo journals n single-block points spread over a week, with gaps,
// into a real repository, and returns it with the points' times.
func byTimeRepo(tb testing.TB, n int) (string, []store.Point) {
	tb.Helper()
	dir := tb.TempDir()
	if err := store.Init(dir); err != nil {
		tb.Fatal(err)
	}
	r, err := store.Open(dir, store.Options{})
	if err != nil {
		tb.Fatal(err)
	}
	defer r.Close()
	d, err := r.CreateDisk("vm", 1<<20, 4096)
	if err != nil {
		tb.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(7, 8))
	week := 7 * 24 * time.Hour
	mean := (week - 100*20*time.Minute) / time.Duration(n)              // about 100 quiet spells below take their share
	at := time.Now().UTC().Add(-8 * 24 * time.Hour).Truncate(time.Hour) // a week ending before now
	var points []store.Point
	block := make([]byte, 4096)
	for i := 0; i < n; i++ {
		gap := time.Duration(rng.ExpFloat64() * float64(mean))
		if rng.IntN(n/100+1) == 0 {
			gap += 20 * time.Minute // quiet spells: units with no writes
		}
		at = at.Add(gap + 1)
		block[0] = byte(i)
		p, err := r.CaptureAt(d.Timeline, at, []store.BlockWrite{{Disk: d, Block: uint64(i % 256), Data: block}})
		if err != nil {
			tb.Fatal(err)
		}
		points = append(points, p)
	}
	if err := r.Sync(); err != nil {
		tb.Fatal(err)
	}
	if err := r.Publish(); err != nil {
		tb.Fatal(err)
	}
	return dir, points
}

func mountLive(tb testing.TB, dir string) string {
	tb.Helper()
	live, err := cdp.OpenLive(dir, nil)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { live.Close() })
	return testMount(tb, live, Options{})
}

// distinct returns the names of the units of level holding the times in
// [from, to), as the model says they are.
func distinct(points []store.Point, level int, from, to time.Time) []string {
	var out []string
	for _, p := range points {
		if !p.Time.Before(from) && p.Time.Before(to) {
			if name := unitName(level, p.Time); len(out) == 0 || out[len(out)-1] != name {
				out = append(out, name)
			}
		}
	}
	return out
}

// The by-time tree lists exactly the units that hold points, at every level,
// and its leaves resolve to exactly the points they name.
func TestByTimeExact(t *testing.T) {
	n := 100_000 // make soak: 10 million, with each listing timed
	if s := os.Getenv("HINDSIGHT_BYTIME_POINTS"); s != "" {
		n, _ = strconv.Atoi(s)
	}
	soak := n >= 1_000_000
	dir, points := byTimeRepo(t, n)
	mnt := mountLive(t, dir)
	root := filepath.Join(mnt, "vm", "by-time")
	rng := rand.New(rand.NewPCG(1, 1))
	check := func(path string, want []string) {
		t.Helper()
		start := time.Now()
		ents, err := os.ReadDir(path)
		if err != nil {
			t.Fatal(err)
		}
		// Timed only in the soak run, on a quiet machine: the target is 50 ms.
		if took := time.Since(start); soak && took > 50*time.Millisecond {
			t.Errorf("ls %s took %v with %d points", path, took, n)
		}
		var got []string
		for _, e := range ents {
			got = append(got, e.Name())
		}
		if !slices.Equal(got, want) {
			t.Fatalf("%s: %d entries %q..., want %d %q...", path, len(got), got[:min(5, len(got))], len(want), want[:min(5, len(want))])
		}
	}
	far := time.Unix(0, math.MaxInt64)
	check(root, distinct(points, levelYear, time.Time{}, far))
	for k := 0; k < 20; k++ {
		p := points[rng.IntN(len(points))].Time
		path := root
		for level := levelYear; level <= levelMinute; level++ {
			path = filepath.Join(path, unitName(level, p))
			start := truncate(level, p)
			if level < levelMinute {
				check(path, distinct(points, level+1, start, after(level, start)))
			}
		}
		// The minute lists its points, each resolving to itself.
		start := truncate(levelMinute, p)
		var want []string
		var inMinute []store.Point
		for _, q := range points {
			if !q.Time.Before(start) && q.Time.Before(start.Add(time.Minute)) {
				want = append(want, leafName(q.Time))
				inMinute = append(inMinute, q)
			}
		}
		if len(inMinute) > maxLeaves { // a busy minute lists the first point of each second
			want = want[:0]
			for i, q := range inMinute {
				if i == 0 || q.Time.Truncate(time.Second) != inMinute[i-1].Time.Truncate(time.Second) {
					want = append(want, leafName(q.Time))
				}
			}
		}
		check(path, want)
		q := inMinute[rng.IntN(len(inMinute))]
		in := readInfo(t, filepath.Join(path, leafName(q.Time), "info.json"))
		if in.Seq != q.Seq || !in.Time.Equal(q.Time) {
			t.Fatalf("%s/%s: seq %d, want %d", path, leafName(q.Time), in.Seq, q.Seq)
		}
		// An unlisted instant resolves to the newest point before it.
		mid := q.Time.Add(-1)
		if mid.Before(start) {
			continue
		}
		i, _ := slices.BinarySearchFunc(points, mid, func(p store.Point, t time.Time) int { return p.Time.Compare(t) })
		in = readInfo(t, filepath.Join(path, leafName(mid), "info.json"))
		if i == 0 || in.Seq != points[i-1].Seq {
			t.Fatalf("%s/%s: seq %d, want %d", path, leafName(mid), in.Seq, points[max(i-1, 0)].Seq)
		}
	}
	first := points[0].Time
	day := first.Format("2006/01/02")
	before := first.AddDate(0, 0, -1).Format("2006/01/02") // a day with no writes
	for _, bad := range []string{"1999", "2026/13", "2026/11/31", day + "/24", day + "/23/60", day + "/23/00/61", before, "2026/1", "2026/011"} {
		if _, err := os.Stat(filepath.Join(root, bad)); !os.IsNotExist(err) {
			t.Errorf("by-time/%s: %v, want ENOENT", bad, err)
		}
	}
}

// BenchmarkByTimeList lists a level of the by-time tree of a journal of
// HINDSIGHT_BYTIME_POINTS points (default 1 million) over a week.
func BenchmarkByTimeList(b *testing.B) {
	n := 1_000_000
	if s := os.Getenv("HINDSIGHT_BYTIME_POINTS"); s != "" {
		n, _ = strconv.Atoi(s)
	}
	dir, points := byTimeRepo(b, n)
	mnt := mountLive(b, dir)
	p := points[len(points)/2].Time
	levels := []string{filepath.Join(mnt, "vm", "by-time")}
	for level := levelYear; level <= levelMinute; level++ {
		levels = append(levels, filepath.Join(levels[len(levels)-1], unitName(level, p)))
	}
	for i, path := range levels {
		b.Run(fmt.Sprintf("level%d", i), func(b *testing.B) {
			for b.Loop() {
				if _, err := os.ReadDir(path); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
