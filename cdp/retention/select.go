package retention

import (
	"cmp"
	"maps"
	"slices"
	"time"

	"github.com/hindsight-cdp/hindsight/store"
)

// Base is a clone's base on the timeline: its position is kept whatever
// the policy says, as the clone's unwritten blocks read from it.
type Base struct {
	Clone string `json:"clone"` // the clone disk
	Seq   uint64 `json:"seq"`
}

// Plan is what Select keeps and removes.
type Plan struct {
	// Keep are the positions to keep exact, sorted and unique: kept points,
	// and the positions of kept bookmarks and of clone bases.
	Keep []uint64
	// Removed are the points not kept, oldest first.
	Removed []store.Point
	// DropBookmarks are the bookmarks older than the policy keeps, by name.
	DropBookmarks []string
	// Reasons say why each position of Keep is kept: "newest", "future"
	// (after now: clock skew), "keep-all", "hourly", "daily", "weekly",
	// "monthly", "pinned NAME", "bookmark NAME", "clone base NAME".
	Reasons map[uint64][]string
}

// window is one of the policy's bucketed windows: within span back from
// now, the newest point of each bucket is kept.
type window struct {
	reason string
	span   Span
	bucket func(time.Time) int64
}

// Buckets, of UTC times: a number that is the same for two times exactly
// when they share the hour, the day, the ISO week or the month.
func hourOf(t time.Time) int64 { return floorDiv(t.Unix(), 3600) }
func dayOf(t time.Time) int64  { return floorDiv(t.Unix(), 86400) }
func weekOf(t time.Time) int64 {
	y, w := t.ISOWeek()
	return int64(y)*100 + int64(w)
}
func monthOf(t time.Time) int64 { return int64(t.Year())*12 + int64(t.Month()) }

// floorDiv divides rounding down, so that times before 1970 bucket too.
func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b < 0 {
		q--
	}
	return q
}

// Select decides which of a timeline's points and bookmarks pol keeps as of
// now. It keeps the newest point; every point after now (a clock that went
// back); every point at or after KeepAll before now; within each bucketed
// window, the newest point of each bucket among the points of the window;
// the positions of pinned bookmarks, and of other bookmarks whose instant
// is at or after BookmarksBefore (the older ones go to DropBookmarks); and
// the positions of bases. points may come in any order; a point's
// position is its Seq.
func Select(now time.Time, pol Policy, points []store.Point, bms []store.Bookmark, bases []Base) Plan {
	now = now.UTC()
	pl := Plan{Reasons: map[uint64][]string{}}
	keep := func(seq uint64, why string) { pl.Reasons[seq] = append(pl.Reasons[seq], why) }

	ps := slices.Clone(points)
	slices.SortFunc(ps, func(a, b store.Point) int { return cmp.Compare(a.Seq, b.Seq) })
	if len(ps) > 0 {
		keep(ps[len(ps)-1].Seq, "newest")
	}
	for _, p := range ps {
		if p.Time.After(now) {
			keep(p.Seq, "future")
		}
	}
	if !pol.KeepAll.IsZero() {
		from := pol.KeepAll.Before(now)
		for _, p := range ps {
			if !p.Time.Before(from) && !p.Time.After(now) {
				keep(p.Seq, "keep-all")
			}
		}
	}
	for _, w := range pol.windows() {
		if w.span.IsZero() {
			continue
		}
		from := w.span.Before(now)
		newest := map[int64]store.Point{}
		for _, p := range ps {
			if p.Time.Before(from) || p.Time.After(now) {
				continue
			}
			b := w.bucket(p.Time.UTC())
			if cur, ok := newest[b]; !ok || p.Seq > cur.Seq {
				newest[b] = p
			}
		}
		for _, b := range slices.Sorted(maps.Keys(newest)) {
			keep(newest[b].Seq, w.reason)
		}
	}

	bms = slices.Clone(bms)
	slices.SortFunc(bms, func(a, b store.Bookmark) int { return cmp.Compare(a.Name, b.Name) })
	bmFrom := pol.BookmarksBefore(now)
	for _, bm := range bms {
		switch {
		case bm.Pinned:
			keep(bm.Seq, "pinned "+bm.Name)
		case !bm.Time.Before(bmFrom):
			keep(bm.Seq, "bookmark "+bm.Name)
		default:
			pl.DropBookmarks = append(pl.DropBookmarks, bm.Name)
		}
	}
	bases = slices.Clone(bases)
	slices.SortFunc(bases, func(a, b Base) int { return cmp.Compare(a.Clone, b.Clone) })
	for _, b := range bases {
		keep(b.Seq, "clone base "+b.Clone)
	}

	pl.Keep = slices.Sorted(maps.Keys(pl.Reasons))
	for _, p := range ps {
		if _, ok := pl.Reasons[p.Seq]; !ok {
			pl.Removed = append(pl.Removed, p)
		}
	}
	return pl
}
