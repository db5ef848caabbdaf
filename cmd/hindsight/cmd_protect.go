package main

import (
	"context"
	"errors"
	"fmt"
	"github.com/hindsight-cdp/hindsight/cdp"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/hindsight-cdp/hindsight/service"
	"github.com/urfave/cli/v2"
)

func cmdProtect() *cli.Command {
	return &cli.Command{
		Name:      "protect",
		Usage:     "journal every write of DISK (every disk of GROUP) through a tap file or NBD",
		ArgsUsage: "DISK|GROUP",
		Description: `With --mount DIR, each disk is the file DIR/DISK.img, the size of the disk, that
losetup, QEMU or any program uses as the disk; with --nbd ADDR, each disk is an NBD
export of its name. A GROUP's disks share one timeline. Every write is journaled, in
order, as a point of its own; fsync, close and NBD FLUSH return once everything
written before is durable. Writes must lie within the disk.

When 'hindsight serve' runs on the repository, protect asks it to add the protection
(recorded: it comes back after a restart) and returns once the disk is served;
'hindsight unprotect NAME' ends it. Otherwise protect runs the protection in the
foreground, as a service of its own that records nothing, until Ctrl-C, SIGTERM or
'umount DIR'; other commands (bookmark, clone, a second protect) reach it as they
would the service.

  hindsight --repo R protect web --mount /run/hs/web
  losetup -f --show /run/hs/web/web.img          # then mkfs, mount and use it as any disk
  hindsight --repo R protect db-vm --nbd unix:/run/hs/db.sock
  qemu-io -f raw 'nbd+unix:///db?socket=/run/hs/db.sock' -c 'write 0 1M'

With --backing FILE, FILE (an image or a block device of the disk's size) stays the
primary copy: reads come from it, each write goes to it and then to the journal. At
start, blocks where FILE and the journal's newest state differ are journaled as a
point bookmarked resync-<time>.

The tap is served over FUSE's io_uring transport where the kernel has it (Linux 6.14
and later), which more than doubles small synchronous writes; --io-uring=false serves
over /dev/fuse. With --allow-other --group NAME, members of group NAME may open the
disk file too (mode 0660, never world-writable).

NBD listens on unix:PATH (owner-only) or HOST:PORT, which needs --tls-cert, --tls-key
and --tls-client-ca (or --insecure-local on loopback), as for serve-nbd.`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "mount", Usage: "serve the disks as files in `DIR` (a tap)"},
			&cli.StringFlag{Name: "nbd", Usage: "serve the disks over NBD at `ADDR`: unix:PATH or HOST:PORT"},
			&cli.StringFlag{Name: "name", Usage: "the protection's name (default: DISK|GROUP)"},
			&cli.DurationFlag{Name: "sync-interval", Value: defaultSyncInterval, Usage: "in the foreground: sync and publish the journal this long after a write"},
			minFreeFlag(),
			&cli.StringFlag{Name: "backing", Usage: "the real disk (`FILE` or device) stays primary; writes are mirrored into the journal"},
			&cli.BoolFlag{Name: "allow-other", Usage: "let the members of --group open the disk file (mode 0660, group NAME)"},
			&cli.StringFlag{Name: "group", Usage: "with --allow-other: the group (`NAME` or gid) whose members may open the disk file"},
			&cli.BoolFlag{Name: "fuse-debug", Usage: "log every FUSE request to stderr"},
			&cli.BoolFlag{Name: "io-uring", Value: true, Usage: "serve the tap over FUSE's io_uring transport (Linux 6.14+), falling back to /dev/fuse"},
			&cli.StringFlag{Name: "tls-cert", Usage: "NBD over TCP: PEM certificate"},
			&cli.StringFlag{Name: "tls-key", Usage: "NBD over TCP: PEM private key of --tls-cert"},
			&cli.StringFlag{Name: "tls-client-ca", Usage: "NBD over TCP: PEM `CA` whose certificates clients must present"},
			&cli.BoolFlag{Name: "insecure-local", Usage: "NBD over TCP on loopback without client certificates: every local user can read and write the disks"},
		},
		Action: func(c *cli.Context) error {
			if err := needArgs(c, 1, "a DISK or GROUP"); err != nil {
				return err
			}
			if c.Duration("sync-interval") <= 0 {
				return usagef("--sync-interval must be positive")
			}
			spec, err := protectSpec(c)
			if err != nil {
				return err
			}
			return protect(c, spec)
		},
	}
}

