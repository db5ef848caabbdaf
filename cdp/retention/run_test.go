package retention

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hindsight-cdp/hindsight/store"
	"github.com/hindsight-cdp/hindsight/store/storetest"
)

// recordingRepo is a real repository whose Prune (the store's engine, not
// this package's) records what it is asked and answers what it would do.
type recordingRepo struct {
	*store.Repo
	calls []pruneCall
	fail  map[uint32]error
}

type pruneCall struct {
	tl  uint32
	opt store.PruneOptions
}

func (r *recordingRepo) Prune(ctx context.Context, tl uint32, opt store.PruneOptions) (store.PruneResult, error) {
	r.calls = append(r.calls, pruneCall{tl, opt})
	if err := r.fail[tl]; err != nil {
		return store.PruneResult{}, err
	}
	ps, err := r.Points(tl, time.Unix(0, 0), time.Now().Add(time.Hour), 0)
	if err != nil {
		return store.PruneResult{}, err
	}
	res := store.PruneResult{Bookmarks: opt.DropBookmarks, Versions: 7, FreedBytes: 4096}
	for _, p := range ps {
		if slices.Contains(opt.Keep, p.Seq) {
			res.Kept++
		} else {
			res.Points = append(res.Points, p)
		}
	}
	return res, nil
}

// history journals one point per time on timeline tl of disk d.
func history(t *testing.T, r *store.Repo, tl uint32, d store.Disk, times ...time.Time) []store.Point {
	t.Helper()
	var ps []store.Point
	for i, at := range times {
		p, err := r.CaptureAt(tl, at, []store.BlockWrite{{Disk: d, Block: uint64(i % 4), Data: make([]byte, d.BlockSize)}})
		if err != nil {
			t.Fatal(err)
		}
		ps = append(ps, p)
	}
	return ps
}

func setPolicy(t *testing.T, r *store.Repo, tl uint32, p Policy) {
	t.Helper()
	b, _ := json.Marshal(p)
	if err := r.SetPolicy(tl, b); err != nil {
		t.Fatal(err)
	}
}

// TestRun: Run resolves a disk, a group and a group's disk to their
// timeline, plans from the repository's own points, bookmarks and clones,
// and hands the plan to Prune.
func TestRun(t *testing.T) {
	sr, _ := storetest.Repo(t)
	r := &recordingRepo{Repo: sr}
	now := time.Now().UTC().Truncate(time.Second)
	days := func(ds ...int) []time.Time {
		var out []time.Time
		for _, d := range ds {
			out = append(out, now.AddDate(0, 0, -d))
		}
		return out
	}
	web, err := sr.CreateDisk("web", 1<<20, 4096)
	if err != nil {
		t.Fatal(err)
	}
	wp := history(t, sr, web.Timeline, web, days(40, 30, 20, 10, 3, 2, 1)...)
	db1, _ := sr.CreateDisk("db1", 1<<20, 4096)
	db2, _ := sr.CreateDisk("db2", 1<<20, 4096)
	g, err := sr.CreateGroup("db", []string{"db1", "db2"})
	if err != nil {
		t.Fatal(err)
	}
	db1.Timeline, db2.Timeline = g.ID, g.ID
	gp := history(t, sr, g.ID, db2, days(9, 8, 7)...)
	if _, err := sr.CloneDisk("web-test", web, wp[1].Seq); err != nil {
		t.Fatal(err)
	}
	if _, err := sr.CloneDisk("db1-test", db1, gp[0].Seq); err != nil {
		t.Fatal(err)
	}
	for _, bm := range []store.Bookmark{{Name: "old", Time: wp[2].Time, Kind: store.KindUser}, {Name: "keep", Time: wp[0].Time, Kind: store.KindUser, Pinned: true}} {
		if _, err := sr.Mark(web, bm); err != nil {
			t.Fatal(err)
		}
	}
	ctx := context.Background()

	if _, err := Run(ctx, r, "web", now, false); !errors.Is(err, ErrNoPolicy) || !strings.Contains(err.Error(), "policy set web") {
		t.Errorf("web without a policy: %v, want ErrNoPolicy naming 'policy set'", err)
	}
	if _, err := Run(ctx, r, "nope", now, false); !errors.Is(err, store.ErrUnknownDisk) {
		t.Errorf("unknown name: %v, want ErrUnknownDisk", err)
	}
	if len(r.calls) != 0 {
		t.Fatalf("pruned without a policy: %+v", r.calls)
	}

	setPolicy(t, sr, web.Timeline, Policy{KeepAll: MustSpan("36h"), Daily: MustSpan("5d")})
	rep, err := Run(ctx, r, "web", now, true)
	if err != nil {
		t.Fatal(err)
	}
	// Kept: 3 and 2 days ago (daily), 1 (newest, keep-all), 30 days ago
	// (the clone's base), 40 (the pinned bookmark); 20 days ago goes with
	// its bookmark "old", older than the longest window.
	call := r.calls[0]
	want := []uint64{wp[0].Seq, wp[1].Seq, wp[4].Seq, wp[5].Seq, wp[6].Seq}
	if call.tl != web.Timeline || !slices.Equal(call.opt.Keep, want) || !slices.Equal(call.opt.DropBookmarks, []string{"old"}) || !call.opt.DryRun {
		t.Errorf("Prune asked %+v, want timeline %d keep %v drop [old] dry run", call, web.Timeline, want)
	}
	if rep.Name != "web" || rep.Timeline != web.Timeline || !rep.DryRun || rep.Kept != 5 || len(rep.Removed) != 2 ||
		rep.Removed[0].Seq != wp[2].Seq || rep.Removed[1].Seq != wp[3].Seq || rep.Versions != 7 || rep.FreedBytes != 4096 ||
		!slices.Equal(rep.DroppedBookmarks, []string{"old"}) || !rep.Now.Equal(now) || rep.Policy.Daily != MustSpan("5d") {
		t.Errorf("report %+v", rep)
	}

	// A group's disk names its group: one timeline, one policy.
	setPolicy(t, sr, g.ID, Policy{KeepAll: MustSpan("1d")})
	r.calls = nil
	rep, err = Run(ctx, r, "db1", now, false)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Name != "db" || r.calls[0].tl != g.ID || !slices.Equal(r.calls[0].opt.Keep, []uint64{gp[0].Seq, gp[2].Seq}) || r.calls[0].opt.DryRun {
		t.Errorf("db1: report %+v, asked %+v; want group db keeping the clone base %d and the newest %d", rep, r.calls[0], gp[0].Seq, gp[2].Seq)
	}
}

