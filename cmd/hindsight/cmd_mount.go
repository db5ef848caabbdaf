package main

import (
	"context"
	"fmt"

	"github.com/hindsight-cdp/hindsight/fs"
	"github.com/hindsight-cdp/hindsight/fs/fusesrv"
	"github.com/urfave/cli/v2"
)

func cmdMount() *cli.Command {
	return &cli.Command{
		Name:      "mount",
		Usage:     "show the repository's history as a read-only FUSE tree at DIR",
		ArgsUsage: "DIR",
		Description: `Layout:
  DIR/<disk>/latest/                  the newest point
  DIR/<disk>/<instant>/               any instant: listed points, or any time you name
  DIR/<disk>/bookmarks/<name>/        a bookmark's instant
each holding <disk>.vmdk (descriptor), <disk>-flat.vmdk (raw), <disk>.vhd and info.json.
Unlisted instants open on lookup:  ls DIR/web/2026-11-25T10:15:00Z  or  DIR/web/-15m
Loop-mount an image read-only with:
  losetup -r -f --show DIR/web/latest/web-flat.vmdk && mount -o ro,noload /dev/loopN /mnt
The mount follows imports made meanwhile by other hindsight processes. It is
readable by its owner only unless --allow-other. Ends on Ctrl-C, SIGTERM or 'umount DIR'.`,
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "allow-other", Usage: "let other users read the tree (mode 0444/0555, kernel-checked)"},
			&cli.IntFlag{Name: "list-points", Value: 100, Usage: "how many of the newest points each disk directory lists"},
			&cli.BoolFlag{Name: "fuse-debug", Usage: "log every FUSE request to stderr"},
		},
		Action: func(c *cli.Context) error {
			if err := needArgs(c, 1, "a mount DIR"); err != nil {
				return err
			}
			dir, err := repoDir(c)
			if err != nil {
				return err
			}
			live, err := openLive(c)
			if err != nil {
				return err
			}
			mnt := c.Args().First()
			srv, err := fs.Mount(c.Context, mnt, live, fs.Options{
				AllowOther: c.Bool("allow-other"),
				Debug:      c.Bool("fuse-debug"),
				ListPoints: c.Int("list-points"),
				Logf:       stderrf,
			})
			if err != nil {
				return joinClose(err, live.Close)
			}
			fmt.Fprintf(c.App.ErrWriter, "mounted %s at %s; Ctrl-C or 'umount %s' ends it\n", dir, mnt, mnt)
			stopped := make(chan struct{})
			go func() { srv.Wait(); close(stopped) }()
			select {
			case <-stopped: // unmounted from outside
			case <-c.Context.Done():
				if err := unmount(srv, mnt, stopped); err != nil {
					// Still mounted: the server may be reading the
					// repository, so it stays open until the process exits.
					return err
				}
			}
			return live.Close()
		},
	}
}

// unmount unmounts after the command's context ended, waiting while the
// mount is busy (a shell's cwd, an open file).
func unmount(srv *fusesrv.Server, mnt string, stopped <-chan struct{}) error {
	if err := srv.UnmountWait(context.Background(), fusesrv.UnmountTimeout); err != nil {
		return err
	}
	<-stopped
	return nil
}