// protectSpec reads protect's flags.
func protectSpec(c *cli.Context) (service.ProtectSpec, error) {
	spec := service.ProtectSpec{Name: c.String("name"), Targets: []string{c.Args().First()}}
	switch {
	case c.String("mount") != "" && c.String("nbd") != "":
		return spec, usagef("--mount and --nbd are two front ends; a disk is written through one of them: give --mount DIR or --nbd ADDR")
	case c.String("mount") != "":
		gid, err := allowGroup(c.Bool("allow-other"), c.String("group"))
		if err != nil {
			return spec, err
		}
		mnt, err := absPath(c.String("mount"))
		if err != nil {
			return spec, err
		}
		backing := c.String("backing")
		if backing != "" {
			if backing, err = absPath(backing); err != nil {
				return spec, err
			}
		}
		spec.Tap = &service.TapSpec{Mount: mnt, AllowOther: c.Bool("allow-other"), GID: gid, Backing: backing,
			IOUring: c.Bool("io-uring"), Debug: c.Bool("fuse-debug")}
	case c.String("nbd") != "":
		if c.String("backing") != "" || c.Bool("allow-other") {
			return spec, usagef("--backing and --allow-other are for the tap (--mount)")
		}
		listen, err := absListen(c.String("nbd"))
		if err != nil {
			return spec, err
		}
		spec.NBD = &service.NBDSpec{Listen: listen, TLSCert: c.String("tls-cert"), TLSKey: c.String("tls-key"),
			TLSClientCA: c.String("tls-client-ca"), InsecureLocal: c.Bool("insecure-local")}
	default:
		return spec, usagef("protect needs a front end: --mount DIR (a tap file per disk) or --nbd unix:PATH (NBD exports)")
	}
	return spec, nil
}

// protect hands spec to the running service, or runs it in the foreground.
func protect(c *cli.Context, spec service.ProtectSpec) error {
	cl, err := dialService(c)
	if err != nil {
		return err
	}
	if cl != nil {
		if c.IsSet("min-free") {
			return usagef("--min-free sets the reserve of a protection run in the foreground; the running service keeps its own (hindsight serve --min-free)")
		}
		st, err := cl.Protect(c.Context, spec)
		if err != nil {
			return err
		}
		if c.Bool("json") {
			return printJSON(c, st)
		}
		announce(c, st, fmt.Sprintf("'hindsight unprotect %s' ends it", st.Name))
		return nil
	}
	return foreground(c, func(ctx context.Context, svc *service.Service) (service.ProtectionStatus, error) {
		return svc.Protect(ctx, spec)
	}, func(st service.ProtectionStatus) {
		end := "Ctrl-C ends it"
		if spec.Tap != nil {
			end = fmt.Sprintf("Ctrl-C or 'umount %s' ends it", spec.Tap.Mount)
		}
		announce(c, st, end)
	})
}

// announce says where the disks are served.
func announce(c *cli.Context, st service.ProtectionStatus, end string) {
	w := c.App.ErrWriter
	for _, d := range st.Disks {
		if st.FrontEnd == "nbd" {
			fmt.Fprintf(w, "serving %s over NBD: %s\n", d.Disk, d.Path)
		} else {
			fmt.Fprintf(w, "protecting %s at %s\n", d.Disk, d.Path)
		}
	}
	fmt.Fprintln(w, end)
}

func absPath(p string) (string, error) {
	a, err := filepath.Abs(p)
	if err != nil {
		return "", usageErr(err)
	}
	return a, nil
}