// TestRunAll: every timeline with a policy is pruned, by name; one that
// fails is reported and the others go on.
func TestRunAll(t *testing.T) {
	sr, _ := storetest.Repo(t)
	r := &recordingRepo{Repo: sr, fail: map[uint32]error{}}
	now := time.Now().UTC()
	var tls []uint32
	for _, n := range []string{"c", "a", "b", "none"} {
		d, err := sr.CreateDisk(n, 1<<20, 4096)
		if err != nil {
			t.Fatal(err)
		}
		history(t, sr, d.Timeline, d, now.Add(-2*time.Hour), now.Add(-time.Hour))
		tls = append(tls, d.Timeline)
	}
	for _, tl := range tls[:3] {
		setPolicy(t, sr, tl, Policy{KeepAll: MustSpan("90min")})
	}
	setPolicy(t, sr, 999, Policy{Daily: MustSpan("1d")}) // no such timeline: skipped
	r.fail[tls[0]] = fmt.Errorf("disk on fire")
	reps, err := RunAll(context.Background(), r, now, false)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, rep := range reps {
		names = append(names, rep.Name)
		wantErr := rep.Name == "c"
		if (rep.Error != "") != wantErr || (wantErr && !strings.Contains(rep.Error, "disk on fire")) {
			t.Errorf("%s: error %q", rep.Name, rep.Error)
		}
		if !wantErr && (rep.Kept != 1 || len(rep.Removed) != 1) {
			t.Errorf("%s: kept %d, removed %d; want 1 and 1", rep.Name, rep.Kept, len(rep.Removed))
		}
	}
	if !slices.Equal(names, []string{"a", "b", "c"}) || len(r.calls) != 3 {
		t.Errorf("pruned %v (%d calls), want a, b, c", names, len(r.calls))
	}
	entries, err := List(sr)
	if err != nil || len(entries) != 3 || entries[0].Name != "a" || entries[0].Policy.KeepAll != MustSpan("90min") {
		t.Errorf("List: %+v %v", entries, err)
	}
	// A policy that does not decode is named.
	if err := sr.SetPolicy(tls[1], []byte(`{"daily":"30"}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := List(sr); !errors.Is(err, ErrBadPolicy) || !strings.Contains(err.Error(), `"a"`) {
		t.Errorf("List with a bad policy: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := sr.SetPolicy(tls[1], nil); err != nil {
		t.Fatal(err)
	}
	if reps, err := RunAll(ctx, r, now, false); !errors.Is(err, context.Canceled) || len(reps) != 0 {
		t.Errorf("RunAll after cancel: %d reports, %v", len(reps), err)
	}
}
