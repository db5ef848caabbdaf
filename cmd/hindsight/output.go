package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"text/tabwriter"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/urfave/cli/v2"
	"golang.org/x/term"
)

// printJSON writes v as indented JSON to stdout.
func printJSON(c *cli.Context, v any) error { return printJSONTo(c.App.Writer, v) }

// printJSONTo writes v as indented JSON to w.
func printJSONTo(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// table prints rows as aligned columns.
func table(w io.Writer, header []string, rows [][]string) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	line := func(cols []string) {
		for i, c := range cols {
			if i > 0 {
				fmt.Fprint(tw, "\t")
			}
			fmt.Fprint(tw, c)
		}
		fmt.Fprintln(tw)
	}
	line(header)
	for _, r := range rows {
		line(r)
	}
	return tw.Flush()
}

func fmtTime(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

// progress returns a callback drawing a bar on stderr for total bytes when
// stderr is a terminal, else nil; done finishes the bar.
func progress(c *cli.Context, desc string, total int64) (update func(int64), done func()) {
	if c.Bool("json") || !term.IsTerminal(int(os.Stderr.Fd())) {
		return nil, func() {}
	}
	bar := progressbar.DefaultBytes(total, desc)
	return func(n int64) { bar.Set64(n) }, func() { bar.Finish(); fmt.Fprintln(os.Stderr) }
}

// humanBytes formats n in binary units.
func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
