package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/hindsight-cdp/hindsight/cdp"
	"github.com/hindsight-cdp/hindsight/cdp/timespec"
	"github.com/hindsight-cdp/hindsight/store"
	"github.com/urfave/cli/v2"
)

func cmdImport() *cli.Command {
	return &cli.Command{
		Name:      "import",
		Usage:     "journal a whole image (file or block device) as a new point of DISK",
		ArgsUsage: "DISK IMAGE",
		Description: `Only blocks that differ from the disk's newest state are journaled, so importing
the same image twice stores nothing new. The image must be exactly the disk's size.
--at dates the point (it must be after the disk's newest point and not in the future);
without it the point gets the time the import finishes.`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "at", Usage: "time of the new point (RFC 3339, ISO basic, @unix, -15m)"},
		},
		Action: func(c *cli.Context) error {
			if err := needArgs(c, 2, "DISK and IMAGE"); err != nil {
				return err // before opening IMAGE
			}
			var at time.Time
			if s := c.String("at"); s != "" {
				var err error
				if at, err = timespec.Parse(s, time.Now()); err != nil {
					return usageErr(err)
				}
			}
			f, err := os.Open(c.Args().Get(1))
			if err != nil {
				return usageErr(err)
			}
			defer f.Close()
			size, err := f.Seek(0, io.SeekEnd)
			if err != nil {
				return err
			}
			return withDisk(c, 2, "DISK and IMAGE", false, func(r *store.Repo, d store.Disk) error {
				update, done := progress(c, "import "+d.Name, size)
				res, err := cdp.Import(c.Context, r, d, f, size, at, update)
				done()
				// --at names the new point: in the future or not after the
				// newest point it is bad input, as is an image of the wrong size.
				switch {
				case errors.Is(err, cdp.ErrFuture), errors.Is(err, store.ErrTimeOrder), errors.Is(err, cdp.ErrSizeMismatch):
					return usageErr(err)
				case err != nil:
					return err
				}
				if c.Bool("json") {
					return printJSON(c, res)
				}
				fmt.Fprintf(c.App.Writer, "%s: point %s (seq %d): %d blocks changed, %s read\n",
					d.Name, timespec.Format(res.Point.Time), res.Point.Seq, res.Changed, humanBytes(res.Read))
				return nil
			})
		},
	}
}
