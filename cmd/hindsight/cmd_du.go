package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/hindsight-cdp/hindsight/cdp/timespec"
	"github.com/hindsight-cdp/hindsight/store"
	"github.com/urfave/cli/v2"
)

func cmdDu() *cli.Command {
	return &cli.Command{
		Name:      "du",
		Usage:     "show where the repository's bytes go: by disk, by age, dedupe, compression, files",
		ArgsUsage: "[DISK|GROUP]",
		Description: `Reads the newest published view (it runs beside 'protect' and 'serve-nbd') in one
pass over the index, then measures the repository's files as du does. DISK or
GROUP limits the per-disk part; the repository's figures stay whole.

  hindsight --repo R du
  hindsight --repo R du web --bands 1h,1d,30d --json

Per disk: VERSIONS is the block versions ever journaled that are not all zeros
(ZERO those that are: they store nothing), LOGICAL what they would take with no
dedupe or compression (versions × block size), CONTENT the distinct content they
reference and STORED its size as stored (content shared with other disks counts
for each), EXCLUSIVE the part no other disk references. The age table splits
LOGICAL by the age of the point that wrote each version.

--json prints every figure (bytes are integers, times RFC 3339):
  at, head               the instant ages are measured from; the journal position read
  disks[]                name, id, timeline, group, block_size,
                         versions, zero_versions, logical_bytes,
                         content, stored_bytes, exclusive_bytes,
                         ages[]: label, max_age_seconds (0: the last band, all older),
                                 versions, zero_versions, logical_bytes
  versions, zero_versions, logical_bytes   the same, summed over every disk
  content                count, plain_bytes, stored_bytes: the distinct content
                         the versions reference
  unreferenced           count, stored_bytes: content no version references any
                         more (a deleted disk's, pruned history's): what gc frees
  dedupe_ratio           logical_bytes ÷ content.plain_bytes
  compression_ratio      content.plain_bytes ÷ content.stored_bytes (0: no content)
  files                  segments, index (db/), records (records.log), views,
                         other, total: allocated bytes as du counts them, each
                         file once (a view's tables linked from db/ count in index)`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "bands", Usage: "age bands, ascending, comma-separated (`AGES` such as 1h,24h,7d)", Value: "1h,24h,7d,30d,365d"},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() > 1 {
				return usagef("du takes at most one DISK or GROUP; see 'hindsight du --help'")
			}
			opts := duOptions{target: c.Args().First(), json: c.Bool("json"), now: time.Now()}
			var err error
			if opts.bands, err = parseBands(c.String("bands"), opts.now); err != nil {
				return err
			}
			return withRepo(c, true, func(r *store.Repo) error {
				return runDu(c.Context, c.App.Writer, r, opts)
			})
		},
	}
}

// duOptions is what du was asked.
type duOptions struct {
	target string // a disk or group, or "" for every disk
	bands  []time.Duration
	json   bool
	now    time.Time
}

// parseBands reads ascending ages in any relative form timespec takes
// (without its minus sign).
func parseBands(s string, now time.Time) ([]time.Duration, error) {
	var bands []time.Duration
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		t, err := timespec.Parse("-"+strings.TrimPrefix(f, "-"), now)
		if err != nil || f == "" {
			return nil, usagef("--bands %q: %q is not an age such as 1h, 7d or 30d", s, f)
		}
		b := now.Sub(t)
		if len(bands) > 0 && b <= bands[len(bands)-1] {
			return nil, usagef("--bands %q: ages must grow from left to right", s)
		}
		bands = append(bands, b)
	}
	return bands, nil
}

func runDu(ctx context.Context, w io.Writer, r *store.Repo, opts duOptions) error {
	var keep map[string]bool
	if opts.target != "" {
		_, disks, err := r.Members(opts.target)
		if errors.Is(err, store.ErrUnknownDisk) || errors.Is(err, store.ErrUnknownGroup) {
			return notFound(err)
		}
		if err != nil {
			return err
		}
		keep = map[string]bool{}
		for _, d := range disks {
			keep[d.Name] = true
		}
	}
	u, err := r.Usage(ctx, opts.now, opts.bands)
	if err != nil {
		return err
	}
	if keep != nil {
		disks := u.Disks[:0]
		for _, d := range u.Disks {
			if keep[d.Name] {
				disks = append(disks, d)
			}
		}
		u.Disks = disks
	}
	if opts.json {
		return printJSONTo(w, u)
	}
	return printDu(w, u)
}

func printDu(w io.Writer, u *store.Usage) error {
	rows := make([][]string, len(u.Disks))
	for i, d := range u.Disks {
		rows[i] = []string{d.Name, d.Group, strconv.FormatUint(d.Versions, 10), strconv.FormatUint(d.ZeroVersions, 10),
			humanBytes(d.LogicalBytes), strconv.FormatUint(d.Content, 10), humanBytes(d.StoredBytes), humanBytes(d.ExclusiveBytes)}
	}
	if err := table(w, []string{"DISK", "GROUP", "VERSIONS", "ZERO", "LOGICAL", "CONTENT", "STORED", "EXCLUSIVE"}, rows); err != nil {
		return err
	}
	if len(u.Disks) > 0 {
		fmt.Fprintln(w)
		header := []string{"LOGICAL BY AGE"}
		for _, b := range u.Disks[0].Ages {
			label := b.Label
			if b.MaxAgeSec > 0 {
				label = "≤" + label
			}
			header = append(header, label)
		}
		rows = rows[:0]
		for _, d := range u.Disks {
			row := []string{d.Name}
			for _, b := range d.Ages {
				row = append(row, humanBytes(b.LogicalBytes))
			}
			rows = append(rows, row)
		}
		if err := table(w, header, rows); err != nil {
			return err
		}
	}
	fmt.Fprintln(w)
	c, f := u.Content, u.Files
	fmt.Fprintf(w, "content       %d blocks: %s plain, %s stored (dedupe %.2f×, compression %.2f×)\n",
		c.Count, humanBytes(c.PlainBytes), humanBytes(c.StoredBytes), u.DedupeRatio, u.CompressionRatio)
	fmt.Fprintf(w, "unreferenced  %d blocks: %s stored (what gc frees)\n", u.Unreferenced.Count, humanBytes(u.Unreferenced.StoredBytes))
	fmt.Fprintf(w, "files         segments %s, index %s, records.log %s, views %s, other %s: total %s\n",
		humanBytes(f.Segments), humanBytes(f.Index), humanBytes(f.Records), humanBytes(f.Views), humanBytes(f.Other), humanBytes(f.Total))
	return nil
}
