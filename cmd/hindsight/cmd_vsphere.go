package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/hindsight-cdp/hindsight/service"
	"github.com/hindsight-cdp/hindsight/store"
	"github.com/hindsight-cdp/hindsight/vsphere"
	"github.com/urfave/cli/v2"
	"golang.org/x/sync/errgroup"
	"golang.org/x/term"
)

func cmdVSphere() *cli.Command {
	return &cli.Command{
		Name:  "vsphere",
		Usage: "run instants as VMware VMs: copy, instant recovery, migrate, writeback, agentless capture",
		Description: `Connects as govc does: GOVC_URL (https://user:pass@vcenter/sdk), GOVC_USERNAME,
GOVC_PASSWORD, GOVC_INSECURE, GOVC_TLS_CA_CERTS, GOVC_DATACENTER, or the flags. Without a
password from the environment, the URL or --password-file, it is asked for on the terminal.
TLS certificates are verified unless --insecure.

  hindsight vsphere register web --at bookmark:nightly --datastore ds1 --name web-restored --power-on
  hindsight vsphere instant web --at -30m --name web-instant --nfs-datastore hindsight-nfs --nfs-dir /srv/hindsight-nfs
  hindsight vsphere instant-end web-instant
  hindsight vsphere migrate web-instant --datastore ds1
  hindsight vsphere writeback web --at T --vm web --only-changed
  hindsight vsphere list --json
  hindsight vsphere protect web-vm --to web --every 15m --quiesce`,
		Subcommands: withConnFlags(vsRegister(), vsInstant(), vsInstantEnd(), vsMigrate(), vsWriteback(), vsList(), vsProtect()),
	}
}

// withConnFlags gives every subcommand the connection flags, so that they
// may come anywhere on the command line.
func withConnFlags(cmds ...*cli.Command) []*cli.Command {
	for _, c := range cmds {
		c.Flags = append(c.Flags, connFlags()...)
	}
	return cmds
}

func connFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "url", EnvVars: []string{"GOVC_URL"}, Usage: "vCenter or ESXi `URL` (may hold user:password)"},
		&cli.StringFlag{Name: "username", EnvVars: []string{"GOVC_USERNAME"}, Usage: "user name"},
		&cli.StringFlag{Name: "password-file", Usage: "read the password from `FILE` (first line)"},
		&cli.BoolFlag{Name: "insecure", EnvVars: []string{"GOVC_INSECURE"}, Usage: "do not verify the server's TLS certificate"},
		&cli.StringFlag{Name: "ca-file", EnvVars: []string{"GOVC_TLS_CA_CERTS"}, Usage: "trust the CAs in `PEM` file(s)"},
		&cli.StringFlag{Name: "datacenter", EnvVars: []string{"GOVC_DATACENTER"}, Usage: "datacenter (default: the only one)"},
	}
}

// vsConnect logs in with the flags and the environment.
func vsConnect(c *cli.Context) (*vsphere.Client, error) {
	cfg, err := vsConfig(c, true)
	if err != nil {
		return nil, err
	}
	cl, err := vsphere.Connect(c.Context, cfg)
	return cl, vsErr(err)
}

// vsConfig is the connection the flags and the environment give; with
// prompt, a password none of them gives is asked for on the terminal.
func vsConfig(c *cli.Context, prompt bool) (vsphere.Config, error) {
	cfg := vsphere.Config{URL: c.String("url"), Username: c.String("username"), Insecure: c.Bool("insecure"),
		CAFile: c.String("ca-file"), Datacenter: c.String("datacenter"), Logf: logf(c)}
	cfg.Password = os.Getenv("GOVC_PASSWORD")
	if f := c.String("password-file"); f != "" {
		b, err := os.ReadFile(f)
		if err != nil {
			return cfg, usagef("--password-file: %v", err)
		}
		cfg.Password, _, _ = strings.Cut(strings.TrimRight(string(b), "\r\n"), "\n")
	}
	if cfg.Password == "" && prompt {
		_, user, err := vsphere.ParseURL(cfg.URL)
		if err != nil {
			return cfg, vsErr(err)
		}
		if _, ok := user.Password(); !ok {
			if p, ok := promptPassword(c); ok {
				cfg.Password = p
			}
		}
	}
	return cfg, nil
}

