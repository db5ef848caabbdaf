package main

import (
	"fmt"
	"time"

	"github.com/hindsight-cdp/hindsight/cdp"
	"github.com/hindsight-cdp/hindsight/cdp/timespec"
	"github.com/hindsight-cdp/hindsight/store"
	"github.com/urfave/cli/v2"
)

func cmdBookmark() *cli.Command {
	return &cli.Command{
		Name:      "bookmark",
		Usage:     "name an instant of DISK (now, or a past one with --at)",
		ArgsUsage: "DISK NAME",
		Description: `The bookmark shows in the mount as <disk>/bookmarks/NAME and its instant is always
listed. --at must lie within the disk's history. List bookmarks with 'hindsight bookmarks DISK'.`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "at", Value: "now", Usage: "the instant to name (RFC 3339, ISO basic, @unix, -15m)"},
			&cli.StringFlag{Name: "kind", Value: store.KindUser, Usage: "consistency: user, crash or application"},
		},
		Action: func(c *cli.Context) error {
			now := time.Now()
			at, err := timespec.Parse(c.String("at"), now)
			if err != nil {
				return err
			}
			if at.After(now) {
				return fmt.Errorf("%w: --at %s", cdp.ErrFuture, fmtTime(at))
			}
			return withDisk(c, 2, "DISK and NAME", false, func(r *store.Repo, d store.Disk) error {
				bm, err := r.AddBookmark(d, c.Args().Get(1), at, c.String("kind"))
				if err != nil {
					return err
				}
				if c.Bool("json") {
					return printJSON(c, bm)
				}
				fmt.Fprintf(c.App.Writer, "%s: bookmark %s at %s (seq %d)\n", d.Name, bm.Name, fmtTime(bm.Time), bm.Seq)
				return nil
			})
		},
	}
}
