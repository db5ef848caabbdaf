package main

import (
	"fmt"
	"github.com/hindsight-cdp/hindsight/service"
	"strconv"

	"github.com/hindsight-cdp/hindsight/store"
	"github.com/hindsight-cdp/hindsight/vsphere"
	"github.com/urfave/cli/v2"
)

func cmdDisk() *cli.Command {
	return &cli.Command{
		Name:  "disk",
		Usage: "create and list protected disks",
		Subcommands: []*cli.Command{
			cmdSet("disk", append([]cli.Flag{controllerFlag}, profileFlags()...), func(c *cli.Context, r *store.Repo, name string) error {
				if _, err := r.Disk(name); err != nil {
					return err
				}
				if err := setController(c, r, name); err != nil {
					return err
				}
				return setProfile(c, r, name)
			}),
			{
				Name:      "create",
				Usage:     "add an empty disk (all zeros until its first import or write)",
				ArgsUsage: "NAME",
				Description: `NAME: letters, digits, '.', '_' and '-', starting with a letter or digit.
The size is fixed; give it with binary units (2G = 2 GiB) and as a multiple of the block size.`,
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "size", Required: true, Usage: "disk size, e.g. 2G, 512M, 10737418240"},
					&cli.StringFlag{Name: "block-size", Value: "4K", Usage: "journal block size, a power of two from 512 to 1M"},
					&cli.StringFlag{Name: "group", Usage: "put the new disk in consistency `GROUP` (see 'hindsight group --help')"},
					controllerFlag,
				},
				Action: func(c *cli.Context) error {
					if err := needArgs(c, 1, "a disk NAME"); err != nil {
						return err
					}
					if c.IsSet("controller") {
						if err := vsphere.ValidController(c.String("controller")); err != nil {
							return usageErr(err)
						}
					}
					size, err := parseSize(c.String("size"))
					if err != nil {
						return err
					}
					bs, err := parseSize(c.String("block-size"))
					if err != nil {
						return err
					}
					if err := checkDiskSize(size, bs); err != nil {
						return err
					}
					return withWriter(c, func(w service.Writer) error {
						d, err := w.CreateDisk(c.Context, service.DiskRequest{Name: c.Args().First(), Size: size, BlockSize: int(bs),
							Group: c.String("group"), Controller: c.String("controller")})
						if err != nil {
							return err
						}
						if c.Bool("json") {
							return printJSON(c, d)
						}
						fmt.Fprintf(c.App.Writer, "created disk %s: %s, block size %d\n", d.Name, fmtSize(d.Size), d.BlockSize)
						return nil
					})
				},
			},
			{
				Name:  "list",
				Usage: "list disks with their size and newest point",
				Action: func(c *cli.Context) error {
					if err := needArgs(c, 0, "no arguments"); err != nil {
						return err
					}
					return withRepo(c, true, func(r *store.Repo) error {
						ds, err := r.Disks()
						if err != nil {
							return err
						}
						type row struct {
							store.Disk
							Latest *store.Point `json:"latest"`
						}
						rows := make([]row, 0, len(ds))
						var text [][]string
						for _, d := range ds {
							rw := row{Disk: d}
							latest := "-"
							if p, err := r.LastPoint(d.Timeline); err == nil {
								rw.Latest = &p
								latest = fmtTime(p.Time)
							}
							rows = append(rows, rw)
							text = append(text, []string{d.Name, humanBytes(d.Size), strconv.Itoa(d.BlockSize), latest})
						}
						if c.Bool("json") {
							return printJSON(c, rows)
						}
						return table(c.App.Writer, []string{"DISK", "SIZE", "BLOCK", "LATEST"}, text)
					})
				},
			},
		},
	}
}