// promptPassword asks on the terminal, without echo.
func promptPassword(c *cli.Context) (string, bool) {
	fd := int(os.Stdin.Fd())
	if !term.IsTerminal(fd) {
		return "", false
	}
	fmt.Fprint(os.Stderr, "vSphere password: ")
	b, err := term.ReadPassword(fd)
	fmt.Fprintln(os.Stderr)
	return string(b), err == nil
}

// withVSphere connects, runs fn and logs out.
func withVSphere(c *cli.Context, fn func(cl *vsphere.Client) error) error {
	cl, err := vsConnect(c)
	if err != nil {
		return err
	}
	return joinClose(vsErr(fn(cl)), func() error { return cl.Logout(context.WithoutCancel(c.Context)) })
}

// vsErr maps the package's errors to the CLI's exit codes.
func vsErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, vsphere.ErrBadInput), errors.Is(err, vsphere.ErrLogin), errors.Is(err, vsphere.ErrNoSpace):
		return usageErr(err)
	case errors.Is(err, vsphere.ErrNotFound):
		return notFound(err)
	case errors.Is(err, vsphere.ErrExists), errors.Is(err, vsphere.ErrNotOurs), errors.Is(err, vsphere.ErrPoweredOn):
		return busy(err)
	}
	return err
}

var (
	atFlag   = &cli.StringFlag{Name: "at", Value: "latest", Usage: "instant: RFC 3339, ISO basic, @unix, -15m, latest, bookmark:NAME"}
	nameFlag = &cli.StringFlag{Name: "name", Required: true, Usage: "VM `NAME`"}
)

func placeFlags(needDatastore bool) []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "datastore", Required: needDatastore, Usage: "datastore for the disks"},
		&cli.StringFlag{Name: "folder", Usage: "inventory folder (default: the datacenter's VM folder)"},
		&cli.StringFlag{Name: "pool", Usage: "resource pool (default: the only one)"},
		&cli.StringFlag{Name: "host", Usage: "host (default: the pool chooses)"},
	}
}

func hwFlags() []cli.Flag {
	return []cli.Flag{
		&cli.Int64Flag{Name: "memory", Value: 2048, Usage: "memory in MiB (default: the recorded VM profile, see 'disk set', else 2048)"},
		&cli.IntFlag{Name: "cpus", Value: 2, Usage: "virtual CPUs (default: the recorded VM profile, else 2)"},
		&cli.StringFlag{Name: "guest-id", Usage: "guest OS identifier (default: the recorded VM profile, else otherGuest64)"},
		&cli.StringFlag{Name: "network", Usage: "port group for one vmxnet3 NIC (default: none)"},
		&cli.StringSliceFlag{Name: "controller", Usage: "disk controller: `KIND` for all disks or DISK=KIND (lsilogic, lsisas, buslogic, pvscsi, sata, nvme; default: each disk's recorded controller, else lsilogic)"},
		&cli.BoolFlag{Name: "power-on", Usage: "power the VM on once registered"},
	}
}

func placement(c *cli.Context) vsphere.Placement {
	return vsphere.Placement{Datastore: c.String("datastore"), Folder: c.String("folder"), Pool: c.String("pool"), Host: c.String("host")}
}

func hardware(c *cli.Context) (vsphere.Hardware, error) {
	if c.Int64("memory") < 4 || c.Int("cpus") < 1 {
		return vsphere.Hardware{}, usagef("--memory must be at least 4 (MiB) and --cpus at least 1")
	}
	return vsphere.Hardware{MemoryMB: c.Int64("memory"), CPUs: int32(c.Int("cpus")), GuestID: c.String("guest-id"), Network: c.String("network")}, nil
}

// withSource runs fn on the instant of SOURCE --at, the VM hardware from
// the flags and the recorded profile, and a vSphere connection.
func withSource(c *cli.Context, readOnly bool, fn func(r *store.Repo, in vsphere.Instant, hw vsphere.Hardware, cl *vsphere.Client) error) error {
	hw, err := hardware(c)
	if err != nil {
		return err
	}
	if err := needArgs(c, 1, "a SOURCE (disk or group)"); err != nil {
		return err
	}
	return withRepo(c, readOnly, func(r *store.Repo) error {
		in, err := instantOf(c, r)
		if err != nil {
			return err
		}
		hw := withProfile(c, hw, in.Profile)
		return withVSphere(c, func(cl *vsphere.Client) error { return fn(r, in, hw, cl) })
	})
}

