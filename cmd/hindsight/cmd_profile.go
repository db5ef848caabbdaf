package main

import (
	"fmt"

	"github.com/hindsight-cdp/hindsight/store"
	"github.com/hindsight-cdp/hindsight/vsphere"
	"github.com/urfave/cli/v2"
)

// profileFlags record the VM a disk or group belongs to: the defaults of
// 'vsphere register' and 'vsphere instant' (the agentless source records
// them from the VM it protects).
func profileFlags() []cli.Flag {
	return []cli.Flag{
		&cli.Int64Flag{Name: "memory", Usage: "the VM's memory in MiB"},
		&cli.IntFlag{Name: "cpus", Usage: "the VM's virtual CPUs"},
		&cli.StringFlag{Name: "guest-id", Usage: "the VM's guest OS identifier (e.g. ubuntu64Guest)"},
	}
}

var controllerFlag = &cli.StringFlag{Name: "controller", Usage: "controller `KIND` the disk hangs on in its VM: lsilogic, lsisas, buslogic, pvscsi, sata, nvme"}

// setProfile records the profile flags given, if any.
func setProfile(c *cli.Context, r *store.Repo, name string) error {
	if !c.IsSet("memory") && !c.IsSet("cpus") && !c.IsSet("guest-id") {
		return nil
	}
	if c.Int64("memory") < 0 || c.Int("cpus") < 0 {
		return usagef("--memory and --cpus must be positive")
	}
	return r.SetProfile(name, store.Profile{MemoryMB: c.Int64("memory"), CPUs: int32(c.Int("cpus")), GuestID: c.String("guest-id")})
}

// setController records --controller, if given.
func setController(c *cli.Context, r *store.Repo, disk string) error {
	if !c.IsSet("controller") {
		return nil
	}
	if err := vsphere.ValidController(c.String("controller")); err != nil {
		return usageErr(err)
	}
	return r.SetController(disk, c.String("controller"))
}

// cmdSet is 'disk set' and 'group set': what the VM looks like.
func cmdSet(kind string, flags []cli.Flag, apply func(c *cli.Context, r *store.Repo, name string) error) *cli.Command {
	return &cli.Command{
		Name:      "set",
		Usage:     "record the VM the " + kind + " belongs to (used by 'vsphere register' and 'vsphere instant')",
		ArgsUsage: "NAME",
		Flags:     flags,
		Action: func(c *cli.Context) error {
			if err := needArgs(c, 1, "a "+kind+" NAME"); err != nil {
				return err
			}
			return withRepo(c, false, func(r *store.Repo) error {
				name := c.Args().First()
				if err := apply(c, r, name); err != nil {
					return err
				}
				if c.Bool("json") {
					if d, err := r.Disk(name); err == nil {
						return printJSON(c, d)
					}
					g, err := r.Group(name)
					if err != nil {
						return err
					}
					return printJSON(c, g)
				}
				fmt.Fprintf(c.App.Writer, "updated %s %s\n", kind, name)
				return nil
			})
		},
	}
}
