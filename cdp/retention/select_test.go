package retention

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/hindsight-cdp/hindsight/store"
)

// modelBefore measures span back from now its own way: months stepped one
// at a time with a table of month lengths, days as 24 hours (UTC has no
// daylight saving).
func modelBefore(s Span, now time.Time) time.Time {
	now = now.UTC()
	y, m := now.Year(), int(now.Month())
	for range s.Years*12 + s.Months {
		if m--; m == 0 {
			m, y = 12, y-1
		}
	}
	lengths := []int{31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31}
	if y%4 == 0 && (y%100 != 0 || y%400 == 0) {
		lengths[1] = 29
	}
	day := min(now.Day(), lengths[m-1])
	t := time.Date(y, time.Month(m), day, now.Hour(), now.Minute(), now.Second(), now.Nanosecond(), time.UTC)
	return t.Add(-time.Duration(s.Weeks*7+s.Days)*24*time.Hour - time.Duration(s.Hours)*time.Hour - time.Duration(s.Minutes)*time.Minute)
}

// modelBuckets name a point's bucket by formatting its UTC time; a week by
// the date of its Monday.
var modelBuckets = map[string]func(time.Time) string{
	"hourly": func(t time.Time) string { return t.UTC().Format("2006-01-02T15") },
	"daily":  func(t time.Time) string { return t.UTC().Format("2006-01-02") },
	"weekly": func(t time.Time) string {
		u := t.UTC()
		return u.AddDate(0, 0, -(int(u.Weekday())+6)%7).Format("2006-01-02")
	},
	"monthly": func(t time.Time) string { return t.UTC().Format("2006-01") },
}

// model is Select written as plainly as possible: for each point, each
// reason it has to stay.
func model(now time.Time, pol Policy, ps []store.Point, bms []store.Bookmark, bases []Base) (map[uint64][]string, []string) {
	why := map[uint64][]string{}
	var newest store.Point
	for _, p := range ps {
		if p.Time.After(newest.Time) || newest.Seq == 0 {
			newest = p
		}
		if p.Time.After(now) {
			why[p.Seq] = append(why[p.Seq], "future")
		}
		if !pol.KeepAll.IsZero() && !p.Time.After(now) && !p.Time.Before(modelBefore(pol.KeepAll, now)) {
			why[p.Seq] = append(why[p.Seq], "keep-all")
		}
	}
	if len(ps) > 0 {
		why[newest.Seq] = append(why[newest.Seq], "newest")
	}
	longest := now
	for name, span := range map[string]Span{"hourly": pol.Hourly, "daily": pol.Daily, "weekly": pol.Weekly, "monthly": pol.Monthly, "keep-all": pol.KeepAll} {
		if span.IsZero() {
			continue
		}
		from := modelBefore(span, now)
		if from.Before(longest) {
			longest = from
		}
		if name == "keep-all" {
			continue
		}
		inWindow := func(p store.Point) bool { return !p.Time.Before(from) && !p.Time.After(now) }
		last := map[string]time.Time{} // each bucket's newest time in the window
		for _, p := range ps {
			if b := modelBuckets[name](p.Time); inWindow(p) && p.Time.After(last[b]) {
				last[b] = p.Time
			}
		}
		for _, p := range ps {
			if inWindow(p) && p.Time.Equal(last[modelBuckets[name](p.Time)]) {
				why[p.Seq] = append(why[p.Seq], name)
			}
		}
	}
	bmFrom := longest
	if !pol.Bookmarks.IsZero() {
		bmFrom = modelBefore(pol.Bookmarks, now)
	}
	var drop []string
	for _, bm := range bms {
		switch {
		case bm.Pinned:
			why[bm.Seq] = append(why[bm.Seq], "pinned "+bm.Name)
		case bm.Time.Before(bmFrom):
			drop = append(drop, bm.Name)
		default:
			why[bm.Seq] = append(why[bm.Seq], "bookmark "+bm.Name)
		}
	}
	for _, b := range bases {
		why[b.Seq] = append(why[b.Seq], "clone base "+b.Clone)
	}
	return why, drop
}

var spanChoices = map[string][]string{
	"keep-all":  {"0", "0", "6h", "24h", "2d"},
	"hourly":    {"0", "36h", "7d", "10d"},
	"daily":     {"0", "14d", "30d", "1m", "45d"},
	"weekly":    {"0", "4w", "8w", "2m", "1m2w"},
	"monthly":   {"0", "3m", "1y", "2m15d"},
	"bookmarks": {"0", "0", "20d", "1m"},
}

