package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/hindsight-cdp/hindsight/cdp"
	"github.com/hindsight-cdp/hindsight/cdp/timespec"
	"github.com/hindsight-cdp/hindsight/recovery"
	"github.com/hindsight-cdp/hindsight/store"
	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"
	"golang.org/x/term"
)

const defaultBrowseRoot = "/run/hindsight/browse"

func cmdBrowse() *cli.Command {
	return &cli.Command{
		Name:      "browse",
		Usage:     "mount every filesystem of DISK at an instant read-only and print where",
		ArgsUsage: "DISK",
		Description: `Partitions (MBR, GPT, or a filesystem on the whole disk) are mounted under
  --root/<disk>@<instant>/p1, p2, ... (disk for a whole-disk filesystem)
read-only, with the options that never replay a journal (ext4 noload, XFS
norecovery, Btrfs rescue=nologreplay; NTFS through ntfs-3g; FAT copied out with
mtools, as this kernel has no vfat). An ext4 whose journal holds transactions
(an instant of a mounted filesystem) is mounted from a disposable copy-on-write
clone that takes the replay, never the instant. The METHOD column says which;
the MOUNTPOINT column is where the disk's own /etc/fstab mounts each one. Encrypted (LUKS) and
unknown partitions are listed, not opened. The mounts stay until Ctrl-C or
SIGTERM; with --shell, until the shell started there exits. Either way every
mount and loop device is removed.

The image is not trusted: every mount is also nosuid, nodev and noexec, so
nothing in it runs, with its setuid bits or at all, and none of its device
nodes opens. browse copies nothing itself; a 'cp -a' in the shell copies
setuid bits and device nodes as they are: 'hindsight restore' copies out
without them.`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "at", Value: "latest", Usage: "instant: RFC 3339, ISO basic, @unix, -15m, latest, bookmark:NAME"},
			&cli.StringFlag{Name: "root", Value: defaultBrowseRoot, Usage: "directory under which instants are mounted (made owner-only)"},
			&cli.BoolFlag{Name: "shell", Usage: "start $SHELL in the mounted instant; leaving it cleans up"},
		},
		Action: func(c *cli.Context) error {
			if err := needArgs(c, 1, "a DISK"); err != nil {
				return err
			}
			return withInstant(c, c.String("at"), c.String("root"), func(in *recovery.Instant) error {
				if err := printInstant(c, in); err != nil {
					return err
				}
				if len(in.Mounted()) == 0 {
					return fmt.Errorf("no filesystem of %s could be mounted", c.Args().First())
				}
				if c.Bool("shell") {
					return browseShell(c.Context, in.Dir)
				}
				fmt.Fprintf(c.App.ErrWriter, "mounted read-only under %s; Ctrl-C ends it\n", in.Dir)
				<-c.Context.Done()
				return nil
			})
		},
	}
}

// withInstant resolves --at of the command's DISK (its first argument),
// mounts that instant under root/<disk>@<instant> ("" root: a private
// directory) and runs fn; everything is unmounted afterwards, also when fn
// fails or the command is interrupted.
func withInstant(c *cli.Context, at, root string, fn func(in *recovery.Instant) error) error {
	dir, err := repoDir(c)
	if err != nil {
		return err
	}
	var d store.Disk
	var inst cdp.Instant
	err = withRepo(c, true, func(r *store.Repo) error {
		if d, err = r.Disk(c.Args().First()); err != nil {
			return err
		}
		inst, err = resolveAt(r, d, at, time.Now())
		return err
	})
	if err != nil {
		return err
	}
	live, err := cdp.OpenLive(dir, logf(c))
	if err != nil {
		return err
	}
	defer live.Close()
	opt := recovery.Options{Logf: stderrf}
	if root != "" {
		if err := os.MkdirAll(root, 0o700); err != nil {
			return err
		}
		opt.Dir = filepath.Join(root, d.Name+"@"+timespec.Format(inst.Point.Time))
	}
	in, err := recovery.Open(c.Context, live, d, inst.Point, opt)
	if err != nil {
		return err
	}
	return joinClose(fn(in), in.Close)
}

func printInstant(c *cli.Context, in *recovery.Instant) error {
	if c.Bool("json") {
		return printJSON(c, in)
	}
	var rows [][]string
	for _, p := range in.Parts {
		where, note := p.Dir, p.Error
		if p.Status != recovery.StatusMounted {
			where = p.Name + " (" + p.Status + ")"
		}
		typ := p.FS.Type
		if typ == "" {
			typ = "?"
		}
		rows = append(rows, []string{where, typ, dash(p.Mountpoint), dash(p.Method), note})
	}
	return table(c.App.Writer, []string{"DIR", "TYPE", "MOUNTPOINT", "METHOD", "NOTE"}, rows)
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// browseShell runs $SHELL in dir until it exits or ctx ends (SIGINT or
// SIGTERM sent to hindsight), which hangs the shell up.
func browseShell(ctx context.Context, dir string) error {
	sh := os.Getenv("SHELL")
	if sh == "" {
		sh = "/bin/sh"
	}
	cmd := exec.Command(sh)
	cmd.Dir = dir
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Env = append(os.Environ(), "HINDSIGHT_BROWSE="+dir)
	// The shell gets its own process group: a Ctrl-C typed in it is the
	// shell's business, not a reason to unmount under it. On a terminal its
	// group becomes the foreground one until it exits.
	tty := term.IsTerminal(int(os.Stdin.Fd()))
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Foreground: tty, Ctty: 0}
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-ctx.Done():
		syscall.Kill(-cmd.Process.Pid, syscall.SIGHUP)
		select {
		case <-done:
		case <-time.After(3 * time.Second):
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
		err = ctx.Err()
	}
	if tty { // take the terminal back
		signal.Ignore(syscall.SIGTTOU)
		unix.IoctlSetPointerInt(int(os.Stdin.Fd()), unix.TIOCSPGRP, unix.Getpgrp())
		signal.Reset(syscall.SIGTTOU)
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return nil // the shell's own exit status is the user's business
	}
	return err
}
