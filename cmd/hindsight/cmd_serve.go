package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"time"

	"github.com/hindsight-cdp/hindsight/cdp/replica"
	"github.com/hindsight-cdp/hindsight/service"
	"github.com/hindsight-cdp/hindsight/store"
	"github.com/urfave/cli/v2"
	"golang.org/x/sync/errgroup"
)

func cmdServe() *cli.Command {
	return &cli.Command{
		Name:  "serve",
		Usage: "run the repository's service: the one writer, protecting every disk it is asked to",
		Description: `The service holds the repository's writer and runs every front end that writes:
taps and NBD exports ('hindsight protect'), clones ('hindsight clone'), bookmarks,
imports, disks and groups made while it runs. Commands reach it over the owner-only
socket R/run/control.sock (HTTP with JSON; the protocol is documented in the service
package). What it protects is recorded in R/service.json: after a restart, clean or
after a crash or reboot, it brings every protection and clone back by itself, and
detaches the dead taps a killed service left behind.

  hindsight --repo /srv/hs serve --metrics 127.0.0.1:9465 &
  hindsight --repo /srv/hs protect web --mount /run/hs/web
  hindsight --repo /srv/hs protections

With --replication-listen it takes replication streams from other sites ('hindsight
replicate' there) into replicas here: TLS 1.3 with --tls-cert/--tls-key, each source
known by a token in --tokens, each token allowed the names listed after it.

  hindsight --repo /srv/dr serve --replication-listen 0.0.0.0:7443 --tls-cert dr.pem --tls-key dr.key --tokens /etc/hindsight/tokens

Every --prune-every (1h) it applies every retention policy ('hindsight policy') and
then runs gc, logging what each removed and freed (and counting it in the metrics); a
run that fails is logged and the service goes on.

SIGTERM (systemctl stop) makes everything durable, unmounts and exits 0; a SIGKILL
loses nothing that was acknowledged. Logs go to stderr (journald adds the time);
--metrics serves Prometheus text at http://ADDR/metrics. The unit file
scripts/hindsight@.service runs it under systemd for /srv/hindsight/NAME.`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "metrics", Usage: "serve Prometheus metrics at `ADDR` (e.g. 127.0.0.1:9465)"},
			&cli.DurationFlag{Name: "sync-interval", Value: defaultSyncInterval, Usage: "sync and publish the journal this long after a write"},
			&cli.StringFlag{Name: "log-format", Value: "text", Usage: "text or json"},
			&cli.DurationFlag{Name: "prune-every", Value: time.Hour, Usage: "apply every retention policy, then gc, this often (0: never)"},
			minFreeFlag(),
			&cli.StringFlag{Name: "replication-listen", Usage: "take replication streams from other sites at `ADDR` (e.g. 0.0.0.0:7443)"},
			&cli.StringFlag{Name: "tls-cert", Usage: "PEM `FILE` of the replication listener's certificate (with its chain)"},
			&cli.StringFlag{Name: "tls-key", Usage: "PEM `FILE` of the certificate's private key"},
			&cli.StringFlag{Name: "tokens", Usage: "`FILE` of the sources' tokens (owner-only): lines 'SOURCE TOKEN NAME[,NAME...]'"},
			&cli.BoolFlag{Name: "insecure", Usage: "a replication listener without TLS: only on a loopback address"},
		},
		Action: func(c *cli.Context) error {
			if err := needArgs(c, 0, "no arguments"); err != nil {
				return err
			}
			if c.Duration("sync-interval") <= 0 {
				return usagef("--sync-interval must be positive")
			}
			if c.Duration("prune-every") < 0 {
				return usagef("--prune-every must be positive, or 0 to never prune")
			}
			log, err := newLogger(c.String("log-format"))
			if err != nil {
				return err
			}
			return withRepo(c, false, func(r *store.Repo) error {
				svc, err := service.New(r, service.Options{SyncInterval: c.Duration("sync-interval"), Record: true, Logger: log, PruneEvery: c.Duration("prune-every")})
				if err != nil {
					return err
				}
				svc.Restore(c.Context)
				g, ctx := errgroup.WithContext(c.Context)
				if addr := c.String("metrics"); addr != "" {
					a, wait, err := svc.ServeMetrics(ctx, addr)
					if err != nil {
						return usageErr(err)
					}
					log.Info("metrics", "url", fmt.Sprintf("http://%s/metrics", a))
					g.Go(wait)
				}
				if addr := c.String("replication-listen"); addr != "" {
					l, err := replicaListen(c, addr)
					if err != nil {
						return err
					}
					_, wait, err := svc.ServeReplicas(ctx, l)
					if err != nil {
						return usageErr(err)
					}
					g.Go(wait)
				}
				g.Go(func() error { return svc.ServeControl(ctx) })
				g.Go(func() error { return svc.Run(ctx) })
				log.Info("service ready", "repo", r.Dir(), "socket", service.SocketPath(r.Dir()), "pid", os.Getpid())
				sdNotify("READY=1")
				err = g.Wait()
				sdNotify("STOPPING=1")
				return err
			})
		},
	}
}