// TestSelectModel: Select against the model over seeded random points of
// about three months, in bursts and gaps, around year ends and month ends.
func TestSelectModel(t *testing.T) {
	var pruned, dropped, points int
	for seed := range uint64(40) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 18))
			pick := func(k string) Span { return MustSpan(spanChoices[k][rng.IntN(len(spanChoices[k]))]) }
			pol := Policy{KeepAll: pick("keep-all"), Hourly: pick("hourly"), Daily: pick("daily"), Weekly: pick("weekly"), Monthly: pick("monthly"), Bookmarks: pick("bookmarks")}
			// now: a random minute within a month of a year's end, or a month's.
			now := time.Date(2026+rng.IntN(3), time.Month(1+rng.IntN(12)), 1, 0, 0, 0, 0, time.UTC)
			if rng.IntN(3) == 0 { // the last days of a month: months of unequal length
				now = now.AddDate(0, 1, -1-rng.IntN(3)).Add(time.Duration(rng.Int64N(int64(24 * time.Hour))))
			} else {
				now = now.Add(time.Duration(rng.Int64N(int64(31*24*time.Hour))) - 15*24*time.Hour).Truncate(time.Second)
			}
			// Points exactly at the windows' edges, and just before.
			var edges []time.Time
			for _, s := range []Span{pol.KeepAll, pol.Hourly, pol.Daily, pol.Weekly, pol.Monthly, pol.Bookmarks} {
				if !s.IsZero() && rng.IntN(2) == 0 {
					edges = append(edges, modelBefore(s, now), modelBefore(s, now).Add(-time.Nanosecond))
				}
			}
			ps, bms, bases := randomHistory(rng, now, edges)
			pl := Select(now, pol, ps, bms, bases)
			why, drop := model(now, pol, ps, bms, bases)
			checkPlan(t, pl, ps, why, drop)
			if t.Failed() {
				t.Logf("now %s, policy %s", now, pol)
			}
			points += len(ps)
			pruned += len(pl.Removed)
			dropped += len(pl.DropBookmarks)
		})
	}
	// The cases are worth something: most points go, some bookmarks too.
	if pruned < points/2 || dropped == 0 {
		t.Errorf("of %d points %d removed, %d bookmarks dropped: the random cases prune too little", points, pruned, dropped)
	}
	t.Logf("%d points, %d removed, %d bookmarks dropped", points, pruned, dropped)
}

// randomHistory is ~3 months of points before now (and a few after):
// bursts of seconds apart, quiet days, a steady trickle.
func randomHistory(rng *rand.Rand, now time.Time, edges []time.Time) ([]store.Point, []store.Bookmark, []Base) {
	start := now.Add(-95 * 24 * time.Hour)
	var times []time.Time
	for t := start; t.Before(now.Add(2 * time.Hour)); {
		switch rng.IntN(10) {
		case 0: // a burst
			for range rng.IntN(30) {
				t = t.Add(time.Duration(1+rng.IntN(20)) * time.Second)
				times = append(times, t)
			}
		case 1: // a quiet stretch of up to three days
			t = t.Add(time.Duration(rng.Int64N(int64(72 * time.Hour))))
		default:
			t = t.Add(time.Duration(rng.Int64N(int64(3*time.Hour))) + time.Millisecond)
			times = append(times, t)
		}
	}
	times = append(times, edges...)
	slices.SortFunc(times, time.Time.Compare)
	times = slices.CompactFunc(times, time.Time.Equal)
	var ps []store.Point
	seq := uint64(0)
	for _, tm := range times {
		seq += 1 + uint64(rng.IntN(3)) // other timelines take positions too
		ps = append(ps, store.Point{Seq: seq, Time: tm, Blocks: 1})
	}
	var bms []store.Bookmark
	var bases []Base
	for i := range 1 + rng.IntN(12) {
		p := ps[rng.IntN(len(ps))]
		at := p.Time.Add(time.Duration(rng.IntN(1000)) * time.Millisecond)
		if len(edges) > 0 && rng.IntN(2) == 0 { // at an edge
			at = edges[rng.IntN(len(edges))]
		}
		bms = append(bms, store.Bookmark{Name: fmt.Sprintf("bm%d", i), Seq: p.Seq, Time: at, Pinned: rng.IntN(3) == 0})
	}
	for i := range rng.IntN(4) {
		bases = append(bases, Base{Clone: fmt.Sprintf("clone%d", i), Seq: ps[rng.IntN(len(ps))].Seq})
	}
	rng.Shuffle(len(ps), func(i, j int) { ps[i], ps[j] = ps[j], ps[i] }) // any order will do
	return ps, bms, bases
}

// checkPlan compares a plan with the model's reasons and drops.
func checkPlan(t *testing.T, pl Plan, ps []store.Point, why map[uint64][]string, drop []string) {
	t.Helper()
	var keep []uint64
	for seq := range why {
		keep = append(keep, seq)
	}
	slices.Sort(keep)
	if !slices.Equal(pl.Keep, keep) {
		t.Errorf("keep %d positions, the model %d\n got  %v\n want %v", len(pl.Keep), len(keep), pl.Keep, keep)
	}
	for seq, w := range why {
		got := slices.Clone(pl.Reasons[seq])
		sort.Strings(got)
		sort.Strings(w)
		if !slices.Equal(got, w) {
			t.Errorf("position %d kept for %q, the model says %q", seq, got, w)
		}
	}
	if len(pl.Reasons) != len(why) {
		t.Errorf("%d positions have reasons, the model %d", len(pl.Reasons), len(why))
	}
	var removed []uint64
	for _, p := range ps {
		if _, ok := why[p.Seq]; !ok {
			removed = append(removed, p.Seq)
		}
	}
	slices.Sort(removed)
	var got []uint64
	for i, p := range pl.Removed {
		got = append(got, p.Seq)
		if i > 0 && !p.Time.After(pl.Removed[i-1].Time) {
			t.Errorf("removed points out of order at %d", i)
		}
	}
	if !slices.Equal(got, removed) {
		t.Errorf("removed %v, the model %v", got, removed)
	}
	sort.Strings(drop)
	if !slices.Equal(pl.DropBookmarks, drop) {
		t.Errorf("drop bookmarks %v, the model %v", pl.DropBookmarks, drop)
	}
}
