package retention_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hindsight-cdp/hindsight/cdp/retention"
	"github.com/hindsight-cdp/hindsight/store"
)

// TestSyntheticMonth: a month of writes, a point every 20 minutes at times
// the test sets, pruned by keep-all 24h, hourly 7d, daily 30d. Every kept
// instant equals an independent model, every thinned instant resolves to
// the kept point the policy says, verify --full is clean, and after gc the
// repository takes (du) no more than 10% above the model's live content
// plus the fixed overhead of a repository holding the same disk and no
// history.
func TestSyntheticMonth(t *testing.T) {
	const (
		blocks = 2048
		bs     = 4096
		steps  = 30 * 24 * 3
		per    = 4 // blocks written per step
	)
	t0 := time.Date(2026, 10, 1, 0, 0, 0, 0, time.UTC)
	now := t0.Add(30 * 24 * time.Hour)
	dir := filepath.Join(t.TempDir(), "repo")
	empty := filepath.Join(t.TempDir(), "empty")
	for _, d := range []string{dir, empty} {
		if err := store.Init(d); err != nil {
			t.Fatal(err)
		}
	}
	e, err := store.Open(empty, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.CreateDisk("web", blocks*bs, bs); err != nil {
		t.Fatal(err)
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	r, err := store.Open(dir, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { r.Close() }()
	d, err := r.CreateDisk("web", blocks*bs, bs)
	if err != nil {
		t.Fatal(err)
	}

	// The model: which block each step wrote, with content made from
	// (step, block), so any instant's image can be rebuilt.
	rng := rand.New(rand.NewPCG(2026, 10))
	wrote := make([][]uint64, steps)
	times := make([]time.Time, steps)
	seqs := make([]uint64, steps)
	content := func(step int, b uint64) []byte {
		p := make([]byte, bs)
		x := rand.New(rand.NewPCG(uint64(step), b))
		for i := 0; i < bs; i += 8 {
			v := x.Uint64()
			for k := range 8 {
				p[i+k] = byte(v >> (8 * k))
			}
		}
		return p
	}
	for i := range steps {
		times[i] = t0.Add(time.Duration(i)*20*time.Minute + time.Duration(rng.IntN(600))*time.Second)
		ws := make([]store.BlockWrite, 0, per)
		seen := map[uint64]bool{}
		for len(ws) < per {
			b := uint64(rng.IntN(blocks))
			if seen[b] {
				continue
			}
			seen[b] = true
			wrote[i] = append(wrote[i], b)
			ws = append(ws, store.BlockWrite{Disk: d, Block: b, Data: content(i, b)})
		}
		p, err := r.CaptureAt(d.Timeline, times[i], ws)
		if err != nil {
			t.Fatal(err)
		}
		seqs[i] = p.Seq
	}
	if err := r.Sync(); err != nil {
		t.Fatal(err)
	}
	image := func(upto int) []byte { // the image after step upto
		img := make([]byte, blocks*bs)
		for i := 0; i <= upto; i++ {
			for _, b := range wrote[i] {
				copy(img[b*bs:], content(i, b))
			}
		}
		return img
	}

	// The policy's kept steps, computed here independently of Select.
	kept := map[int]bool{steps - 1: true}
	newest := map[string]int{} // bucket → newest step in it
	for i, at := range times {
		age := now.Sub(at)
		if age <= 24*time.Hour {
			kept[i] = true
		}
		if age <= 7*24*time.Hour {
			newest["h"+at.Format("2006-01-02T15")] = i
		}
		if !at.Before(now.AddDate(0, 0, -30)) {
			newest["d"+at.Format("2006-01-02")] = i
		}
	}
	for _, i := range newest {
		kept[i] = true
	}

	pol := retention.Policy{KeepAll: retention.MustSpan("24h"), Hourly: retention.MustSpan("7d"), Daily: retention.MustSpan("30d")}
	raw, err := json.Marshal(pol)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.SetPolicy(d.Timeline, raw); err != nil {
		t.Fatal(err)
	}
	rep, err := retention.Run(context.Background(), r, "web", now, false)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Kept != len(kept) {
		t.Fatalf("the policy kept %d points, the model %d", rep.Kept, len(kept))
	}
	check := func() {
		t.Helper()
		for i := range steps {
			p, err := r.PointAt(d.Timeline, times[i])
			want := i
			for want >= 0 && !kept[want] {
				want--
			}
			if want < 0 { // before the oldest kept point: history starts there
				if !errors.Is(err, store.ErrNoPoint) {
					t.Fatalf("instant %s before every kept point resolves to %d (%v)", times[i], p.Seq, err)
				}
				continue
			}
			if err != nil || p.Seq != seqs[want] {
				t.Fatalf("instant %s resolves to %d (%v), want the kept point %d", times[i], p.Seq, err, seqs[want])
			}
		}
		for i := range steps {
			if !kept[i] || i%7 != 0 && i != steps-1 {
				continue // a sample of the kept instants, and the newest
			}
			im, err := r.Image(d, seqs[i])
			if err != nil {
				t.Fatal(err)
			}
			got := make([]byte, blocks*bs)
			if _, err := im.ReadAt(got, 0); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, image(i)) {
				t.Fatalf("kept instant %s differs from the model", times[i])
			}
		}
		vr, err := r.Verify(context.Background(), store.VerifyOptions{Full: true})
		if err != nil || len(vr.Problems) > 0 {
			t.Fatalf("verify --full: %v %+v", err, vr)
		}
	}
	check()
	if _, err := r.Collect(context.Background(), store.GCOptions{}); err != nil {
		t.Fatal(err)
	}
	check()

	// Live content: the version of each block each kept point shows that
	// no earlier kept point shows, counted once: every step's content is
	// distinct, so each is one stored block.
	live := map[[2]uint64]bool{}
	last := map[uint64]int{}
	for i := range steps {
		for _, b := range wrote[i] {
			last[b] = i
		}
		if kept[i] {
			for b, s := range last {
				live[[2]uint64{b, uint64(s)}] = true
			}
		}
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	// As a repository that runs is most of the time: its index's log
	// flushed into tables (the next open does it, and drops the log).
	for _, d := range []string{dir, empty} {
		r, err := store.Open(d, store.Options{})
		if err != nil {
			t.Fatal(err)
		}
		if err := r.Close(); err != nil {
			t.Fatal(err)
		}
	}
	used, fixed := duBytes(t, dir), duBytes(t, empty)
	model := int64(len(live))*bs + fixed
	t.Logf("du %d bytes; model: %d live blocks (%d bytes) + %d fixed; ratio %.3f", used, len(live), len(live)*bs, fixed, float64(used)/float64(model))
	for _, part := range []string{"segments", "db", "records.log", "views"} {
		t.Logf("  %s: %d", part, duBytes(t, filepath.Join(dir, part)))
	}
	if float64(used) > 1.1*float64(model) {
		t.Fatalf("the repository takes %d bytes after gc, more than 10%% above the model's %d", used, model)
	}
}

func duBytes(t *testing.T, dir string) int64 {
	t.Helper()
	out, err := exec.Command("du", "-sB1", dir).Output()
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.ParseInt(strings.Fields(string(out))[0], 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return n
}
