package main

import (
	"cmp"
	"errors"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/hindsight-cdp/hindsight/cdp"
	"github.com/hindsight-cdp/hindsight/cdp/timespec"
	"github.com/hindsight-cdp/hindsight/store"
	"github.com/urfave/cli/v2"
)

// pointRow is one listed point with the bookmarks that name it.
type pointRow struct {
	store.Point
	Name        string   `json:"name"` // its directory in the mount
	Consistency string   `json:"consistency"`
	Bookmarks   []string `json:"bookmarks,omitempty"`
	// Requested is the instant asked for (--at, a bookmark's instant, else
	// the point's own time) and Resolved the point that shows it, the
	// newest at or before it: after pruning, a thinned instant resolves
	// to an older kept point.
	Requested time.Time `json:"requested"`
	Resolved  pointRef  `json:"resolved"`
}

// pointRef names a point: its time and journal position.
type pointRef struct {
	Time time.Time `json:"time"`
	Seq  uint64    `json:"seq"`
}

func refOf(p store.Point) pointRef { return pointRef{Time: p.Time, Seq: p.Seq} }

func cmdPoints() *cli.Command {
	return &cli.Command{
		Name:      "points",
		Usage:     "list the points (journal positions with their times) of a DISK or GROUP",
		ArgsUsage: "DISK|GROUP",
		Description: `Each point is an instant whose image you can open: the NAME column is its directory
in the mount. Works while another process writes the repository.

Every point is crash-consistent. --consistency and --bookmark list only bookmarked
instants of that kind or name (a shell pattern). Without --after, the newest --limit
points are listed; with --after NAME, the oldest --limit points after that one, so a
script pages forward by passing the last NAME it got:

  hindsight points db-vm --consistency application --since -24h --json
  hindsight points web --since -7d --limit 500 --after 20261125T101530.123Z

--at resolves instants instead (any time form, latest, bookmark:NAME; repeat it
for several): each row is the point that shows the instant, the newest at or
before it. With --json every row has "requested" (the instant asked for; a
bookmark's instant; else the point's own time) and "resolved" {"time", "seq"}
(the point shown): once pruning has thinned old history, an instant whose
point was removed resolves to the kept point before it, and the two differ.

  hindsight points web --at 2026-11-25T10:15:00Z --at -30d --json`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "since", Usage: "only points at or after this time"},
			&cli.StringFlag{Name: "until", Usage: "only points at or before this time"},
			&cli.StringFlag{Name: "after", Usage: "page forward: only points after this `NAME` (or time), oldest first"},
			&cli.IntFlag{Name: "limit", Value: 1000, Usage: "at most this many (0: all)"},
			&cli.StringFlag{Name: "consistency", Aliases: []string{"kind"}, Usage: "only bookmarks of this kind: application, crash, user, resync"},
			&cli.StringFlag{Name: "bookmark", Usage: "only bookmarks whose name matches this shell `PATTERN`"},
			&cli.StringSliceFlag{Name: "at", Usage: "resolve this `INSTANT` to the point that shows it (repeatable)"},
		},
		Action: func(c *cli.Context) error {
			now := time.Now()
			since, until := time.Unix(0, 0), time.Unix(0, 1<<63-1)
			for _, f := range []struct {
				flag string
				t    *time.Time
				add  time.Duration
			}{{"since", &since, 0}, {"until", &until, 0}, {"after", &since, 1}} {
				if s := c.String(f.flag); s != "" {
					t, err := timespec.Parse(s, now)
					if err != nil {
						return usageErr(err)
					}
					*f.t = t.Add(f.add)
				}
			}
			if _, err := path.Match(c.String("bookmark"), ""); err != nil {
				return usagef("--bookmark %q: %v", c.String("bookmark"), err)
			}
			at := c.StringSlice("at")
			if len(at) > 0 {
				for _, f := range []string{"since", "until", "after", "consistency", "bookmark"} {
					if c.IsSet(f) {
						return usagef("--at resolves instants: it takes no --%s", f)
					}
				}
			}
			return withTarget(c, true, func(r *store.Repo, owner store.Disk) error {
				var rows []pointRow
				var err error
				if len(at) > 0 {
					rows, err = resolvePoints(r, owner, at, now)
				} else {
					rows, err = listPoints(c, r, owner, since, until)
				}
				if err != nil {
					return err
				}
				if c.Bool("json") {
					return printJSON(c, rows)
				}
				if len(at) > 0 {
					cells := make([][]string, len(rows))
					for i, p := range rows {
						cells[i] = []string{fmtTime(p.Requested), p.Name, fmtTime(p.Time), strconv.FormatUint(p.Seq, 10), p.Consistency, strings.Join(p.Bookmarks, ",")}
					}
					return table(c.App.Writer, []string{"REQUESTED", "NAME", "TIME", "SEQ", "CONSISTENCY", "BOOKMARKS"}, cells)
				}
				cells := make([][]string, len(rows))
				for i, p := range rows {
					cells[i] = []string{p.Name, fmtTime(p.Time), strconv.FormatUint(p.Seq, 10), strconv.FormatUint(p.Blocks, 10), p.Consistency, strings.Join(p.Bookmarks, ",")}
				}
				return table(c.App.Writer, []string{"NAME", "TIME", "SEQ", "BLOCKS", "CONSISTENCY", "BOOKMARKS"}, cells)
			})
		},
	}
}

