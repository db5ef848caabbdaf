package retention

import (
	"slices"
	"testing"
	"time"

	"github.com/hindsight-cdp/hindsight/store"
)

func mustTime(t *testing.T, s string) time.Time {
	t.Helper()
	v, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// points makes points at the given times, positions 10, 20, ...
func points(t *testing.T, times ...string) []store.Point {
	t.Helper()
	var ps []store.Point
	for i, s := range times {
		ps = append(ps, store.Point{Seq: uint64(10 * (i + 1)), Time: mustTime(t, s)})
	}
	return ps
}

// removedTimes lists the plan's removed points by time, as given.
func removedTimes(pl Plan) []string {
	var out []string
	for _, p := range pl.Removed {
		out = append(out, p.Time.Format(time.RFC3339Nano))
	}
	return out
}

// reasonsAt is the reasons of the point at time s.
func reasonsAt(t *testing.T, pl Plan, ps []store.Point, s string) []string {
	t.Helper()
	for _, p := range ps {
		if p.Time.Equal(mustTime(t, s)) {
			return pl.Reasons[p.Seq]
		}
	}
	t.Fatalf("no point at %s", s)
	return nil
}

func TestSelectCases(t *testing.T) {
	ist := time.FixedZone("IST", 5*3600+1800)
	for _, tc := range []struct {
		name    string
		now     string
		pol     Policy
		times   []string
		removed []string
		reasons map[string][]string // by point time
	}{{
		// 2026-12-28 (Monday) to 2027-01-03 (Sunday) is ISO week 2026-W53.
		name: "ISO week across a year end",
		now:  "2027-01-06T12:00:00Z",
		pol:  Policy{Weekly: MustSpan("4w")},
		times: []string{"2026-12-27T10:00:00Z", "2026-12-28T00:00:00Z", "2026-12-31T23:00:00Z", "2027-01-01T01:00:00Z",
			"2027-01-03T23:59:59.999Z", "2027-01-04T00:00:00Z", "2027-01-05T08:00:00Z"},
		removed: []string{"2026-12-28T00:00:00Z", "2026-12-31T23:00:00Z", "2027-01-01T01:00:00Z", "2027-01-04T00:00:00Z"},
		reasons: map[string][]string{"2026-12-27T10:00:00Z": {"weekly"}, "2027-01-03T23:59:59.999Z": {"weekly"}, "2027-01-05T08:00:00Z": {"newest", "weekly"}},
	}, {
		// One month before March 31 is February 28: its last point is in.
		name:    "a month back from March 31",
		now:     "2027-03-31T10:00:00Z",
		pol:     Policy{Monthly: MustSpan("1m")},
		times:   []string{"2027-02-28T09:59:59Z", "2027-02-28T10:00:00Z", "2027-03-01T00:00:00Z", "2027-03-31T09:00:00Z"},
		removed: []string{"2027-02-28T09:59:59Z", "2027-03-01T00:00:00Z"},
		reasons: map[string][]string{"2027-02-28T10:00:00Z": {"monthly"}, "2027-03-31T09:00:00Z": {"newest", "monthly"}},
	}, {
		name:    "a month back from March 31 of a leap year",
		now:     "2028-03-31T10:00:00Z",
		pol:     Policy{Monthly: MustSpan("1m")},
		times:   []string{"2028-02-28T23:00:00Z", "2028-02-29T09:00:00Z", "2028-02-29T10:00:00Z", "2028-03-30T00:00:00Z"},
		removed: []string{"2028-02-28T23:00:00Z", "2028-02-29T09:00:00Z"},
	}, {
		// Days are UTC days: two points of one Indian day are two UTC days.
		name:    "UTC days whatever the zone",
		now:     "2027-01-12T00:00:00Z",
		pol:     Policy{Daily: MustSpan("7d")},
		times:   []string{"2027-01-10T04:00:00+05:30", "2027-01-10T06:00:00+05:30", "2027-01-10T07:00:00+05:30", "2027-01-11T12:00:00Z"},
		removed: []string{"2027-01-10T06:00:00+05:30"},
		reasons: map[string][]string{"2027-01-10T04:00:00+05:30": {"daily"}},
	}, {
		// keep-all's edge is in; the hour before it keeps its newest.
		name: "keep-all and hourly edges",
		now:  "2027-06-01T12:00:00Z",
		pol:  Policy{KeepAll: MustSpan("1h"), Hourly: MustSpan("3h")},
		times: []string{"2027-06-01T08:59:59Z", "2027-06-01T09:00:00Z", "2027-06-01T09:30:00Z", "2027-06-01T10:10:00Z",
			"2027-06-01T10:59:59.999Z", "2027-06-01T11:00:00Z", "2027-06-01T11:20:00Z", "2027-06-01T11:40:00Z"},
		removed: []string{"2027-06-01T08:59:59Z", "2027-06-01T09:00:00Z", "2027-06-01T10:10:00Z"},
		reasons: map[string][]string{"2027-06-01T11:00:00Z": {"keep-all"}, "2027-06-01T11:20:00Z": {"keep-all"},
			"2027-06-01T09:30:00Z": {"hourly"}, "2027-06-01T11:40:00Z": {"newest", "keep-all", "hourly"}},
	}, {
		// Long quiet: the newest stays even outside every window; a
		// clock that went back keeps what lies after now.
		name:    "newest and future",
		now:     "2027-06-01T12:00:00Z",
		pol:     Policy{Daily: MustSpan("2d")},
		times:   []string{"2026-01-01T00:00:00Z", "2026-06-01T00:00:00Z", "2027-06-01T11:00:00Z", "2027-06-01T13:00:00Z", "2027-06-01T14:00:00Z"},
		removed: []string{"2026-01-01T00:00:00Z", "2026-06-01T00:00:00Z"},
		reasons: map[string][]string{"2027-06-01T11:00:00Z": {"daily"}, "2027-06-01T13:00:00Z": {"future"}, "2027-06-01T14:00:00Z": {"newest", "future"}},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			ps := points(t, tc.times...)
			pl := Select(mustTime(t, tc.now).In(ist), tc.pol, ps, nil, nil)
			if got := removedTimes(pl); !slices.Equal(got, tc.removed) {
				t.Errorf("removed %v\nwant    %v", got, tc.removed)
			}
			for at, want := range tc.reasons {
				if got := reasonsAt(t, pl, ps, at); !slices.Equal(got, want) {
					t.Errorf("point at %s kept for %q, want %q", at, got, want)
				}
			}
			if len(pl.Keep)+len(pl.Removed) != len(ps) {
				t.Errorf("%d kept + %d removed of %d points", len(pl.Keep), len(pl.Removed), len(ps))
			}
		})
	}
}

