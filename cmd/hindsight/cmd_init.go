package main

import (
	"fmt"

	"github.com/hindsight-cdp/hindsight/store"
	"github.com/urfave/cli/v2"
)

func cmdInit() *cli.Command {
	return &cli.Command{
		Name:  "init",
		Usage: "create an empty repository at --repo",
		Description: `Creates the repository directory (owner-only permissions) with an empty journal.
Put it on a filesystem with room for the changed blocks of every protected disk.`,
		Action: func(c *cli.Context) error {
			if err := needArgs(c, 0, "no arguments"); err != nil {
				return err
			}
			dir, err := repoDir(c)
			if err != nil {
				return err
			}
			if err := store.Init(dir); err != nil {
				return err
			}
			if c.Bool("json") {
				return printJSON(c, map[string]string{"repo": dir})
			}
			fmt.Fprintf(c.App.Writer, "initialized repository %s\n", dir)
			return nil
		},
	}
}