// withProfile fills in what the flags left unset from the VM profile
// recorded for the source.
func withProfile(c *cli.Context, hw vsphere.Hardware, p *store.Profile) vsphere.Hardware {
	if p == nil {
		return hw
	}
	if !c.IsSet("memory") && p.MemoryMB > 0 {
		hw.MemoryMB = p.MemoryMB
	}
	if !c.IsSet("cpus") && p.CPUs > 0 {
		hw.CPUs = p.CPUs
	}
	if !c.IsSet("guest-id") && p.GuestID != "" {
		hw.GuestID = p.GuestID
	}
	return hw
}

// instantOf resolves SOURCE --at in r with the --controller choices.
func instantOf(c *cli.Context, r *store.Repo) (vsphere.Instant, error) {
	in, err := vsphere.ResolveInstant(r, c.Args().First(), c.String("at"), time.Now())
	if err != nil {
		return in, err
	}
	def, byDisk := "", map[string]string{}
	for _, v := range c.StringSlice("controller") {
		if d, k, ok := strings.Cut(v, "="); ok {
			byDisk[d] = k
		} else {
			def = v
		}
	}
	return in, vsErr(in.SetControllers(def, byDisk))
}

// output prints v as JSON, or text as lines.
func output(c *cli.Context, v any, text string) error {
	if c.Bool("json") {
		return printJSON(c, v)
	}
	fmt.Fprint(c.App.Writer, text)
	return nil
}

func vsRegister() *cli.Command {
	return &cli.Command{
		Name:      "register",
		Usage:     "copy mode: upload SOURCE (a disk, or all disks of a group) at an instant and register a VM",
		ArgsUsage: "SOURCE",
		Flags: append(append([]cli.Flag{atFlag, nameFlag,
			&cli.BoolFlag{Name: "replace", Usage: "unregister a VM of that name that Hindsight made, and delete its files, first"},
		}, placeFlags(true)...), hwFlags()...),
		Action: func(c *cli.Context) error {
			return withSource(c, true, func(r *store.Repo, in vsphere.Instant, hw vsphere.Hardware, cl *vsphere.Client) error {
				update, done := progress(c, "upload "+in.Source, in.Bytes())
				res, err := cl.Register(c.Context, in, vsphere.RegisterOptions{Name: c.String("name"), Place: placement(c),
					Hardware: hw, PowerOn: c.Bool("power-on"), Replace: c.Bool("replace"), Progress: update})
				done()
				if err != nil {
					return err
				}
				var b strings.Builder
				fmt.Fprintf(&b, "VM %s registered from %s at %s (seq %d): %s\n", res.VM, in.Source, fmtTime(in.Time), in.Seq, res.VMX)
				for _, d := range res.Disks {
					fmt.Fprintf(&b, "  %s on %s: %s (blake3 %s)\n", d.Disk, d.Controller, d.Descriptor, d.BLAKE3)
				}
				return output(c, res, b.String())
			})
		},
	}
}

