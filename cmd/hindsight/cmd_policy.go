package main

import (
	"context"
	"fmt"

	"github.com/hindsight-cdp/hindsight/cdp/retention"
	"github.com/hindsight-cdp/hindsight/service"
	"github.com/hindsight-cdp/hindsight/store"
	"github.com/urfave/cli/v2"
)

const policyHelp = `A policy says which points of a disk's history (a group's: its disks are pruned as
one) 'prune' keeps, as of now:
  --keep-all SPAN   every point this young: every instant in it stays exact
  --hourly SPAN     within SPAN, the newest point of each hour (UTC)
  --daily SPAN      within SPAN, the newest point of each day (UTC)
  --weekly SPAN     within SPAN, the newest point of each ISO week (Monday to Sunday, UTC)
  --monthly SPAN    within SPAN, the newest point of each calendar month
  --bookmarks SPAN  bookmarks this young are kept; older ones are removed with their
                    points (default: as long as the longest window)
The newest point, pinned bookmarks ('bookmark --pin') and the points clones were made
from are always kept. An older instant then shows the kept point at or before it.

A SPAN is a number and a unit: min (minutes), h, d, w, m (MONTHS, not minutes), y,
combined as 1y6m; 0 is none.`

func cmdPolicy() *cli.Command {
	return &cli.Command{
		Name:  "policy",
		Usage: "retention policies: which points of a disk's history 'prune' keeps",
		Description: policyHelp + `

  hindsight policy set web --keep-all 24h --hourly 7d --daily 30d --weekly 26w --monthly 24m
  hindsight policy show web --json
  hindsight prune web --dry-run        # what the policy would remove now`,
		Subcommands: []*cli.Command{cmdPolicySet(), cmdPolicyShow(), cmdPolicyUnset()},
	}
}

// policySetOptions is 'policy set': a target and the whole policy.
type policySetOptions struct {
	target string
	policy retention.Policy
	json   bool
}

func cmdPolicySet() *cli.Command {
	span := func(name, usage string) cli.Flag { return &cli.StringFlag{Name: name, Usage: usage} }
	return &cli.Command{
		Name:      "set",
		Usage:     "record the retention policy of a DISK or GROUP (replacing the whole policy)",
		ArgsUsage: "DISK|GROUP",
		Description: policyHelp + `

The policy given replaces the one recorded: windows not given keep nothing. A disk of a
group names its group. Works beside a running service, which records it; the service
applies every policy on its own ('serve --prune-every').

  hindsight policy set web --keep-all 24h --hourly 7d --daily 30d --weekly 26w --monthly 24m
  hindsight policy set db-vm --keep-all 2d --daily 90d --bookmarks 1y`,
		Flags: []cli.Flag{
			span("keep-all", "keep every point of the last `SPAN` (36h, 30d, 26w, 24m = 24 months, 2y, 1y6m)"),
			span("hourly", "keep the newest point of each hour of the last `SPAN`"),
			span("daily", "keep the newest point of each day of the last `SPAN`"),
			span("weekly", "keep the newest point of each ISO week of the last `SPAN`"),
			span("monthly", "keep the newest point of each month of the last `SPAN`"),
			span("bookmarks", "keep the bookmarks of the last `SPAN` (default: the longest window)"),
		},
		Action: func(c *cli.Context) error {
			if err := needArgs(c, 1, "a DISK or GROUP"); err != nil {
				return err
			}
			opts := policySetOptions{target: c.Args().First(), json: c.Bool("json")}
			for _, f := range []struct {
				flag string
				dst  *retention.Span
			}{
				{"keep-all", &opts.policy.KeepAll}, {"hourly", &opts.policy.Hourly}, {"daily", &opts.policy.Daily},
				{"weekly", &opts.policy.Weekly}, {"monthly", &opts.policy.Monthly}, {"bookmarks", &opts.policy.Bookmarks},
			} {
				if !c.IsSet(f.flag) {
					continue
				}
				s, err := retention.ParseSpan(c.String(f.flag))
				if err != nil {
					return usagef("--%s: %v", f.flag, err)
				}
				*f.dst = s
			}
			if err := opts.policy.Validate(); err != nil {
				return usageErr(err)
			}
			return withWriter(c, func(w service.Writer) error { return runPolicySet(c.Context, w, c, opts) })
		},
	}
}

