package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"time"

	"github.com/hindsight-cdp/hindsight/cdp"
	"github.com/hindsight-cdp/hindsight/cdp/control"
	"github.com/hindsight-cdp/hindsight/fs/fusesrv"
	"github.com/hindsight-cdp/hindsight/fs/tap"
	"github.com/hindsight-cdp/hindsight/store"
	"github.com/urfave/cli/v2"
	"golang.org/x/sync/errgroup"
)

func cmdProtect() *cli.Command {
	return &cli.Command{
		Name:      "protect",
		Usage:     "present DISK (every disk of GROUP) as a writable file whose every write is journaled",
		ArgsUsage: "DISK|GROUP",
		Description: `Mounts DIR/DISK.img, a file the size of the disk that losetup, QEMU or any program
uses as the disk; for a GROUP, one such file per disk, all on the group's timeline. Every write is journaled, in order, as a point of its own; fsync and
close return once everything written before is durable. Writes must be aligned to
512-byte sectors and lie within the disk.

  hindsight --repo R protect web --mount /run/hs-web &
  losetup -f --show /run/hs-web/web.img        # then mkfs, mount and use it as any disk

With --backing FILE, FILE (an image or a block device of the disk's size) stays the
primary copy: reads come from it, each write goes to it and then to the journal.
At start, blocks where FILE and the journal's newest state differ (a crash between
the two writes, or changes while unprotected) are journaled as a point bookmarked
resync-<time>.

The file is served over FUSE's io_uring transport where the kernel has it (Linux 6.14
and later; the switch /sys/module/fuse/parameters/enable_uring is turned on): each
request is answered on the CPU that issued it, which more than doubles small
synchronous writes. --io-uring=false serves over /dev/fuse.

With --allow-other --group NAME, members of group NAME may open the disk file too: it
is mode 0660 and belongs to NAME (never world-writable). --allow-other needs --group:
the file's owner is the user running protect (root, as a rule), whose own group would
let no one else in.

The journal is synced and published every --sync-interval, so 'hindsight mount' in
another process shows the new points, and a crash loses at most that much of what
was never fsynced. Ends on Ctrl-C, SIGTERM or 'umount DIR' (detach loop devices first).`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "mount", Required: true, Usage: "directory to mount the disk file in"},
			&cli.DurationFlag{Name: "sync-interval", Value: defaultSyncInterval, Usage: "sync and publish the journal this often"},
			&cli.StringFlag{Name: "backing", Usage: "the real disk (`FILE` or device) stays primary; writes are mirrored into the journal"},
			&cli.BoolFlag{Name: "allow-other", Usage: "let the members of --group open the disk file (mode 0660, group NAME)"},
			&cli.StringFlag{Name: "group", Usage: "with --allow-other: the group (`NAME` or gid) whose members may open the disk file"},
			&cli.BoolFlag{Name: "fuse-debug", Usage: "log every FUSE request to stderr"},
			&cli.BoolFlag{Name: "io-uring", Value: true, Usage: "serve the disk file over FUSE's io_uring transport (Linux 6.14+; turns on " +
				"/sys/module/fuse/parameters/enable_uring), falling back to /dev/fuse; --io-uring=false always uses /dev/fuse"},
		},
		Action: func(c *cli.Context) error {
			if c.Duration("sync-interval") <= 0 {
				return usagef("--sync-interval must be positive")
			}
			if err := needArgs(c, 1, "a DISK or GROUP"); err != nil {
				return err
			}
			gid, err := allowGroup(c.Bool("allow-other"), c.String("group"))
			if err != nil {
				return err
			}
			return withRepo(c, false, func(r *store.Repo) error {
				_, disks, err := r.Members(c.Args().First())
				if err != nil {
					return err
				}
				if len(disks) == 0 {
					return usagef("group %q has no disks yet (hindsight disk create NAME --size S --group %s)", c.Args().First(), c.Args().First())
				}
				path := c.String("backing")
				if path != "" && len(disks) > 1 {
					return usagef("--backing protects one disk; a group's disks each need their own")
				}
				var devs []*cdp.Device
				var files []tap.File
				for _, d := range disks {
					dev := cdp.NewDevice(r, d, "tap")
					if path != "" {
						f, err := openBacking(c, r, d, path)
						if err != nil {
							return err
						}
						defer f.Close()
						dev.Backed(f)
					}
					devs = append(devs, dev)
					files = append(files, tap.File{Name: d.Name + ".img", Dev: dev})
				}
				return serveDevices(c, r, devs, func(ctx context.Context) (*fusesrv.Server, error) {
					return tap.MountAll(ctx, c.String("mount"), files, tap.Options{
						AllowOther: c.Bool("allow-other"), GID: gid, Debug: c.Bool("fuse-debug"), Logf: stderrf, IOUring: c.Bool("io-uring"),
					})
				})
			})
		},
	}
}