func vsInstant() *cli.Command {
	return &cli.Command{
		Name:      "instant",
		Usage:     "instant recovery: run SOURCE at an instant as a VM from a copy-on-write clone over NFS, until ended",
		ArgsUsage: "SOURCE",
		Description: `Clones each disk at the instant (nothing is copied; the clone's writes are journaled as
its own, the instant is never changed), serves the clones through FUSE in NFS-DIR/NAME/,
and registers the VM from the NFS datastore that shows NFS-DIR. With 'hindsight serve'
running, the service runs it beside the protections and this returns once the VM is
registered; without one, it runs in the foreground (a service of its own) until
'hindsight vsphere instant-end NAME', SIGTERM or Ctrl-C. Ending it unregisters the VM,
removes the files and drops the clones (instant-end --keep keeps them); so does stopping
the service. Export NFS-DIR to the hosts (with its submounts: crossmnt) and mount it once
as datastore NFS-DATASTORE, or give --nfs-host to let Hindsight mount it. The vSphere
credentials go to the service over its owner-only socket; it never records them.`,
		Flags: append(append([]cli.Flag{atFlag, nameFlag,
			&cli.StringFlag{Name: "nfs-datastore", Required: true, Usage: "the NFS datastore's `NAME` on the host"},
			&cli.StringFlag{Name: "nfs-dir", Required: true, Usage: "the local `DIR` exported to the host as that datastore"},
			&cli.StringFlag{Name: "nfs-host", Usage: "this machine's address as the host sees it: mount the datastore if missing"},
			&cli.StringFlag{Name: "nfs-path", Usage: "the export's path (default: --nfs-dir)"},
			&cli.StringFlag{Name: "nfs-local-path", Usage: "HostNasVolumeSpec.localPath when mounting (default: --nfs-datastore)"},
			&cli.BoolFlag{Name: "allow-other", Usage: "let the NFS server's users open the disks (FUSE allow_other)"},
			&cli.StringFlag{Name: "group", Usage: "with --allow-other: the group (`NAME` or gid) whose members may open the disks"},
			&cli.DurationFlag{Name: "sync-interval", Value: defaultSyncInterval, Usage: "in the foreground: sync and publish the journal this long after a write"},
			&cli.BoolFlag{Name: "fuse-debug", Usage: "log every FUSE request to the service's log"},
		}, placeFlags(false)[1:]...), hwFlags()...),
		Action: func(c *cli.Context) error {
			req, err := instantRequest(c)
			if err != nil {
				return err
			}
			show := func(rd vsphere.InstantReady) {
				output(c, rd, fmt.Sprintf("VM %s registered from %s in %s (clones %s of %s at %s); 'hindsight vsphere instant-end %s' ends it\n",
					rd.VM, rd.VMX, rd.Elapsed.Round(time.Millisecond), strings.Join(rd.Clones, ", "), rd.Source, fmtTime(rd.Time), rd.VM))
			}
			svc, err := dialService(c)
			if err != nil {
				return err
			}
			if svc != nil {
				rd, err := svc.StartInstant(c.Context, req)
				if err != nil {
					return err
				}
				show(rd)
				return nil
			}
			if c.Duration("sync-interval") <= 0 {
				return usagef("--sync-interval must be positive")
			}
			return foregroundInstant(c, req, show)
		},
	}
}

// instantRequest gathers what the service needs to run an instant.
func instantRequest(c *cli.Context) (service.InstantRequest, error) {
	hw, err := hardware(c)
	if err != nil {
		return service.InstantRequest{}, err
	}
	if err := needArgs(c, 1, "a SOURCE (disk or group)"); err != nil {
		return service.InstantRequest{}, err
	}
	// Unset: the source's recorded profile, else the defaults.
	if !c.IsSet("memory") {
		hw.MemoryMB = 0
	}
	if !c.IsSet("cpus") {
		hw.CPUs = 0
	}
	gid, err := allowGroup(c.Bool("allow-other"), c.String("group"))
	if err != nil {
		return service.InstantRequest{}, usageErr(err)
	}
	cfg, err := vsConfig(c, true)
	if err != nil {
		return service.InstantRequest{}, err
	}
	if _, _, err := vsphere.ParseURL(cfg.URL); err != nil {
		return service.InstantRequest{}, vsErr(err)
	}
	req := service.InstantRequest{VSphere: cfg, Source: c.Args().First(), At: c.String("at"), Name: c.String("name"),
		Place: placement(c), Hardware: hw, PowerOn: c.Bool("power-on"), AllowOther: c.Bool("allow-other"), GID: gid,
		NFS: vsphere.NFS{Datastore: c.String("nfs-datastore"), Dir: c.String("nfs-dir"), RemoteHost: c.String("nfs-host"),
			RemotePath: c.String("nfs-path"), LocalPath: c.String("nfs-local-path")},
		FuseDebug: c.Bool("fuse-debug")}
	for _, v := range c.StringSlice("controller") {
		if d, k, ok := strings.Cut(v, "="); ok {
			if req.Controllers == nil {
				req.Controllers = map[string]string{}
			}
			req.Controllers[d] = k
		} else {
			req.Controller = v
		}
	}
	return req, nil
}

// foregroundInstant runs the instant in a service of this process, which
// lives as long as the instant: until instant-end or migrate (over the
// control socket, as with 'hindsight serve'), a signal, or a lost disk.
func foregroundInstant(c *cli.Context, req service.InstantRequest, ready func(vsphere.InstantReady)) error {
	return withRepo(c, false, func(r *store.Repo) error {
		svc, err := service.New(r, service.Options{SyncInterval: c.Duration("sync-interval"), Logger: slog.New(slog.NewTextHandler(os.Stderr, nil))})
		if err != nil {
			return err
		}
		ctx, cancel := context.WithCancel(c.Context)
		defer cancel()
		rd, err := svc.StartInstant(ctx, req)
		if err != nil {
			return err
		}
		ready(rd)
		g, gctx := errgroup.WithContext(ctx)
		g.Go(func() error { return svc.ServeControl(gctx) })
		g.Go(func() error { return svc.Run(gctx) }) // at its end: ends the instant
		g.Go(func() error {
			select {
			case <-svc.InstantGone(rd.VM):
				cancel()
			case <-gctx.Done():
			}
			return nil
		})
		return g.Wait()
	})
}

