package main

import (
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/hindsight-cdp/hindsight/store"
	"github.com/urfave/cli/v2"
)

func cmdVerify() *cli.Command {
	return &cli.Command{
		Name:      "verify",
		Usage:     "check the repository: index, segments and (--full) every stored block",
		ArgsUsage: "[DISK|GROUP]",
		Description: `Checks that every segment file the index references is there and long enough,
that every block version's content lies inside one, that the index's by-block and
by-time orders agree and that each timeline's points are in order. --full also
re-reads every stored block and checks its checksum and BLAKE3 hash (all cores,
large sequential reads). It reads the newest published view, so it runs beside
a writer ('protect', 'serve-nbd') and beside readers.

Each problem names what it affects: the disk, its block ranges, the journal
positions (from_seq..to_seq; to_seq 0 is up to the newest) and the times of the
instants that show damaged content. With DISK or GROUP, only problems of those
disks are listed (the index is still checked whole).

--repair rebuilds a damaged index from the repository's own logs (the segments'
frames and records.log hold everything acknowledged), keeping the damaged one
as db.damaged-TIME; it needs the writer lock, so stop protect or serve-nbd
first. Damaged content cannot be rebuilt from the index: verify lists the
instants it affects, which need another copy.

  hindsight --repo R verify                 # structure: seconds
  hindsight --repo R verify --full --json   # every block re-hashed

Exit status: 0 when nothing is wrong, 1 when anything is (or the check failed).`,
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "full", Usage: "also re-read and re-hash every stored block"},
			&cli.BoolFlag{Name: "repair", Usage: "rebuild a damaged index from the repository's logs (needs the writer: stop protect first); " +
				"the damaged index is kept as db.damaged-TIME"},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() > 1 {
				return usagef("verify takes at most one DISK or GROUP; see 'hindsight verify --help'")
			}
			rep, dir, err := runVerify(c)
			if c.Bool("repair") && (errors.Is(err, store.ErrCorrupt) || indexProblem(rep)) {
				aside, rerr := store.RebuildIndex(dir, store.Options{Notef: notef})
				if rerr != nil {
					return fmt.Errorf("repair: %w", rerr)
				}
				fmt.Fprintf(c.App.ErrWriter, "repair: rebuilt the index from the repository's logs; the damaged index is kept in %s\n", aside)
				rep, _, err = runVerify(c)
			}
			if err != nil {
				return err
			}
			if c.Bool("json") {
				if err := printJSON(c, rep); err != nil {
					return err
				}
			} else {
				printVerify(c, rep, c.Bool("full"))
			}
			if n := len(rep.Problems); n > 0 {
				if c.Bool("repair") {
					return fmt.Errorf("verify: %d problem(s) remain in %s: damaged content cannot be rebuilt from the index; "+
						"the instants listed above need another copy (a replica or a backup)", n, dir)
				}
				return fmt.Errorf("verify: %d problem(s) found in %s", n, dir)
			}
			return nil
		},
	}
}

// runVerify checks the repository's newest view.
func runVerify(c *cli.Context) (rep *store.VerifyReport, dir string, err error) {
	dir, err = repoDir(c)
	if err != nil {
		return nil, "", err
	}
	err = withRepo(c, true, func(r *store.Repo) error {
		opt := store.VerifyOptions{Full: c.Bool("full")}
		if name := c.Args().First(); name != "" {
			_, disks, err := r.Members(name)
			if err != nil {
				return err
			}
			opt.Disks = disks
		}
		var finish func()
		if opt.Full {
			var once sync.Once
			var update func(int64)
			opt.Progress = func(done, total int64) {
				once.Do(func() { update, finish = progress(c, "verifying", total) })
				if update != nil {
					update(done)
				}
			}
		}
		rep, err = r.Verify(c.Context, opt)
		if finish != nil {
			finish()
		}
		return err
	})
	return rep, dir, err
}

func indexProblem(rep *store.VerifyReport) bool {
	if rep == nil {
		return false
	}
	for _, p := range rep.Problems {
		if p.Kind == "index" {
			return true
		}
	}
	return false
}

func printVerify(c *cli.Context, rep *store.VerifyReport, full bool) {
	w := c.App.Writer
	fmt.Fprintf(w, "checked     %d segments, %d block versions, %d points, head %d\n", rep.Segments, rep.Versions, rep.Points, rep.Head)
	if full {
		fmt.Fprintf(w, "re-hashed   %s of stored content\n", humanBytes(rep.ContentBytes))
	}
	if len(rep.Problems) == 0 {
		fmt.Fprintln(w, "no problems found")
		return
	}
	for _, p := range rep.Problems {
		fmt.Fprintf(w, "\n%s: %s\n", strings.ToUpper(p.Kind), p.Detail)
		if p.Disk == "" {
			continue
		}
		var rs []string
		for _, b := range p.Blocks {
			if b.First == b.Last {
				rs = append(rs, fmt.Sprint(b.First))
			} else {
				rs = append(rs, fmt.Sprintf("%d-%d", b.First, b.Last))
			}
		}
		fmt.Fprintf(w, "  disk %s, blocks %s\n", p.Disk, strings.Join(rs, ","))
		to, until := "the newest", "now"
		if p.ToSeq != 0 {
			to = fmt.Sprint(p.ToSeq)
		}
		if p.Until != nil {
			until = fmtTime(*p.Until)
		}
		from := "?"
		if p.From != nil {
			from = fmtTime(*p.From)
		}
		fmt.Fprintf(w, "  instants at positions %d to %s (%s until %s) show the damaged content\n", p.FromSeq, to, from, until)
	}
}