// absListen makes a unix:PATH address absolute: the service may run in
// another directory, and clients' URIs need it absolute.
func absListen(s string) (string, error) {
	p, ok := strings.CutPrefix(s, "unix:")
	if !ok {
		return s, nil
	}
	if p == "" {
		return "", usagef("unix: needs a socket path, e.g. unix:/run/hindsight/nbd.sock")
	}
	a, err := absPath(p)
	return "unix:" + a, err
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

func cmdUnprotect() *cli.Command {
	return &cli.Command{
		Name:      "unprotect",
		Usage:     "end a protection: make its writes durable, detach its front end; history stays",
		ArgsUsage: "NAME",
		Action: func(c *cli.Context) error {
			if err := needArgs(c, 1, "a protection NAME"); err != nil {
				return err
			}
			cl, err := needService(c, "unprotect")
			if err != nil {
				return err
			}
			st, err := cl.Unprotect(c.Context, c.Args().First())
			if err != nil {
				return err
			}
			if c.Bool("json") {
				return printJSON(c, st)
			}
			fmt.Fprintf(c.App.Writer, "%s: unprotected (%s at %s); its history stays\n", st.Name, st.FrontEnd, st.Where)
			return nil
		},
	}
}

// needService is the running service's client, or a clear error.
func needService(c *cli.Context, what string) (*service.Client, error) {
	cl, err := dialService(c)
	if err != nil {
		return nil, err
	}
	if cl == nil {
		return nil, notFound(fmt.Errorf("%w: '%s' talks to 'hindsight serve' (or a foreground protect)", service.ErrNoService, what))
	}
	return cl, nil
}

func cmdProtections() *cli.Command {
	return &cli.Command{
		Name:  "protections",
		Usage: "list the service's protections and clones: per disk, front end, write rate, bytes, lag, last durable write",
		Action: func(c *cli.Context) error {
			if err := needArgs(c, 0, "no arguments"); err != nil {
				return err
			}
			cl, err := needService(c, "protections")
			if err != nil {
				return err
			}
			ps, err := cl.Protections(c.Context)
			if err != nil {
				return err
			}
			if c.Bool("json") {
				return printJSON(c, ps)
			}
			var rows [][]string
			for _, p := range ps {
				state := p.State
				if p.Error != "" {
					state += ": " + p.Error
				}
				for _, d := range p.Disks {
					durable := "-"
					if !d.LastDurable.IsZero() {
						durable = fmtTime(d.LastDurable)
					}
					rows = append(rows, []string{p.Name, d.Disk, p.FrontEnd, state, fmt.Sprintf("%.0f", d.WritesPerSec),
						humanBytes(int64(d.BytesWritten)), d.Lag.Round(time.Millisecond).String(), durable, d.Path})
				}
				if len(p.Disks) == 0 {
					rows = append(rows, []string{p.Name, "-", p.FrontEnd, state, "-", "-", "-", "-", p.Where})
				}
			}
			return table(c.App.Writer, []string{"NAME", "DISK", "FRONT-END", "STATE", "WRITES/S", "WRITTEN", "LAG", "LAST-DURABLE", "WHERE"}, rows)
		},
	}
}

func cmdClone() *cli.Command {
	return &cli.Command{
		Name:      "clone",
		Usage:     "a writable copy-on-write clone of SOURCE at an instant, served as a tap beside live protection",
		ArgsUsage: "SOURCE",
		Description: `Nothing is copied: the clone reads the source at the instant, and its own writes are
journaled as the new disk NAME (for a group, the disks NAME-DISK of group NAME).
The source's history never changes. Served as DIR/NAME.img (a group: one file per
disk) until 'hindsight clone-end NAME', which deletes it unless --keep.

  hindsight --repo R clone web --at -10m --name web-test --mount /run/hs/web-test
  losetup -f --show /run/hs/web-test/web-test.img`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "at", Required: true, Usage: "the instant (RFC 3339, @unix, -10m, bookmark:NAME)"},
			&cli.StringFlag{Name: "name", Required: true, Usage: "the clone's `NAME`"},
			&cli.StringFlag{Name: "mount", Required: true, Usage: "serve the clone in `DIR`"},
			&cli.BoolFlag{Name: "allow-other", Usage: "let the members of --group open the clone's file"},
			&cli.StringFlag{Name: "group", Usage: "with --allow-other: the group (`NAME` or gid)"},
			&cli.DurationFlag{Name: "sync-interval", Value: defaultSyncInterval, Usage: "in the foreground: sync and publish this long after a write"},
		},
		Action: func(c *cli.Context) error {
			if err := needArgs(c, 1, "a SOURCE disk or group"); err != nil {
				return err
			}
			gid, err := allowGroup(c.Bool("allow-other"), c.String("group"))
			if err != nil {
				return err
			}
			mnt, err := absPath(c.String("mount"))
			if err != nil {
				return err
			}
			spec := service.CloneSpec{Name: c.String("name"), Source: c.Args().First(), At: c.String("at"), Mount: mnt,
				AllowOther: c.Bool("allow-other"), GID: gid}
			cl, err := dialService(c)
			if err != nil {
				return err
			}
			if cl != nil {
				st, err := cl.Clone(c.Context, spec)
				if err != nil {
					return cloneErr(err)
				}
				if c.Bool("json") {
					return printJSON(c, st)
				}
				announce(c, st, fmt.Sprintf("clone of %s at %s; 'hindsight clone-end %s' ends it", st.Clone.Source, fmtTime(st.Clone.Time), st.Name))
				return nil
			}
			return foreground(c, func(ctx context.Context, svc *service.Service) (service.ProtectionStatus, error) {
				st, err := svc.Clone(ctx, spec)
				return st, cloneErr(err)
			}, func(st service.ProtectionStatus) {
				announce(c, st, fmt.Sprintf("clone of %s at %s; Ctrl-C ends it; the clone %s stays a disk of the repository", st.Clone.Source, fmtTime(st.Clone.Time), st.Name))
			})
		},
	}
}

// cloneErr classifies an instant that does not exist (in the future, or
// before the source's first point): nothing to clone (exit 3).
func cloneErr(err error) error {
	if errors.Is(err, cdp.ErrFuture) {
		return notFound(err)
	}
	return err
}

func cmdCloneEnd() *cli.Command {
	return &cli.Command{
		Name:      "clone-end",
		Usage:     "stop serving a clone and delete it (--keep: keep it as a disk of the repository)",
		ArgsUsage: "NAME",
		Flags:     []cli.Flag{&cli.BoolFlag{Name: "keep", Usage: "keep the clone and its writes as a disk (or group)"}},
		Action: func(c *cli.Context) error {
			if err := needArgs(c, 1, "a clone NAME"); err != nil {
				return err
			}
			cl, err := needService(c, "clone-end")
			if err != nil {
				return err
			}
			st, err := cl.EndClone(c.Context, c.Args().First(), c.Bool("keep"))
			if err != nil {
				return err
			}
			if c.Bool("json") {
				return printJSON(c, st)
			}
			what := "deleted"
			if c.Bool("keep") {
				what = "kept as a disk of the repository"
			}
			fmt.Fprintf(c.App.Writer, "%s: clone ended, %s\n", st.Name, what)
			return nil
		},
	}
}