func vsInstantEnd() *cli.Command {
	return &cli.Command{
		Name:      "instant-end",
		Usage:     "end an instant recovery: unregister the VM, drop the clones (unless --keep), remove the files",
		ArgsUsage: "VM",
		Description: `Asks the service (or the foreground 'vsphere instant') that runs it. An instant whose
service was killed is ended from its record: that needs the vSphere connection (the flags
or GOVC_URL) to unregister the VM.`,
		Flags: []cli.Flag{&cli.BoolFlag{Name: "keep", Usage: "keep the clones (as disks of the repository)"}},
		Action: func(c *cli.Context) error {
			if err := needArgs(c, 1, "a VM name"); err != nil {
				return err
			}
			vm, keep := c.Args().First(), c.Bool("keep")
			show := func(res vsphere.EndResult) error {
				return output(c, res, fmt.Sprintf("instant %s ended (unregistered: %v; clones kept: %s; dropped: %s)\n",
					res.VM, res.Unregistered, strings.Join(res.ClonesKept, ", "), strings.Join(res.ClonesGone, ", ")))
			}
			svc, err := dialService(c)
			if err != nil {
				return err
			}
			if svc != nil {
				// Needed only if the instant is orphaned: no prompt.
				var cfg *vsphere.Config
				if v, err := vsConfig(c, false); err == nil && v.URL != "" {
					cfg = &v
				}
				res, err := svc.EndInstant(c.Context, vm, keep, cfg)
				if err != nil {
					return err
				}
				return show(res)
			}
			// No service: whatever served it is gone; end it from its record.
			return withRepo(c, false, func(r *store.Repo) error {
				cl, cerr := vsConnect(c)
				if cerr == nil {
					defer cl.Logout(context.WithoutCancel(c.Context))
				}
				res, err := vsphere.EndInstant(c.Context, cl, r, vm, keep)
				if err != nil {
					if cerr != nil && errors.Is(err, vsphere.ErrBadInput) {
						err = fmt.Errorf("%w (%v)", err, cerr)
					}
					return vsErr(err)
				}
				return show(res)
			})
		},
	}
}

func vsMigrate() *cli.Command {
	return &cli.Command{
		Name:      "migrate",
		Usage:     "make an instant VM permanent: copy its clones' newest state to a datastore and re-create it there",
		ArgsUsage: "VM",
		Flags: append([]cli.Flag{
			&cli.BoolFlag{Name: "power-off", Usage: "power the VM off first if it runs (the copy is cold)"},
			&cli.BoolFlag{Name: "keep", Usage: "keep the clones after the copy"},
		}, placeFlags(true)...),
		Action: func(c *cli.Context) error {
			if err := needArgs(c, 1, "a VM name"); err != nil {
				return err
			}
			vm := c.Args().First()
			show := func(res vsphere.Registered) error {
				return output(c, res, fmt.Sprintf("VM %s now runs from %s\n", res.VM, res.VMX))
			}
			svc, err := dialService(c)
			if err != nil {
				return err
			}
			if svc != nil {
				cfg, err := vsConfig(c, true)
				if err != nil {
					return err
				}
				res, err := svc.MigrateInstant(c.Context, vm, service.MigrateRequest{VSphere: cfg, Place: placement(c),
					PowerOff: c.Bool("power-off"), Keep: c.Bool("keep")})
				if err != nil {
					return err
				}
				return show(res)
			}
			// No service: whatever served it is gone; migrate from its record.
			return withRepo(c, false, func(r *store.Repo) error {
				return withVSphere(c, func(cl *vsphere.Client) error {
					res, err := cl.Migrate(c.Context, r, nil, vsphere.MigrateOptions{
						VM: vm, Place: placement(c), PowerOff: c.Bool("power-off"), Keep: c.Bool("keep")})
					if err != nil {
						return err
					}
					return show(res)
				})
			})
		},
	}
}

