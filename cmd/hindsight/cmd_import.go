package main

import (
	"errors"
	"fmt"
	"github.com/hindsight-cdp/hindsight/service"
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
			path, err := absPath(c.Args().Get(1))
			if err != nil {
				return err
			}
			f, err := os.Open(path) // here, so that a missing image is bad usage before anything else
			if err != nil {
				return usageErr(err)
			}
			size, err := f.Seek(0, io.SeekEnd)
			f.Close()
			if err != nil {
				return err
			}
			return withWriter(c, func(w service.Writer) error {
				disk := c.Args().First()
				update, done := progress(c, "import "+disk, size)
				res, err := w.Import(c.Context, service.ImportRequest{Disk: disk, Path: path, At: at}, update)
				done()
				// --at names the new point: in the future or not after the
				// newest point it is bad input, as is an image of the wrong size.
				switch {
				case errors.Is(err, cdp.ErrFuture), errors.Is(err, store.ErrTimeOrder), errors.Is(err, cdp.ErrSizeMismatch):
					return usageErr(err)
				case errors.Is(err, store.ErrUnknownDisk):
					return notFound(err)
				case err != nil:
					return noSpaceHint(err)
				}
				if c.Bool("json") {
					return printJSON(c, res)
				}
				fmt.Fprintf(c.App.Writer, "%s: point %s (seq %d): %d blocks changed, %s read\n",
					disk, timespec.Format(res.Point.Time), res.Point.Seq, res.Changed, humanBytes(res.Read))
				return nil
			})
		},
	}
}