// allowGroup checks --allow-other and --group together and returns the
// group's gid (0 without --allow-other).
func allowGroup(allowOther bool, name string) (int, error) {
	switch {
	case !allowOther && name == "":
		return 0, nil
	case !allowOther:
		return 0, usagef("--group %s names who may open the disk file with --allow-other; add --allow-other", name)
	case name == "":
		return 0, usagef("--allow-other needs --group NAME: the disk file becomes mode 0660, open to NAME's members (never to everyone)")
	}
	g, err := user.LookupGroup(name)
	if err != nil {
		if g, err = user.LookupGroupId(name); err != nil {
			return 0, usagef("--group %s: no such group (groupadd %s, or name an existing one)", name, name)
		}
	}
	gid, err := strconv.Atoi(g.Gid)
	if err != nil {
		return 0, fmt.Errorf("--group %s: gid %q: %w", name, g.Gid, err)
	}
	return gid, nil
}

// openBacking opens the backing disk and resyncs the journal with it.
func openBacking(c *cli.Context, r *store.Repo, d store.Disk, path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, usageErr(err)
	}
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		f.Close()
		return nil, err
	}
	update, done := progress(c, "resync "+d.Name, size)
	bm, res, err := cdp.Resync(c.Context, r, d, f, size, update)
	done()
	if err != nil {
		f.Close()
		return nil, err
	}
	if bm != nil {
		fmt.Fprintf(c.App.ErrWriter, "resync: %d blocks of %s differed from the journal; journaled as %s\n", res.Changed, path, bm.Name)
	}
	return f, nil
}

// serveDevices runs a capture front end until a signal or an unmount,
// syncing and publishing the journal meanwhile, and syncs a last time
// before it returns.
func serveDevices(c *cli.Context, r *store.Repo, devs []*cdp.Device, mount func(context.Context) (*fusesrv.Server, error)) error {
	ctx, cancel := context.WithCancel(c.Context)
	defer cancel()
	ctl, err := control.Listen(r.Dir(), control.Local{R: r})
	if err != nil {
		return err
	}
	srv, err := mount(context.Background()) // unmounted below, with retries
	if err != nil {
		ctl.Serve(canceled())
		return err
	}
	dir := c.String("mount")
	for _, dev := range devs {
		fmt.Fprintf(c.App.ErrWriter, "protecting %s at %s\n", dev.Disk().Name, filepath.Join(dir, dev.Disk().Name+".img"))
	}
	fmt.Fprintf(c.App.ErrWriter, "Ctrl-C or 'umount %s' ends it\n", dir)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return ctl.Serve(gctx) })
	for _, dev := range devs {
		g.Go(func() error { return dev.Run(gctx, c.Duration("sync-interval")) })
	}
	g.Go(func() error {
		stopped := make(chan struct{})
		go func() { srv.Wait(); close(stopped) }()
		select {
		case <-stopped:
			cancel() // unmounted from outside
			return nil
		case <-gctx.Done():
			return unmount(srv, dir, stopped)
		}
	})
	err = g.Wait()
	for _, dev := range devs {
		if ferr := dev.Flush(); err == nil {
			err = ferr
		}
	}
	return err
}

// canceled is a context already done: serving the control socket with it
// only closes and removes the socket.
func canceled() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}

// defaultSyncInterval bounds what a crash can lose of writes never fsynced,
// and how far other processes' views lag behind a capture front end.
const defaultSyncInterval = time.Second

func stderrf(f string, args ...any) { fmt.Fprintf(os.Stderr, "hindsight: "+f+"\n", args...) }