func vsWriteback() *cli.Command {
	return &cli.Command{
		Name:      "writeback",
		Usage:     "failback: overwrite the disks of a powered-off VM with SOURCE at an instant",
		ArgsUsage: "SOURCE",
		Flags: []cli.Flag{atFlag,
			&cli.StringFlag{Name: "vm", Required: true, Usage: "the VM to write into (powered off, no snapshots)"},
			&cli.BoolFlag{Name: "only-changed", Usage: "compare and send only the blocks that differ"},
			&cli.StringFlag{Name: "datastore-dir", Usage: "where the VM's datastore is mounted here (NFS): write in place, block by block"},
		},
		Action: func(c *cli.Context) error {
			if err := needArgs(c, 1, "a SOURCE (disk or group)"); err != nil {
				return err
			}
			return withRepo(c, true, func(r *store.Repo) error {
				in, err := instantOf(c, r)
				if err != nil {
					return err
				}
				return withVSphere(c, func(cl *vsphere.Client) error {
					update, done := progress(c, "writeback "+in.Source, in.Bytes())
					res, err := cl.Writeback(c.Context, in, vsphere.WritebackOptions{VM: c.String("vm"), OnlyChanged: c.Bool("only-changed"),
						LocalDir: c.String("datastore-dir"), Progress: update})
					done()
					if err != nil {
						return err
					}
					var b strings.Builder
					for _, w := range res {
						fmt.Fprintf(&b, "%s → %s: %d of %d blocks differed, %d written (%s)\n", w.Disk, w.Target, w.Differed, w.Blocks, w.Written, humanBytes(w.Bytes))
					}
					return output(c, res, b.String())
				})
			})
		},
	}
}

func vsList() *cli.Command {
	return &cli.Command{
		Name:  "list",
		Usage: "the VMs Hindsight created, with their points (and, with --repo, the instant recoveries it serves)",
		Action: func(c *cli.Context) error {
			return withVSphere(c, func(cl *vsphere.Client) error {
				recs, err := cl.List(c.Context)
				if err != nil {
					return err
				}
				if c.Bool("json") {
					return printJSON(c, recs)
				}
				rows := make([][]string, len(recs))
				for i, r := range recs {
					rows[i] = []string{r.VM, r.Mode, r.Source, fmtTime(r.Time), fmt.Sprint(r.Seq), r.Power, r.VMX}
				}
				return table(c.App.Writer, []string{"VM", "MODE", "SOURCE", "TIME", "SEQ", "POWER", "VMX"}, rows)
			})
		},
	}
}

func vsProtect() *cli.Command {
	return &cli.Command{
		Name:      "protect",
		Usage:     "agentless source: journal a VM's disks from snapshots into a disk or group, every interval",
		ArgsUsage: "VM",
		Description: `Each cycle snapshots the VM (quiesced with --quiesce; crash-consistent if that fails),
reads what changed since the previous cycle (changed block tracking when the VM has it,
else the whole disk compared by hash), journals it as one point of --to (a disk, or a
group whose disks match the VM's in order and size), bookmarks it vsphere-<vm>-<time>
(kind application or crash; the report is in the bookmark's info) and removes the
snapshot. Holds the repository's writer lock while it runs.`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "to", Required: true, Usage: "the disk or group receiving the VM's disks"},
			&cli.DurationFlag{Name: "every", Usage: "run a cycle this often until Ctrl-C (default: once)"},
			&cli.BoolFlag{Name: "quiesce", Usage: "quiesce the guest through VMware Tools for each snapshot"},
		},
		Action: func(c *cli.Context) error {
			if err := needArgs(c, 1, "a VM name"); err != nil {
				return err
			}
			return withRepo(c, false, func(r *store.Repo) error {
				return withVSphere(c, func(cl *vsphere.Client) error {
					for {
						cap, err := cl.ProtectOnce(c.Context, r, vsphere.ProtectOptions{VM: c.Args().First(), Target: c.String("to"), Quiesce: c.Bool("quiesce")})
						if err != nil {
							return err
						}
						var b strings.Builder
						fmt.Fprintf(&b, "%s → %s seq %d (%s, quiesced %v)", cap.VM, cap.Bookmark, cap.Point.Seq, fmtTime(cap.Point.Time), cap.Quiesced)
						for _, d := range cap.Disks {
							fmt.Fprintf(&b, "; %s: %s, %d blocks changed", d.Disk, d.Method, d.Changed)
						}
						if err := output(c, cap, b.String()+"\n"); err != nil {
							return err
						}
						if c.Duration("every") <= 0 {
							return nil
						}
						select {
						case <-c.Context.Done():
							return nil
						case <-time.After(c.Duration("every")):
						}
					}
				})
			})
		},
	}
}
