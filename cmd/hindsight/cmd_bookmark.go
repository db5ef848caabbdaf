package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/hindsight-cdp/hindsight/cdp"
	"github.com/hindsight-cdp/hindsight/cdp/quiesce"
	"github.com/hindsight-cdp/hindsight/cdp/timespec"
	"github.com/hindsight-cdp/hindsight/service"
	"github.com/hindsight-cdp/hindsight/store"
	"github.com/urfave/cli/v2"
)

func cmdBookmark() *cli.Command {
	return &cli.Command{
		Name:      "bookmark",
		Usage:     "name an instant of a DISK or GROUP (now, or a past one with --at)",
		ArgsUsage: "DISK|GROUP NAME",
		Description: `The bookmark shows in the mount as <disk or group>/bookmarks/NAME and its instant is
always listed. --at must lie within the history. A group's bookmark names all its disks
at one journal position. Works beside a running 'protect' or 'serve-nbd', which records it.

--consistency application quiesces first (the VCB pre-freeze/post-thaw convention). In
order: the postgres agent (a non-exclusive backup: it blocks nothing), the hooks in
--hooks DIR in name order (HINDSIGHT_PHASE=freeze), the exec agent, fsfreeze; then the
bookmark is placed at the newest durable write, and everything frozen is thawed in
reverse order, always: on a failed or hung freeze (killed at --timeout), on Ctrl-C or
SIGTERM. A failed freeze refuses the bookmark (exit 1); the report (hooks' output, times, PostgreSQL's backup_label) is kept
with the bookmark, shown in its info.json, and printed with --json.

  hindsight bookmark db-vm nightly --consistency application --hooks /etc/hindsight/hooks.d
  hindsight bookmark db-vm pre-upgrade --consistency application --agent postgres \
      --pg-dsn 'host=/run/postgresql' --freeze /srv/pgdata

--pin keeps the bookmark and its instant whatever the retention policy says ('hindsight
policy'); other bookmarks are kept as long as the policy's --bookmarks.

  hindsight bookmark web keep-forever --pin

List bookmarks with 'hindsight bookmarks DISK|GROUP'.`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "at", Value: "now", Usage: "the instant to name (RFC 3339, ISO basic, @unix, -15m); not with application"},
			&cli.StringFlag{Name: "consistency", Aliases: []string{"kind"}, Value: store.KindUser, Usage: "user, crash or application (quiesce first)"},
			&cli.StringFlag{Name: "hooks", Usage: "`DIR` of pre-freeze/post-thaw hook executables"},
			&cli.DurationFlag{Name: "timeout", Value: quiesce.DefaultTimeout, Usage: "bound on the freezes and the mark, and on each thaw"},
			&cli.StringSliceFlag{Name: "agent", Usage: "built-in agent: fsfreeze, postgres, exec (repeatable)"},
			&cli.StringFlag{Name: "pg-dsn", Usage: "PostgreSQL connection string for the postgres agent"},
			&cli.StringSliceFlag{Name: "freeze", Usage: "mounted filesystem `PATH` to fsfreeze (repeatable)"},
			&cli.StringFlag{Name: "exec-freeze", Usage: "shell command run to freeze (exec agent)"},
			&cli.StringFlag{Name: "exec-thaw", Usage: "shell command run to thaw (exec agent)"},
			&cli.BoolFlag{Name: "pin", Usage: "keep the bookmark whatever the retention policy says"},
		},
		Action: func(c *cli.Context) error {
			if err := needArgs(c, 2, "a DISK or GROUP and a NAME"); err != nil {
				return err
			}
			target, name := c.Args().Get(0), c.Args().Get(1)
			if err := store.ValidName("bookmark", name); err != nil {
				return err
			}
			kind := c.String("consistency")
			now := time.Now()
			at, err := timespec.Parse(c.String("at"), now)
			if err != nil {
				return usageErr(err)
			}
			if at.After(now) { // no such instant yet, as before the first point
				return notFound(fmt.Errorf("%w: --at %s", cdp.ErrFuture, fmtTime(at)))
			}
			if kind == store.KindApplication && c.IsSet("at") {
				return usagef("--consistency application marks the present: it cannot take --at")
			}
			return withWriter(c, func(j service.Writer) error {
				var bm store.Bookmark
				var err error
				if kind == store.KindApplication {
					bm, err = quiescedBookmark(c, j, target, name)
				} else {
					bm, err = j.Mark(c.Context, target, store.Bookmark{Name: name, Time: at, Kind: kind, Pinned: c.Bool("pin")})
				}
				if err != nil {
					return err
				}
				if c.Bool("json") {
					return printJSON(c, bm)
				}
				pinned := ""
				if bm.Pinned {
					pinned = ", pinned"
				}
				fmt.Fprintf(c.App.Writer, "%s: bookmark %s (%s%s) at %s (seq %d)\n", bm.Disk, bm.Name, bm.Kind, pinned, fmtTime(bm.Time), bm.Seq)
				return nil
			})
		},
	}
}

// quiescedBookmark freezes the target's applications and filesystems, finds
// the newest durable write, thaws, and records the bookmark there with the
// quiesce report. A refused freeze records nothing.
func quiescedBookmark(c *cli.Context, j service.Writer, target, name string) (store.Bookmark, error) {
	// Who the target is comes first: a typo must not freeze anything.
	head, err := j.Head(c.Context, target)
	if err != nil {
		return store.Bookmark{}, err
	}
	opts := quiesce.Options{
		HooksDir: c.String("hooks"), Agents: c.StringSlice("agent"), PGDSN: c.String("pg-dsn"),
		FreezePaths: c.StringSlice("freeze"), ExecFreeze: c.String("exec-freeze"), ExecThaw: c.String("exec-thaw"),
		Timeout: c.Duration("timeout"), Bookmark: name, Disks: head.Disks, Logf: logf(c),
	}
	if head.Group {
		opts.Group = target
	}
	runner, err := quiesce.New(opts)
	if err != nil {
		return store.Bookmark{}, usageErr(err)
	}
	var at time.Time
	rep, err := runner.Run(c.Context, func(ctx context.Context) error {
		h, err := j.Head(ctx, target)
		if err != nil {
			return err
		}
		at = time.Now().UTC()
		if h.Point.Time.After(at) { // the journal's clock was nudged past the wall clock
			at = h.Point.Time
		}
		return nil
	})
	report, _ := json.Marshal(rep)
	if rep == nil || !rep.Consistent {
		if c.Bool("json") && rep != nil {
			printJSONTo(os.Stderr, rep)
		}
		return store.Bookmark{}, fmt.Errorf("application bookmark %q of %q not taken: %w", name, target, err)
	}
	if err != nil && !errors.Is(err, quiesce.ErrThaw) {
		return store.Bookmark{}, err
	}
	// Recorded after the thaw, so the freeze lasts no longer than the agents
	// need; the instant named is the mark's.
	bm, merr := j.Mark(context.WithoutCancel(c.Context), target, store.Bookmark{
		Name: name, Time: at, Kind: store.KindApplication, Quiesce: report, Files: rep.Files, Pinned: c.Bool("pin"),
	})
	if merr != nil {
		return store.Bookmark{}, merr
	}
	if err != nil { // a thaw failed: the bookmark stands, the error is reported
		fmt.Fprintf(c.App.ErrWriter, "hindsight: bookmark %s taken, but %v\n", name, err)
	}
	return bm, nil
}
