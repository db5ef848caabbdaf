package main

import (
	"fmt"

	"github.com/hindsight-cdp/hindsight/recovery"
	"github.com/hindsight-cdp/hindsight/store"
	"github.com/urfave/cli/v2"
)

func cmdRestore() *cli.Command {
	return &cli.Command{
		Name:      "restore",
		Usage:     "copy files and folders of DISK as they were at an instant into --to",
		ArgsUsage: "DISK PATH...",
		Description: `Each PATH is a path in the disk's filesystems as the machine saw it
(/etc/nginx; the disk's /etc/fstab says which partition holds it), or pN:/path
for partition N. It is restored to --to/PATH with its mode, owner, times,
xattrs, symlinks and hard links, where the target allows. Paths resolve inside
the image only: '..' and symlinks never lead out of it, and a symlink is restored
as a symlink. Existing targets are kept unless --overwrite (files are replaced
atomically). Everything mounted is removed at the end, also on Ctrl-C.

The image is not trusted: device nodes, FIFOs and sockets are skipped, and
setuid/setgid bits and file capabilities (security.capability) are dropped,
unless --preserve-special. Owners are kept when run as root; the sticky bit is
kept. --to is created mode 0700 if it does not exist (an existing one is left
as it is).

Exit codes: 0 all restored (or skipped as above), 2 some paths missing in the
image, 4 some targets exist (no --overwrite), 1 an error.

--json prints {"disk", "point", "to", "results": [...], "partitions": [...]};
each result is {"path", "partition", "target", "status" (restored, skipped,
missing, exists, error), "files", "bytes", "error", "skipped": [...],
"stripped": [...]}, where paths in "skipped" and "stripped" are below --to:
  "skipped":  [{"path": "dev/mem", "kind": "char-device",
                "reason": "special file (use --preserve-special)"}]
              kind: char-device, block-device, fifo, socket, or unsafe-name
              (a name with "/", "." or "..": a forged filesystem)
  "stripped": [{"path": "usr/bin/su", "stripped": ["setuid"],
                "image_mode": "4755", "mode": "0755"}]
              stripped: setuid, setgid, capabilities`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "at", Value: "latest", Usage: "instant: RFC 3339, ISO basic, @unix, -15m, latest, bookmark:NAME"},
			&cli.StringFlag{Name: "to", Required: true, Usage: "target `DIR` (created 0700 if missing)"},
			&cli.BoolFlag{Name: "overwrite", Usage: "replace existing files in --to"},
			&cli.BoolFlag{Name: "preserve-special", Usage: "recreate device nodes, FIFOs and sockets; keep setuid/setgid bits and capabilities"},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() < 2 {
				return usagef("restore takes a DISK and one or more PATHs; see 'hindsight restore --help'")
			}
			paths := c.Args().Slice()[1:]
			return withInstant(c, c.String("at"), "", func(in *recovery.Instant) error {
				res, err := in.Restore(c.Context, paths, recovery.RestoreOptions{
					To: c.String("to"), Overwrite: c.Bool("overwrite"), PreserveSpecial: c.Bool("preserve-special")})
				if err != nil {
					return err
				}
				if c.Bool("json") {
					perr := printJSON(c, struct {
						Disk    string                `json:"disk"`
						Point   store.Point           `json:"point"`
						To      string                `json:"to"`
						Results []recovery.PathResult `json:"results"`
						// How each partition was mounted (method cow-clone: its
						// journal was replayed on a disposable clone).
						Partitions []*recovery.Part `json:"partitions"`
					}{in.Disk.Name, in.Point, c.String("to"), res, in.Parts})
					if perr != nil {
						return perr
					}
				} else {
					var rows [][]string
					for _, r := range res {
						note := r.Error
						if r.Status == recovery.Restored {
							note = fmt.Sprintf("%d entries, %s → %s", r.Files, humanBytes(r.Bytes), r.Target)
							if len(r.Skipped)+len(r.Stripped) > 0 {
								note += fmt.Sprintf(" (%d skipped, %d stripped of setuid/setgid/capabilities: --json lists them)", len(r.Skipped), len(r.Stripped))
							}
						}
						rows = append(rows, []string{r.Status, r.Path, note})
					}
					if err := table(c.App.Writer, []string{"STATUS", "PATH", "NOTE"}, rows); err != nil {
						return err
					}
				}
				return restoreOutcome(res)
			})
		},
	}
}

// restoreOutcome turns per-path results into the command's exit: an error
// first (1), then targets that exist (4), then missing paths (2).
func restoreOutcome(res []recovery.PathResult) error {
	n := map[string]int{}
	for _, r := range res {
		n[r.Status]++
	}
	switch {
	case n[recovery.Failed] > 0:
		return fmt.Errorf("%d of %d paths failed", n[recovery.Failed], len(res))
	case n[recovery.Exists] > 0:
		return busy(fmt.Errorf("%d of %d paths exist in the target (use --overwrite)", n[recovery.Exists], len(res)))
	case n[recovery.Missing] > 0:
		return usagef("%d of %d paths are not in the image at that instant", n[recovery.Missing], len(res))
	}
	return nil
}