func runPolicySet(ctx context.Context, w service.Writer, c *cli.Context, opts policySetOptions) error {
	e, err := w.SetPolicy(ctx, opts.target, &opts.policy)
	if err != nil {
		return err
	}
	if opts.json {
		return printJSON(c, e)
	}
	fmt.Fprintf(c.App.Writer, "%s %s: %s\n", targetKind(e.Target), e.Name, e.Policy)
	return nil
}

// policyShowOptions is 'policy show': one target, or every policy.
type policyShowOptions struct {
	target string // "": all
	json   bool
}

func cmdPolicyShow() *cli.Command {
	return &cli.Command{
		Name:      "show",
		Usage:     "print the retention policy of a DISK or GROUP, or every policy",
		ArgsUsage: "[DISK|GROUP]",
		Description: `Without a name, lists every disk and group that has a policy. --json prints the
policy (or a list of them) with each span as its string:

  hindsight policy show web --json
  {"name":"web","timeline":1,"group":false,"policy":{"keep_all":"24h","hourly":"7d",...}}

A name without a policy exits 3 (not found).`,
		Action: func(c *cli.Context) error {
			if c.NArg() > 1 {
				return usagef("policy show takes at most one DISK or GROUP; see 'hindsight policy show --help'")
			}
			opts := policyShowOptions{target: c.Args().First(), json: c.Bool("json")}
			return withRepo(c, true, func(r *store.Repo) error { return runPolicyShow(c, r, opts) })
		},
	}
}

func runPolicyShow(c *cli.Context, r *store.Repo, opts policyShowOptions) error {
	var entries []retention.Entry
	if opts.target != "" {
		t, err := retention.Resolve(r, opts.target)
		if err != nil {
			return err
		}
		p, err := retention.PolicyOf(r, t)
		if err != nil {
			return err
		}
		entries = []retention.Entry{{Target: t, Policy: p}}
		if opts.json {
			return printJSON(c, entries[0])
		}
	} else {
		var err error
		if entries, err = retention.List(r); err != nil {
			return err
		}
		if opts.json {
			return printJSON(c, entries)
		}
		if len(entries) == 0 {
			fmt.Fprintln(c.App.Writer, "no policies (set one with 'hindsight policy set NAME --daily 30d ...')")
			return nil
		}
	}
	rows := [][]string{}
	for _, e := range entries {
		p := e.Policy
		bm := p.Bookmarks.String()
		if p.Bookmarks.IsZero() {
			bm = "(longest)"
		}
		rows = append(rows, []string{e.Name, targetKind(e.Target), p.KeepAll.String(), p.Hourly.String(), p.Daily.String(), p.Weekly.String(), p.Monthly.String(), bm})
	}
	return table(c.App.Writer, []string{"NAME", "KIND", "KEEP-ALL", "HOURLY", "DAILY", "WEEKLY", "MONTHLY", "BOOKMARKS"}, rows)
}

func cmdPolicyUnset() *cli.Command {
	return &cli.Command{
		Name:      "unset",
		Usage:     "remove the retention policy of a DISK or GROUP: prune then keeps everything",
		ArgsUsage: "DISK|GROUP",
		Description: `Removes the policy; nothing already pruned comes back. A name without a policy
exits 3 (not found).

  hindsight policy unset web`,
		Action: func(c *cli.Context) error {
			if err := needArgs(c, 1, "a DISK or GROUP"); err != nil {
				return err
			}
			target, asJSON := c.Args().First(), c.Bool("json")
			return withWriter(c, func(w service.Writer) error {
				e, err := w.SetPolicy(c.Context, target, nil)
				if err != nil {
					return err
				}
				if asJSON {
					return printJSON(c, e)
				}
				fmt.Fprintf(c.App.Writer, "%s %s: policy removed (was %s)\n", targetKind(e.Target), e.Name, e.Policy)
				return nil
			})
		},
	}
}

// targetKind says "disk" or "group".
func targetKind(t retention.Target) string {
	if t.Group {
		return "group"
	}
	return "disk"
}
