package main

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/hindsight-cdp/hindsight/fs"
	"github.com/hindsight-cdp/hindsight/fs/export"
	"github.com/hindsight-cdp/hindsight/store"
	"github.com/urfave/cli/v2"
)

func cmdExport() *cli.Command {
	return &cli.Command{
		Name:      "export",
		Usage:     "write DISK as it was at an instant to a file, a device or stdout",
		ArgsUsage: "DISK",
		Description: `Formats: raw (a plain disk image), vmdk (NAME.vmdk descriptor plus NAME-flat.vmdk),
vhd (fixed VHD, for Hyper-V and Azure), vmdk-stream (streamOptimized VMDK, compressed,
as vSphere's importers take it). Regular files are written sparse. --out - writes to
stdout (not vmdk). An existing target (file or block device) needs --force.
Prints the BLAKE3 of the image file written (for vmdk: of the -flat extent).`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "at", Value: "latest", Usage: "instant: RFC 3339, ISO basic, @unix, -15m, latest, bookmark:NAME"},
			&cli.StringFlag{Name: "format", Aliases: []string{"f"}, Value: "raw", Usage: "raw, vmdk, vhd or vmdk-stream"},
			&cli.StringFlag{Name: "out", Aliases: []string{"o"}, Required: true, Usage: "target `PATH`, or - for stdout"},
			&cli.BoolFlag{Name: "force", Usage: "overwrite an existing file or device"},
		},
		Action: func(c *cli.Context) error {
			format := c.String("format")
			if !contains(export.Formats, format) {
				return usagef("--format %q: use one of %s", format, strings.Join(export.Formats, ", "))
			}
			return withDisk(c, 1, "a DISK", true, func(r *store.Repo, d store.Disk) error {
				in, err := resolveAt(r, d, c.String("at"), time.Now())
				if err != nil {
					return err
				}
				img, err := r.Image(d, in.Point.Seq)
				if err != nil {
					return err
				}
				update, done := progress(c, "export "+d.Name, d.Size)
				res, err := export.Export(c.Context, fs.ImageMeta(d, in.Point), img, export.Options{
					Format: format, Out: c.String("out"), Force: c.Bool("force"), Progress: update, Stdout: c.App.Writer,
				})
				done()
				switch {
				case errors.Is(err, export.ErrExists):
					return busy(err)
				case errors.Is(err, export.ErrBadTarget):
					return usageErr(err)
				case err != nil:
					return err
				}
				out := struct {
					export.Result
					Disk  string      `json:"disk"`
					Point store.Point `json:"point"`
				}{res, d.Name, in.Point}
				w := c.App.Writer
				if c.String("out") == "-" {
					w = os.Stderr // stdout holds the image
				}
				if c.Bool("json") {
					return printJSONTo(w, out)
				}
				fmt.Fprintf(w, "%s at %s (seq %d) → %s\nblake3 %s\n", d.Name, fmtTime(in.Point.Time), in.Point.Seq, strings.Join(res.Files, ", "), res.BLAKE3)
				return nil
			})
		},
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
