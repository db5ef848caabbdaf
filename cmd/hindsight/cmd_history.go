package main

import (
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/hindsight-cdp/hindsight/recovery"
	"github.com/hindsight-cdp/hindsight/store"
	"github.com/urfave/cli/v2"
)

func cmdHistory() *cli.Command {
	return &cli.Command{
		Name:      "history",
		Usage:     "list the instants at which a file's content changed",
		ArgsUsage: "DISK PATH",
		Description: `PATH is a path as the machine saw it (/srv/site/index.html; the disk's /etc/fstab
says which partition holds it) or pN:/path. For ext2/3/4 the history comes from
the block journal: only the journal records of the file's own blocks (its data,
its inode, its directories) are read, so it is fast however busy the disk was.
Each line is an instant at which the content (BLAKE3) changed, with the size;
touches that left the content alone are not listed. The first line is the file
as it was at --since. Other filesystems are sampled instead: the file is read at
every bookmark and at up to --samples points, and the output says so.`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "since", Usage: "start of the range (default: the disk's first point)"},
			&cli.StringFlag{Name: "until", Value: "latest", Usage: "end of the range"},
			&cli.IntFlag{Name: "samples", Value: 20, Usage: "points to sample where there is no block-level history"},
		},
		Action: func(c *cli.Context) error {
			var res recovery.HistoryResult
			var d store.Disk
			var from, to store.Point
			err := withDisk(c, 2, "a DISK and a PATH", true, func(r *store.Repo, disk store.Disk) error {
				d = disk
				now := time.Now()
				ti, err := resolveAt(r, d, c.String("until"), now)
				if err != nil {
					return err
				}
				to = ti.Point
				if from, err = r.FirstPoint(d.Timeline); err != nil {
					return err
				}
				if s := c.String("since"); s != "" {
					fi, err := resolveAt(r, d, s, now)
					switch {
					case err == nil:
						from = fi.Point
					case !errors.Is(err, store.ErrNoPoint): // before the first point: from the first
						return err
					}
				}
				if from.Seq > to.Seq {
					return usagef("--since %s is after --until %s", fmtTime(from.Time), fmtTime(to.Time))
				}
				res, err = recovery.History(c.Context, r, d, c.Args().Get(1), from, to)
				if errors.Is(err, recovery.ErrNotExt) {
					return samplePoints(r, d, from, to, c.Int("samples"), &res)
				}
				return err
			})
			if err != nil {
				return err
			}
			if res.Method == recovery.MethodSampled {
				points := res.Versions // samplePoints left the points to read here
				res.Versions = nil
				var ps []store.Point
				for _, v := range points {
					ps = append(ps, store.Point{Seq: v.Seq, Time: v.Time})
				}
				res, err = sampledHistory(c, d, ps)
				if err != nil {
					return err
				}
			}
			if c.Bool("json") {
				return printJSON(c, res)
			}
			if res.Note != "" {
				fmt.Fprintln(c.App.ErrWriter, "note:", res.Note)
			}
			rows := make([][]string, 0, len(res.Versions))
			for _, v := range res.Versions {
				sum := v.BLAKE3
				if len(sum) > 16 {
					sum = sum[:16]
				}
				size := "-"
				if v.Exists {
					size = fmt.Sprint(v.Size)
				}
				rows = append(rows, []string{fmtTime(v.Time), v.Change, size, dash(sum)})
			}
			if err := table(c.App.Writer, []string{"TIME", "CHANGE", "SIZE", "BLAKE3"}, rows); err != nil {
				return err
			}
			fmt.Fprintf(c.App.ErrWriter, "%s: %d content changes, %d instants examined (%s)\n",
				res.Path, max(len(res.Versions)-1, 0), res.Examined, res.Method)
			return nil
		},
	}
}

// samplePoints picks the instants a sampled history reads: every bookmark
// in [from, to], from, to, and up to n points spread evenly between. They
// are handed back in res.Versions (Seq and Time only).
func samplePoints(r *store.Repo, d store.Disk, from, to store.Point, n int, res *recovery.HistoryResult) error {
	ps, err := r.Points(d.Timeline, from.Time, to.Time, 100000)
	if err != nil {
		return err
	}
	pick := map[uint64]store.Point{from.Seq: from, to.Seq: to}
	for i := 0; n > 0 && i < n && len(ps) > 0; i++ {
		p := ps[i*len(ps)/n]
		pick[p.Seq] = p
	}
	bms, err := r.Bookmarks(d)
	if err != nil {
		return err
	}
	for _, bm := range bms {
		if !bm.Time.Before(from.Time) && !bm.Time.After(to.Time) {
			if p, err := r.PointAt(d.Timeline, bm.Time); err == nil {
				pick[p.Seq] = p
			}
		}
	}
	res.Method, res.Versions = recovery.MethodSampled, nil
	for _, p := range pick {
		res.Versions = append(res.Versions, recovery.Version{Seq: p.Seq, Time: p.Time})
	}
	sort.Slice(res.Versions, func(i, j int) bool { return res.Versions[i].Seq < res.Versions[j].Seq })
	return nil
}

func sampledHistory(c *cli.Context, d store.Disk, points []store.Point) (recovery.HistoryResult, error) {
	live, err := openLive(c)
	if err != nil {
		return recovery.HistoryResult{}, err
	}
	defer live.Close()
	return recovery.HistorySampled(c.Context, c.Args().Get(1), points, func(p store.Point) (*recovery.Instant, error) {
		return recovery.Open(c.Context, live, d, p, recovery.Options{Logf: stderrf})
	})
}
