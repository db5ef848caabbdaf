package main

import (
	"fmt"
	"github.com/hindsight-cdp/hindsight/service"
	"strings"

	"github.com/hindsight-cdp/hindsight/store"
	"github.com/urfave/cli/v2"
)

func cmdGroup() *cli.Command {
	return &cli.Command{
		Name:  "group",
		Usage: "consistency groups: the disks of one server on one timeline",
		Description: `The disks of a group share one journal sequence and one clock, so every instant
of the group shows all its disks at the same position (write-order fidelity across
disks): a write acknowledged on one disk before a write on another is never missing
from an instant that holds the later one. The mount shows GROUP/ with every disk's
images and a .vmx naming them all; bookmarks of the group name all its disks.

Disks join a group only while empty (at creation, or before their first import or
write): their history would otherwise lie on another timeline.

  hindsight disk create web-os --size 20G
  hindsight disk create web-data --size 100G
  hindsight group create db-vm web-os web-data
  hindsight disk create web-logs --size 10G --group db-vm
  hindsight serve-nbd db-vm            # every disk of the group, one timeline`,
		Subcommands: []*cli.Command{
			cmdSet("group", profileFlags(), func(c *cli.Context, r *store.Repo, name string) error {
				if _, err := r.Group(name); err != nil {
					return err
				}
				return setProfile(c, r, name)
			}),
			{
				Name:      "create",
				Usage:     "make a group of empty disks",
				ArgsUsage: "GROUP [DISK...]",
				Action: func(c *cli.Context) error {
					if c.NArg() < 1 {
						return usagef("group create takes a GROUP name and its DISKs; see 'hindsight group create --help'")
					}
					return withWriter(c, func(w service.Writer) error {
						g, err := w.CreateGroup(c.Context, c.Args().First(), c.Args().Tail())
						if err != nil {
							return err
						}
						return printGroup(c, g, "created")
					})
				},
			},
			{
				Name:      "add",
				Usage:     "add an empty disk to a group",
				ArgsUsage: "GROUP DISK",
				Action: func(c *cli.Context) error {
					if err := needArgs(c, 2, "a GROUP and a DISK"); err != nil {
						return err
					}
					return withWriter(c, func(w service.Writer) error {
						g, err := w.JoinGroup(c.Context, c.Args().Get(0), c.Args().Get(1))
						if err != nil {
							return err
						}
						return printGroup(c, g, "updated")
					})
				},
			},
			{
				Name:  "list",
				Usage: "list groups and their disks",
				Action: func(c *cli.Context) error {
					if err := needArgs(c, 0, "no arguments"); err != nil {
						return err
					}
					return withRepo(c, true, func(r *store.Repo) error {
						gs, err := r.Groups()
						if err != nil {
							return err
						}
						if c.Bool("json") {
							if gs == nil {
								gs = []store.Group{}
							}
							return printJSON(c, gs)
						}
						for _, g := range gs {
							fmt.Fprintf(c.App.Writer, "%-20s %s\n", g.Name, strings.Join(g.Disks, " "))
						}
						return nil
					})
				},
			},
		},
	}
}

func printGroup(c *cli.Context, g store.Group, what string) error {
	if c.Bool("json") {
		return printJSON(c, g)
	}
	fmt.Fprintf(c.App.Writer, "%s group %s: %s\n", what, g.Name, strings.Join(g.Disks, " "))
	return nil
}
