package main

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"sort"
	"strings"

	"github.com/hindsight-cdp/hindsight/cdp"
	"github.com/hindsight-cdp/hindsight/cdp/control"
	"github.com/hindsight-cdp/hindsight/cdp/nbd"
	"github.com/hindsight-cdp/hindsight/store"
	"github.com/urfave/cli/v2"
	"golang.org/x/sync/errgroup"
)

func cmdServeNBD() *cli.Command {
	return &cli.Command{
		Name:      "serve-nbd",
		Usage:     "serve disks over NBD, journaling every write",
		ArgsUsage: "DISK|GROUP...",
		Description: `Each DISK (every disk of a GROUP) is an NBD export of that name, for QEMU/KVM and
NBD clients; a group's disks share one timeline, so every instant is consistent
across them:

  hindsight --repo R serve-nbd web --listen 127.0.0.1:10809 &
  qemu-io -f raw nbd://127.0.0.1:10809/web -c 'write -P 0xab 0 1M'
  qemu-system-x86_64 -drive file=nbd://127.0.0.1:10809/web,format=raw ...

Writes are journaled as in 'protect'; NBD FLUSH and FUA return once everything
acknowledged before is durable. Requests must be aligned to 512-byte sectors.
Listening beyond loopback needs TLS (--tls-cert and --tls-key) and client
certificates signed by --tls-client-ca (each client's certificate is its token;
qemu and libnbd read client-cert.pem and client-key.pem from their TLS
directory): the disks hold
customers' data.`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "listen", Value: "127.0.0.1:10809", Usage: "address to listen on"},
			&cli.StringFlag{Name: "tls-cert", Usage: "PEM certificate; with --tls-key, clients must use TLS"},
			&cli.StringFlag{Name: "tls-key", Usage: "PEM private key of --tls-cert"},
			&cli.StringFlag{Name: "tls-client-ca", Usage: "PEM `CA` whose certificates clients must present (needs --tls-cert)"},
			&cli.DurationFlag{Name: "sync-interval", Value: defaultSyncInterval, Usage: "sync and publish the journal this often"},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() < 1 {
				return usagef("serve-nbd takes one or more DISKs; see 'hindsight serve-nbd --help'")
			}
			tlsConf, err := serverTLS(c.String("tls-cert"), c.String("tls-key"), c.String("tls-client-ca"))
			if err != nil {
				return err
			}
			if (tlsConf == nil || tlsConf.ClientCAs == nil) && !isLoopback(c.String("listen")) {
				return usagef("--listen %s is not a loopback address: give --tls-cert, --tls-key and --tls-client-ca", c.String("listen"))
			}
			return withRepo(c, false, func(r *store.Repo) error {
				devs := map[string]*cdp.Device{}
				for _, name := range c.Args().Slice() {
					_, disks, err := r.Members(name) // a group serves all its disks
					if err != nil {
						return err
					}
					for _, d := range disks {
						devs[d.Name] = cdp.NewDevice(r, d, "nbd")
					}
				}
				l, err := net.Listen("tcp", c.String("listen"))
				if err != nil {
					return err
				}
				names := make([]string, 0, len(devs))
				for n := range devs {
					names = append(names, n)
				}
				sort.Strings(names)
				srv := nbd.NewServer(nbd.Options{
					Exports: func(name string) (nbd.Backend, error) {
						if d, ok := devs[name]; ok {
							return d, nil
						}
						return nil, fmt.Errorf("no export %q (exports: %s)", name, strings.Join(names, ", "))
					},
					List: func() []string { return names },
					TLS:  tlsConf,
					Logf: stderrf,
				})
				fmt.Fprintf(c.App.ErrWriter, "serving %s over NBD at %s; Ctrl-C ends it\n", strings.Join(names, ", "), l.Addr())
				ctl, err := control.Listen(r.Dir(), control.Local{R: r})
				if err != nil {
					l.Close()
					return err
				}
				g, ctx := errgroup.WithContext(c.Context)
				g.Go(func() error { return ctl.Serve(ctx) })
				g.Go(func() error { return srv.Serve(ctx, l) })
				for _, d := range devs {
					g.Go(func() error { return d.Run(ctx, c.Duration("sync-interval")) })
				}
				err = g.Wait()
				for _, d := range devs {
					if ferr := d.Flush(); err == nil {
						err = ferr
					}
				}
				return err
			})
		},
	}
}

func serverTLS(cert, key, clientCA string) (*tls.Config, error) {
	if cert == "" && key == "" {
		if clientCA != "" {
			return nil, usagef("--tls-client-ca needs --tls-cert and --tls-key")
		}
		return nil, nil
	}
	if cert == "" || key == "" {
		return nil, usagef("--tls-cert and --tls-key go together")
	}
	pair, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		return nil, usagef("load TLS certificate: %v", err)
	}
	conf := &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}
	if clientCA != "" {
		pem, err := os.ReadFile(clientCA)
		if err != nil {
			return nil, usageErr(err)
		}
		conf.ClientCAs = x509.NewCertPool()
		if !conf.ClientCAs.AppendCertsFromPEM(pem) {
			return nil, usagef("--tls-client-ca %s: no PEM certificate in it", clientCA)
		}
		conf.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return conf, nil
}

func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
