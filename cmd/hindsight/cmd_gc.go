package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hindsight-cdp/hindsight/service"
	"github.com/hindsight-cdp/hindsight/store"
	"github.com/urfave/cli/v2"
)

// gcOptions is 'gc'.
type gcOptions struct {
	req  service.GCRequest
	json bool
}

func cmdGC() *cli.Command {
	return &cli.Command{
		Name:  "gc",
		Usage: "give back the space of content no retained instant references any more",
		Description: `After 'prune', the content only removed points referenced still lies in the
repository's segment files. gc frees it: a segment with more than --max-unused of its
bytes unreferenced is rewritten (its live content copied out) or dropped, and the space
goes back to the filesystem. It runs beside protection, readers of old instants,
clones and instant VMs: nothing they still need is freed. Interrupted (Ctrl-C, kill -9)
it leaves a valid repository; the next gc goes on.

  hindsight prune --all && hindsight gc
  hindsight gc --dry-run --json          # what would be freed
  hindsight gc --max-unused 25%          # rewrite fewer segments: less copying

Works beside a running service, which does the work (it also runs gc after each
scheduled prune: 'serve --prune-every'). On a terminal, a progress bar shows the
segments processed.`,
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "dry-run", Aliases: []string{"n"}, Usage: "report what would be freed; change nothing"},
			&cli.StringFlag{Name: "max-unused", Value: "10%", Usage: "rewrite a segment once this `FRACTION` of it is unreferenced (10%, 0.25)"},
		},
		Action: func(c *cli.Context) error {
			if err := needArgs(c, 0, "no arguments"); err != nil {
				return err
			}
			f, err := parseFraction(c.String("max-unused"))
			if err != nil {
				return usagef("--max-unused: %v", err)
			}
			opts := gcOptions{json: c.Bool("json"), req: service.GCRequest{MaxUnused: f, DryRun: c.Bool("dry-run")}}
			return withWriter(c, func(w service.Writer) error { return runGC(c.Context, w, c, opts) })
		},
	}
}

func runGC(ctx context.Context, w service.Writer, c *cli.Context, opts gcOptions) error {
	var (
		once   sync.Once
		update func(int64)
		finish = func() {}
	)
	report := func(done, total int64) {
		once.Do(func() { update, finish = progress(c, "gc", total) })
		if update != nil {
			update(done)
		}
	}
	start := time.Now()
	res, err := w.Collect(ctx, opts.req, report)
	finish()
	if err != nil {
		return err
	}
	if res.Duration == 0 {
		res.Duration = time.Since(start)
	}
	if opts.json {
		return printJSON(c, struct {
			store.GCResult
			DryRun  bool    `json:"dry_run"`
			Seconds float64 `json:"seconds"`
		}{res, opts.req.DryRun, res.Duration.Seconds()})
	}
	out := c.App.Writer
	if opts.req.DryRun {
		fmt.Fprintf(out, "dry run: %d of %d unreferenced contents would be freed (%s); %d segments would be rewritten\n",
			res.Freed, res.Candidates, humanBytes(res.FreedBytes), res.Rewritten)
		return nil
	}
	fmt.Fprintf(out, "freed %d of %d unreferenced contents (%s); %d segments rewritten, %s copied; %s given back to the filesystem in %s",
		res.Freed, res.Candidates, humanBytes(res.FreedBytes), res.Rewritten, humanBytes(res.Copied), humanBytes(res.Reclaimed), res.Duration.Round(time.Millisecond))
	if s := res.Duration.Seconds(); s > 0 && res.Reclaimed > 0 {
		fmt.Fprintf(out, " (%.1f MB/s)", float64(res.Reclaimed)/1e6/s)
	}
	fmt.Fprintln(out)
	if res.Held > 0 {
		fmt.Fprintf(out, "%d segments held for readers of older views: the next gc frees them\n", res.Held)
	}
	return nil
}

// parseFraction reads "10%" or "0.1" as 0.1: a fraction in [0, 1).
func parseFraction(s string) (float64, error) {
	pct := strings.HasSuffix(s, "%")
	f, err := strconv.ParseFloat(strings.TrimSuffix(s, "%"), 64)
	if err != nil {
		return 0, fmt.Errorf("%q is not a fraction (10%% or 0.1)", s)
	}
	if pct {
		f /= 100
	}
	if f <= 0 || f >= 1 || f != f {
		return 0, fmt.Errorf("%q is not between 0%% and 100%% (exclusive)", s)
	}
	return f, nil
}
