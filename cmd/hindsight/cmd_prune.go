package main

import (
	"context"
	"fmt"
	"time"

	"github.com/hindsight-cdp/hindsight/cdp/retention"
	"github.com/hindsight-cdp/hindsight/cdp/timespec"
	"github.com/hindsight-cdp/hindsight/service"
	"github.com/urfave/cli/v2"
)

// pruneOptions is 'prune'.
type pruneOptions struct {
	req  service.PruneRequest
	json bool
}

func cmdPrune() *cli.Command {
	return &cli.Command{
		Name:      "prune",
		Usage:     "thin a DISK's or GROUP's history to its retention policy (--all: every policy)",
		ArgsUsage: "DISK|GROUP",
		Description: `Removes the points the policy ('hindsight policy') does not keep, as of now, and the
bookmarks older than it keeps; the versions of each block between two kept points are
collapsed into the newest. Every kept instant reads as before; a removed point's
instants then show the kept point at or before them. The content no longer referenced
is given back to the filesystem by 'hindsight gc' (the service runs both on its own:
'serve --prune-every').

--dry-run lists what would go and changes nothing. --now evaluates the policy as of
another instant (as --at takes it: RFC 3339, @unix, -1d). It works beside a running
service, which does the pruning; protection goes on meanwhile.

  hindsight prune web --dry-run          # the instants that would stop existing
  hindsight prune web --json
  hindsight prune --all                  # every disk and group that has a policy

Exit status: 0 when all went well, 3 when the name or its policy does not exist, 1
when a prune failed (with --all: any of them; the others still ran).`,
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "dry-run", Aliases: []string{"n"}, Usage: "report what would be removed; change nothing"},
			&cli.BoolFlag{Name: "all", Usage: "prune every disk and group that has a policy"},
			&cli.StringFlag{Name: "now", Usage: "evaluate the policy as of this `INSTANT` (RFC 3339, ISO basic, @unix, -1d)"},
		},
		Action: func(c *cli.Context) error {
			opts := pruneOptions{json: c.Bool("json"), req: service.PruneRequest{All: c.Bool("all"), DryRun: c.Bool("dry-run")}}
			switch {
			case opts.req.All && c.NArg() != 0:
				return usagef("prune --all takes no DISK or GROUP")
			case !opts.req.All:
				if err := needArgs(c, 1, "a DISK or GROUP (or --all)"); err != nil {
					return err
				}
				opts.req.Target = c.Args().First()
			}
			if s := c.String("now"); s != "" {
				now, err := timespec.Parse(s, time.Now())
				if err != nil {
					return usageErr(err)
				}
				opts.req.Now = now
			}
			return withWriter(c, func(w service.Writer) error { return runPrune(c.Context, w, c, opts) })
		},
	}
}

func runPrune(ctx context.Context, w service.Writer, c *cli.Context, opts pruneOptions) error {
	reps, err := w.Prune(ctx, opts.req)
	if err != nil {
		return err
	}
	if opts.json {
		var out any = reps
		if !opts.req.All {
			out = reps[0]
		}
		if err := printJSON(c, out); err != nil {
			return err
		}
	} else {
		for _, rep := range reps {
			printPrune(c, rep)
		}
		if opts.req.All && len(reps) == 0 {
			fmt.Fprintln(c.App.Writer, "no policies: nothing to prune (set one with 'hindsight policy set NAME --daily 30d ...')")
		}
	}
	failed := 0
	for _, rep := range reps {
		if rep.Error != "" {
			failed++
		}
	}
	if failed > 0 {
		return fmt.Errorf("prune: %d of %d failed", failed, len(reps))
	}
	return nil
}

func printPrune(c *cli.Context, rep retention.Report) {
	w := c.App.Writer
	if rep.Error != "" {
		fmt.Fprintf(c.App.ErrWriter, "hindsight: %s: %s\n", rep.Name, rep.Error)
		return
	}
	verb, freed := "removed", "freed for gc"
	if rep.DryRun {
		verb, freed = "would remove", "would be freed for gc"
	}
	fmt.Fprintf(w, "%s: kept %d points, %s %d", rep.Name, rep.Kept, verb, len(rep.Removed))
	if len(rep.Removed) > 0 {
		first, last := rep.Removed[0].Time, rep.Removed[0].Time
		for _, p := range rep.Removed {
			if p.Time.Before(first) {
				first = p.Time
			}
			if p.Time.After(last) {
				last = p.Time
			}
		}
		fmt.Fprintf(w, " (%s to %s)", timespec.Format(first), timespec.Format(last))
	}
	if n := len(rep.DroppedBookmarks); n > 0 {
		fmt.Fprintf(w, " and %d bookmarks (%s)", n, joinMax(rep.DroppedBookmarks, 5))
	}
	fmt.Fprintf(w, "; %d block versions collapsed, %s %s\n", rep.Versions, humanBytes(rep.FreedBytes), freed)
}

// joinMax joins at most n names, saying how many more there are.
func joinMax(names []string, n int) string {
	s := ""
	for i, name := range names {
		if i == n {
			return fmt.Sprintf("%s and %d more", s, len(names)-n)
		}
		if i > 0 {
			s += ", "
		}
		s += name
	}
	return s
}