// replicaListen reads the replication listener's certificate and tokens.
func replicaListen(c *cli.Context, addr string) (service.ReplicaListen, error) {
	l := service.ReplicaListen{Addr: addr}
	if c.String("tokens") == "" {
		return l, usagef("--replication-listen needs --tokens: the file of the sources allowed to send, and what each may write")
	}
	toks, err := replica.LoadTokens(c.String("tokens"))
	if err != nil {
		return l, usageErr(err)
	}
	l.Tokens = toks
	switch cert, key := c.String("tls-cert"), c.String("tls-key"); {
	case cert != "" && key != "":
		if l.TLS, err = replica.ServerTLS(cert, key); err != nil {
			return l, usageErr(err)
		}
	case cert != "" || key != "":
		return l, usagef("--tls-cert and --tls-key go together")
	case !c.Bool("insecure"):
		return l, usagef("--replication-listen needs --tls-cert and --tls-key (or --insecure, on a loopback address only)")
	}
	return l, nil
}

// newLogger logs to stderr as text or JSON.
func newLogger(format string) (*slog.Logger, error) {
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(os.Stderr, nil)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(os.Stderr, nil)), nil
	}
	return nil, usagef("--log-format %s: want text or json", format)
}

// sdNotify tells systemd (Type=notify) how the service is doing; without
// NOTIFY_SOCKET it does nothing.
func sdNotify(state string) {
	path := os.Getenv("NOTIFY_SOCKET")
	if path == "" {
		return
	}
	if path[0] == '@' {
		path = "\x00" + path[1:]
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return
	}
	defer c.Close()
	c.Write([]byte(state))
}

// dialService returns the running service's client, nil when none runs.
func dialService(c *cli.Context) (*service.Client, error) {
	dir, err := repoDir(c)
	if err != nil {
		return nil, err
	}
	cl, err := service.Dial(c.Context, dir)
	if errors.Is(err, service.ErrNoService) {
		return nil, nil
	}
	return cl, err
}

// withWriter runs fn on the repository's writer: the service when one
// runs, else the repository opened here.
func withWriter(c *cli.Context, fn func(service.Writer) error) error {
	cl, err := dialService(c)
	if err != nil {
		return err
	}
	if cl != nil {
		return fn(cl)
	}
	return withRepo(c, false, func(r *store.Repo) error { return fn(service.Local{R: r}) })
}

// foreground runs a service in this process that holds what start makes
// (a protection or a clone, not recorded) and lives as long as it does:
// until a signal, or until its front end ends (an unmount from outside).
// Other commands reach it over the control socket as they would `serve`.
func foreground(c *cli.Context, start func(context.Context, *service.Service) (service.ProtectionStatus, error), ready func(service.ProtectionStatus)) error {
	return withRepo(c, false, func(r *store.Repo) error {
		svc, err := service.New(r, service.Options{SyncInterval: c.Duration("sync-interval"), Logger: slog.New(slog.NewTextHandler(os.Stderr, nil))})
		if err != nil {
			return err
		}
		ctx, cancel := context.WithCancel(c.Context)
		defer cancel()
		st, err := start(ctx, svc)
		if err != nil {
			return err
		}
		ready(st)
		g, gctx := errgroup.WithContext(ctx)
		g.Go(func() error { return svc.ServeControl(gctx) })
		g.Go(func() error { return svc.Run(gctx) })
		g.Go(func() error {
			select {
			case <-svc.Ended(st.Name):
				cancel() // unmounted from outside: the documented way to end it
			case <-gctx.Done():
			}
			return nil
		})
		return g.Wait()
	})
}

// defaultSyncInterval bounds what a crash can lose of writes never fsynced,
// and how far other processes' views lag behind a capture front end.
const defaultSyncInterval = time.Second

func stderrf(f string, args ...any) { fmt.Fprintf(os.Stderr, "hindsight: "+f+"\n", args...) }
