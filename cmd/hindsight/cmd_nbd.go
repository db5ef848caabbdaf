package main

import (
	"fmt"
	"path/filepath"
	"strings"

	"github.com/hindsight-cdp/hindsight/service"
	"github.com/urfave/cli/v2"
)

func cmdServeNBD() *cli.Command {
	return &cli.Command{
		Name:      "serve-nbd",
		Usage:     "serve disks over NBD, journaling every write",
		ArgsUsage: "DISK|GROUP...",
		Description: `Each DISK (every disk of a GROUP) is an NBD export of that name, for QEMU/KVM and
NBD clients; a group's disks share one timeline, so every instant is consistent
across them. By default it listens on the Unix socket R/run/nbd.sock, which only
its owner (and root) can open; it prints the URI of each export:

  hindsight --repo R serve-nbd web &
  qemu-io -f raw 'nbd+unix:///web?socket=R/run/nbd.sock' -c 'write -P 0xab 0 1M'
  qemu-system-x86_64 -drive 'file=nbd+unix:///web?socket=R/run/nbd.sock,format=raw' ...

Writes are journaled as in 'protect'; NBD FLUSH and FUA return once everything
acknowledged before is durable. Requests must be aligned to 512-byte sectors.
--listen unix:PATH picks another socket. TCP (--listen HOST:PORT or tcp:HOST:PORT)
needs TLS (--tls-cert and --tls-key) and client certificates signed by
--tls-client-ca (each client's certificate is its token; qemu and libnbd read
client-cert.pem and client-key.pem from their TLS directory): the disks hold
customers' data. On loopback, --insecure-local instead lets every local user in.
A client must choose an export within 10 s; at most 64 connections are served,
8 of them in the handshake, and connections beyond are refused.`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "listen", Usage: "`ADDR`: unix:PATH, or HOST:PORT (tcp:HOST:PORT) for TCP (default: unix:R/run/nbd.sock)"},
			&cli.StringFlag{Name: "tls-cert", Usage: "PEM certificate; with --tls-key, clients must use TLS"},
			&cli.StringFlag{Name: "tls-key", Usage: "PEM private key of --tls-cert"},
			&cli.StringFlag{Name: "tls-client-ca", Usage: "PEM `CA` whose certificates clients must present (needs --tls-cert)"},
			&cli.BoolFlag{Name: "insecure-local", Usage: "serve TCP on loopback without client certificates: every local user can read and write the disks"},
			&cli.DurationFlag{Name: "sync-interval", Value: defaultSyncInterval, Usage: "sync and publish the journal this often"},
			minFreeFlag(),
		},
		Action: func(c *cli.Context) error {
			if c.NArg() < 1 {
				return usagef("serve-nbd takes one or more DISKs; see 'hindsight serve-nbd --help'")
			}
			if c.Duration("sync-interval") <= 0 {
				return usagef("--sync-interval must be positive")
			}
			listen := c.String("listen")
			if listen == "" {
				dir, err := repoDir(c)
				if err != nil {
					return err
				}
				if dir, err = absPath(dir); err != nil { // clients' URIs need it absolute
					return err
				}
				listen = "unix:" + filepath.Join(dir, "run", "nbd.sock")
			} else if strings.HasPrefix(listen, "unix:") {
				var err error
				if listen, err = absListen(listen); err != nil {
					return err
				}
			}
			spec := service.ProtectSpec{Targets: c.Args().Slice(), NBD: &service.NBDSpec{Listen: listen,
				TLSCert: c.String("tls-cert"), TLSKey: c.String("tls-key"), TLSClientCA: c.String("tls-client-ca"), InsecureLocal: c.Bool("insecure-local")}}
			if c.Bool("insecure-local") && !strings.HasPrefix(listen, "unix:") && c.String("tls-client-ca") == "" {
				fmt.Fprintf(c.App.ErrWriter, "hindsight: warning: --insecure-local: every local user can read and write %s over TCP at %s; the default Unix socket serves only you\n",
					strings.Join(spec.Targets, ", "), strings.TrimPrefix(listen, "tcp:"))
			}
			return protect(c, spec)
		},
	}
}