// listPoints selects the rows points prints.
func listPoints(c *cli.Context, r *store.Repo, owner store.Disk, since, until time.Time) ([]pointRow, error) {
	bms, err := r.Bookmarks(owner)
	if err != nil {
		return nil, err
	}
	limit := c.Int("limit")
	kind, pattern := c.String("consistency"), c.String("bookmark")
	rows := []pointRow{}
	if kind != "" || pattern != "" { // bookmarked instants only
		for _, b := range bms {
			ok, _ := path.Match(cmp.Or(pattern, "*"), b.Name)
			if !ok || (kind != "" && b.Kind != kind) || b.Time.Before(since) || b.Time.After(until) {
				continue
			}
			pt := store.Point{Seq: b.Seq, Time: b.Time}
			resolved := refOf(pt)
			if p, err := r.PointAt(owner.Timeline, b.Time); err == nil {
				pt.Blocks = p.Blocks // what the named point journaled
				resolved = refOf(p)
			}
			rows = append(rows, pointRow{Point: pt, Name: timespec.Format(b.Time),
				Consistency: consistency(b.Kind), Bookmarks: []string{b.Name}, Requested: b.Time, Resolved: resolved})
		}
		sortRows(rows)
		return page(c, rows, limit), nil
	}
	var ps []store.Point
	if c.IsSet("after") {
		ps, err = r.Skim(owner.Timeline, since, until.Add(1), func(t time.Time) time.Time { return t.Add(1) }, limit)
	} else {
		ps, err = r.Points(owner.Timeline, since, until, limit)
	}
	if err != nil {
		return nil, err
	}
	for _, p := range ps {
		rows = append(rows, newPointRow(p, p.Time, bms))
	}
	return rows, nil
}

// newPointRow is the row of point p, shown for the instant requested, with
// the bookmarks at its position.
func newPointRow(p store.Point, requested time.Time, bms []store.Bookmark) pointRow {
	row := pointRow{Point: p, Name: timespec.Format(p.Time), Consistency: store.KindCrash, Requested: requested, Resolved: refOf(p)}
	for _, b := range bms {
		if b.Seq == p.Seq {
			row.Bookmarks = append(row.Bookmarks, b.Name)
			if b.Kind == store.KindApplication {
				row.Consistency = store.KindApplication
			}
		}
	}
	return row
}

// resolvePoints is one row per instant of specs: the point that shows it.
func resolvePoints(r *store.Repo, owner store.Disk, specs []string, now time.Time) ([]pointRow, error) {
	bms, err := r.Bookmarks(owner)
	if err != nil {
		return nil, err
	}
	rows := make([]pointRow, 0, len(specs))
	for _, spec := range specs {
		in, err := resolveAt(r, owner, spec, now)
		if err != nil {
			return nil, err
		}
		rows = append(rows, newPointRow(in.Point, in.Requested, bms))
	}
	return rows, nil
}

// consistency is what a bookmark of kind promises: application or crash.
func consistency(kind string) string {
	if kind == store.KindApplication {
		return kind
	}
	return store.KindCrash
}

func sortRows(rows []pointRow) {
	sort.SliceStable(rows, func(i, j int) bool { return rows[i].Time.Before(rows[j].Time) })
}

// page keeps the oldest limit rows after --after, else the newest limit.
func page(c *cli.Context, rows []pointRow, limit int) []pointRow {
	if limit <= 0 || len(rows) <= limit {
		return rows
	}
	if c.IsSet("after") {
		return rows[:limit]
	}
	return rows[len(rows)-limit:]
}

// withTarget checks for one DISK or GROUP argument and runs fn with its
// Disk-shaped handle (cdp.Owner), by which points and bookmarks are found.
func withTarget(c *cli.Context, readOnly bool, fn func(r *store.Repo, owner store.Disk) error) error {
	if err := needArgs(c, 1, "a DISK or GROUP"); err != nil {
		return err
	}
	return withRepo(c, readOnly, func(r *store.Repo) error {
		owner, err := cdp.Owner(r, c.Args().First())
		if errors.Is(err, store.ErrUnknownDisk) {
			return notFound(err)
		}
		if err != nil {
			return err
		}
		return fn(r, owner)
	})
}

func cmdBookmarks() *cli.Command {
	return &cli.Command{
		Name:      "bookmarks",
		Usage:     "list the bookmarks of a DISK or GROUP",
		ArgsUsage: "DISK|GROUP",
		Action: func(c *cli.Context) error {
			return withTarget(c, true, func(r *store.Repo, owner store.Disk) error {
				bs, err := r.Bookmarks(owner)
				if err != nil {
					return err
				}
				if c.Bool("json") {
					if bs == nil {
						bs = []store.Bookmark{}
					}
					return printJSON(c, bs)
				}
				rows := make([][]string, len(bs))
				for i, b := range bs {
					rows[i] = []string{b.Name, fmtTime(b.Time), b.Kind, strconv.FormatUint(b.Seq, 10)}
				}
				return table(c.App.Writer, []string{"BOOKMARK", "TIME", "KIND", "SEQ"}, rows)
			})
		},
	}
}
