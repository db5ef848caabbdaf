// Command hindsight is continuous data protection for disks: it journals every
// write of a protected disk and shows any instant of its past as a mountable,
// bootable disk image. This package only parses, prints and exits; the work is
// done by packages cdp, store and fs.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/urfave/cli/v2"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	app := newApp()
	err := app.RunContext(ctx, interspersed(app, os.Args))
	if err != nil {
		fmt.Fprintln(os.Stderr, "hindsight:", err)
	}
	os.Exit(exitCode(err))
}

func newApp() *cli.App {
	return &cli.App{
		Name:  "hindsight",
		Usage: "continuous data protection: any instant of a disk's past as a disk image",
		Description: `Hindsight journals every write of a protected disk, in order and with its time,
and shows the journal as a FUSE tree in which any timestamp directory holds the
disk as it was at that instant (VMDK descriptor, flat image, VHD, info.json).

A typical session:
  hindsight --repo /srv/hs init
  hindsight --repo /srv/hs disk create web --size 2G
  hindsight --repo /srv/hs import web base.img --at 2026-11-25T10:00:00Z
  hindsight --repo /srv/hs import web day2.img
  hindsight --repo /srv/hs bookmark web before-upgrade
  hindsight --repo /srv/hs mount /mnt/hs &
  qemu-img info /mnt/hs/web/20261125T100000Z/web.vmdk
  hindsight --repo /srv/hs policy set web --keep-all 24h --daily 30d --monthly 24m
  hindsight --repo /srv/hs prune web && hindsight --repo /srv/hs gc

Instants (--at, and directory names in the mount) are accepted as
  RFC 3339     2026-11-25T10:15:30Z, 2026-11-25T11:15:30.5+01:00
  ISO basic    20261125T101530Z, 20261125T101530.123Z (the listed form)
  Unix time    @1764065730
  relative     -15m, -2h30m, -1d (before now)
  latest, bookmark:NAME

Exit codes: 0 success, 1 failure (also a damaged repository), 2 bad usage or
input, 3 not found (repository, disk, group, bookmark, point, retention policy, or
an instant before the first point or in the future), 4 busy (another writer, the name
exists, or a replica only its stream writes),
130 interrupted.`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "repo", Aliases: []string{"r"}, EnvVars: []string{"HINDSIGHT_REPO"}, Usage: "repository `DIR`"},
			&cli.BoolFlag{Name: "json", Usage: "print results as JSON for scripts"},
			&cli.BoolFlag{Name: "debug", EnvVars: []string{"HINDSIGHT_DEBUG"}, Usage: "log internal events to stderr"},
		},
		Commands: []*cli.Command{
			cmdInit(), cmdDisk(), cmdGroup(), cmdImport(), cmdBookmark(), cmdBookmarks(), cmdPoints(), cmdMount(), cmdExport(), cmdServe(), cmdProtect(), cmdUnprotect(), cmdProtections(), cmdClone(), cmdCloneEnd(), cmdServeNBD(), cmdStatus(), cmdVerify(), cmdDu(), cmdBrowse(), cmdRestore(), cmdHistory(), cmdDiff(), cmdPolicy(), cmdPrune(), cmdGC(), cmdVSphere(),
			cmdReplicate(), cmdUnreplicate(), cmdReplications(), cmdFailover(),
		},
		ExitErrHandler:  func(*cli.Context, error) {}, // main prints and exits
		HideHelpCommand: true,
		OnUsageError: func(c *cli.Context, err error, _ bool) error {
			return usageErr(err)
		},
	}
}