// TestSelectBookmarksAndBases: pinned bookmarks and clone bases keep their
// positions whatever their age; other bookmarks as long as the bookmark
// window, by default the longest window.
func TestSelectBookmarksAndBases(t *testing.T) {
	now := mustTime(t, "2027-06-30T12:00:00Z")
	var times []string
	for d := 20; d >= 0; d-- { // one point a day, at noon
		times = append(times, now.AddDate(0, 0, -d).Format(time.RFC3339))
	}
	ps := points(t, times...)
	day := func(d int) store.Point { return ps[20-d] } // d days ago
	bms := []store.Bookmark{
		{Name: "old", Seq: day(15).Seq, Time: day(15).Time},
		{Name: "pin", Seq: day(15).Seq, Time: day(15).Time, Pinned: true},
		{Name: "older-pin", Seq: day(19).Seq, Time: day(19).Time, Pinned: true},
		{Name: "edge", Seq: day(5).Seq, Time: day(5).Time},
		{Name: "recent", Seq: day(3).Seq, Time: day(3).Time.Add(time.Hour)},
		{Name: "beyond", Seq: day(6).Seq, Time: day(6).Time},
	}
	bases := []Base{{Clone: "test-clone", Seq: day(18).Seq}, {Clone: "a-clone", Seq: day(18).Seq}}
	// By default bookmarks are kept as long as the longest window (5d).
	pol := Policy{KeepAll: MustSpan("1d"), Daily: MustSpan("5d")}
	pl := Select(now, pol, ps, bms, bases)
	if want := []string{"beyond", "old"}; !slices.Equal(pl.DropBookmarks, want) {
		t.Errorf("dropped %v, want %v", pl.DropBookmarks, want)
	}
	for seq, want := range map[uint64][]string{
		day(15).Seq: {"pinned pin"},
		day(19).Seq: {"pinned older-pin"},
		day(18).Seq: {"clone base a-clone", "clone base test-clone"},
		day(5).Seq:  {"daily", "bookmark edge"},
		day(3).Seq:  {"daily", "bookmark recent"},
		day(0).Seq:  {"newest", "keep-all", "daily"},
	} {
		if got := pl.Reasons[seq]; !slices.Equal(got, want) {
			t.Errorf("position %d: %q, want %q", seq, got, want)
		}
	}
	if _, ok := pl.Reasons[day(6).Seq]; ok {
		t.Errorf("the point of a dropped bookmark is kept: %q", pl.Reasons[day(6).Seq])
	}
	// A bookmark window of its own, longer than the others.
	pol.Bookmarks = MustSpan("2w")
	pl = Select(now, pol, ps, bms, bases)
	if want := []string{"old"}; !slices.Equal(pl.DropBookmarks, want) {
		t.Errorf("with --bookmarks 2w dropped %v, want %v", pl.DropBookmarks, want)
	}
	if got := pl.Reasons[day(6).Seq]; !slices.Equal(got, []string{"bookmark beyond"}) {
		t.Errorf("with --bookmarks 2w, day 6: %q", got)
	}
	// No points: the positions of bookmarks and bases still are kept.
	pl = Select(now, pol, nil, bms[:1], bases[:1])
	if !slices.Equal(pl.Keep, []uint64{day(18).Seq}) || !slices.Equal(pl.DropBookmarks, []string{"old"}) || len(pl.Removed) != 0 {
		t.Errorf("without points: %+v", pl)
	}
}
