package main

import (
	"strconv"
	"time"

	"github.com/hindsight-cdp/hindsight/cdp/timespec"
	"github.com/hindsight-cdp/hindsight/store"
	"github.com/urfave/cli/v2"
)

func cmdPoints() *cli.Command {
	return &cli.Command{
		Name:      "points",
		Usage:     "list the points (journal positions with their times) of DISK",
		ArgsUsage: "DISK",
		Description: `Each point is an instant whose image you can open: the name in the NAME column is
its directory in the mount. Works while another process writes the repository.`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "since", Usage: "only points at or after this time"},
			&cli.StringFlag{Name: "until", Usage: "only points at or before this time"},
			&cli.IntFlag{Name: "limit", Value: 1000, Usage: "at most this many, the newest (0: all)"},
		},
		Action: func(c *cli.Context) error {
			now := time.Now()
			since, until := time.Unix(0, 0), time.Unix(0, 1<<63-1)
			var err error
			if s := c.String("since"); s != "" {
				if since, err = timespec.Parse(s, now); err != nil {
					return err
				}
			}
			if s := c.String("until"); s != "" {
				if until, err = timespec.Parse(s, now); err != nil {
					return err
				}
			}
			return withDisk(c, 1, "a DISK", true, func(r *store.Repo, d store.Disk) error {
				ps, err := r.Points(d.Timeline, since, until, c.Int("limit"))
				if err != nil {
					return err
				}
				if c.Bool("json") {
					if ps == nil {
						ps = []store.Point{}
					}
					return printJSON(c, ps)
				}
				rows := make([][]string, len(ps))
				for i, p := range ps {
					rows[i] = []string{timespec.Format(p.Time), fmtTime(p.Time), strconv.FormatUint(p.Seq, 10), strconv.FormatUint(p.Blocks, 10)}
				}
				return table(c.App.Writer, []string{"NAME", "TIME", "SEQ", "BLOCKS"}, rows)
			})
		},
	}
}

func cmdBookmarks() *cli.Command {
	return &cli.Command{
		Name:      "bookmarks",
		Usage:     "list the bookmarks of DISK",
		ArgsUsage: "DISK",
		Action: func(c *cli.Context) error {
			return withDisk(c, 1, "a DISK", true, func(r *store.Repo, d store.Disk) error {
				bs, err := r.Bookmarks(d)
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
