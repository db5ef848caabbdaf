package main

import (
	"fmt"
	"strconv"

	"github.com/hindsight-cdp/hindsight/recovery"
	"github.com/urfave/cli/v2"
)

func cmdDiff() *cli.Command {
	return &cli.Command{
		Name:      "diff",
		Usage:     "list the files added, removed and changed in DISK between two instants",
		ArgsUsage: "DISK",
		Description: `Both instants are mounted read-only (as 'browse' does) and compared partition
by partition. A file changed when its size or its content (BLAKE3) differs, a
symlink when its target does, any entry when its type does. Paths are as the
machine saw them (from its /etc/fstab), or pN:/path.`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "from", Required: true, Usage: "older instant"},
			&cli.StringFlag{Name: "to", Value: "latest", Usage: "newer instant"},
		},
		Action: func(c *cli.Context) error {
			if err := needArgs(c, 1, "a DISK"); err != nil {
				return err
			}
			return withInstant(c, c.String("from"), "", func(a *recovery.Instant) error {
				return withInstant(c, c.String("to"), "", func(b *recovery.Instant) error {
					changes, err := recovery.Diff(c.Context, a, b)
					if err != nil {
						return err
					}
					if c.Bool("json") {
						return printJSON(c, struct {
							From    any               `json:"from"`
							To      any               `json:"to"`
							Changes []recovery.Change `json:"changes"`
						}{a.Point, b.Point, nonNil(changes)})
					}
					rows := make([][]string, 0, len(changes))
					for _, ch := range changes {
						rows = append(rows, []string{ch.Change, ch.Type, size(ch.SizeFrom), size(ch.SizeTo), ch.Path})
					}
					if err := table(c.App.Writer, []string{"CHANGE", "TYPE", "FROM", "TO", "PATH"}, rows); err != nil {
						return err
					}
					fmt.Fprintf(c.App.ErrWriter, "%d changes from %s to %s\n", len(changes), fmtTime(a.Point.Time), fmtTime(b.Point.Time))
					return nil
				})
			})
		},
	}
}

func size(n *int64) string {
	if n == nil {
		return "-"
	}
	return strconv.FormatInt(*n, 10)
}

func nonNil(cs []recovery.Change) []recovery.Change {
	if cs == nil {
		return []recovery.Change{}
	}
	return cs
}
