package main

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

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
		},
		Action: func(c *cli.Context) error {
			if c.NArg() < 1 {
				return usagef("serve-nbd takes one or more DISKs; see 'hindsight serve-nbd --help'")
			}
			o := nbdOptions{
				disks:         c.Args().Slice(),
				insecureLocal: c.Bool("insecure-local"),
				syncInterval:  c.Duration("sync-interval"),
			}
			var err error
			if o.tls, err = serverTLS(c.String("tls-cert"), c.String("tls-key"), c.String("tls-client-ca")); err != nil {
				return err
			}
			if o.network, o.addr, err = parseListen(c.String("listen")); err != nil {
				return err
			}
			if err := o.check(); err != nil {
				return err
			}
			if o.network == "tcp" && (o.tls == nil || o.tls.ClientCAs == nil) { // check let it through: --insecure-local on loopback
				fmt.Fprintf(c.App.ErrWriter, "hindsight: warning: --insecure-local: every local user can read and write %s over TCP at %s; the default Unix socket serves only you\n", strings.Join(o.disks, ", "), o.addr)
			}
			return withRepo(c, false, func(r *store.Repo) error { return runServeNBD(c, r, o) })
		},
	}
}

// nbdOptions is what serve-nbd was asked to do.
type nbdOptions struct {
	disks         []string
	network, addr string // "unix" and a path ("" for R/run/nbd.sock), or "tcp" and HOST:PORT
	tls           *tls.Config
	insecureLocal bool
	syncInterval  time.Duration
}

// parseListen splits --listen into a network and an address: unix:PATH,
// tcp:HOST:PORT or HOST:PORT; empty is the repository's default socket.
func parseListen(s string) (network, addr string, err error) {
	switch {
	case s == "":
		return "unix", "", nil
	case strings.HasPrefix(s, "unix:"):
		p := strings.TrimPrefix(s, "unix:")
		if p == "" {
			return "", "", usagef("--listen unix: needs a socket path, e.g. unix:/run/hindsight/nbd.sock")
		}
		if p, err = filepath.Abs(p); err != nil { // clients' URIs need it absolute
			return "", "", usageErr(err)
		}
		return "unix", p, nil
	}
	addr = strings.TrimPrefix(s, "tcp:")
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return "", "", usagef("--listen %s: want unix:PATH, or HOST:PORT for TCP (%v)", s, err)
	}
	return "tcp", addr, nil
}

// check refuses TCP that any local user (or anyone) could use unasked.
func (o nbdOptions) check() error {
	clientCerts := o.tls != nil && o.tls.ClientCAs != nil
	switch {
	case o.network == "unix" && o.insecureLocal:
		return usagef("--insecure-local is for TCP on loopback; the Unix socket needs no such exception")
	case o.network == "unix", clientCerts:
		return nil
	case !isLoopback(o.addr) && o.insecureLocal:
		return usagef("--insecure-local is only allowed on a loopback address, not --listen %s: give --tls-cert, --tls-key and --tls-client-ca", o.addr)
	case !isLoopback(o.addr):
		return usagef("--listen %s is not a loopback address: give --tls-cert, --tls-key and --tls-client-ca", o.addr)
	case !o.insecureLocal:
		return usagef("--listen %s is TCP, which every local user can reach: give client certificates (--tls-cert, --tls-key and --tls-client-ca), "+
			"or --insecure-local to let every local user read and write the disks, or leave out --listen for the owner-only Unix socket", o.addr)
	}
	return nil
}

// listen opens the endpoint: the default socket in R/run (kept 0700, as for
// the control socket), another Unix socket, or TCP.
func (o nbdOptions) listen(r *store.Repo) (net.Listener, error) {
	if o.network == "tcp" {
		return net.Listen("tcp", o.addr)
	}
	path := o.addr
	if path == "" {
		dir, err := filepath.Abs(r.Dir()) // clients' URIs need it absolute
		if err != nil {
			return nil, err
		}
		run := filepath.Join(dir, "run")
		if err := os.MkdirAll(run, 0o700); err != nil {
			return nil, err
		}
		if err := os.Chmod(run, 0o700); err != nil {
			return nil, err
		}
		path = filepath.Join(run, "nbd.sock")
	}
	return nbd.ListenUnix(path)
}

// exportURI is the URI clients give for export name on l (libnbd and qemu
// syntax; TLS is the nbds scheme for libnbd, a tls-creds object for qemu).
func exportURI(l net.Listener, name string, tls bool) string {
	scheme := "nbd"
	if tls {
		scheme = "nbds"
	}
	if a, ok := l.Addr().(*net.UnixAddr); ok {
		return fmt.Sprintf("%s+unix:///%s?socket=%s", scheme, name, a.Name)
	}
	return fmt.Sprintf("%s://%s/%s", scheme, l.Addr(), name)
}

func runServeNBD(c *cli.Context, r *store.Repo, o nbdOptions) error {
	devs := map[string]*cdp.Device{}
	for _, name := range o.disks {
		_, disks, err := r.Members(name) // a group serves all its disks
		if err != nil {
			return err
		}
		for _, d := range disks {
			devs[d.Name] = cdp.NewDevice(r, d, "nbd")
		}
	}
	l, err := o.listen(r)
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
		TLS:  o.tls,
		Logf: stderrf,
	})
	fmt.Fprintf(c.App.ErrWriter, "serving %s over NBD at %s; Ctrl-C ends it\n", strings.Join(names, ", "), l.Addr())
	for _, n := range names {
		fmt.Fprintf(c.App.ErrWriter, "  %s\n", exportURI(l, n, o.tls != nil))
	}
	ctl, err := control.Listen(r.Dir(), control.Local{R: r})
	if err != nil {
		l.Close()
		return err
	}
	g, ctx := errgroup.WithContext(c.Context)
	g.Go(func() error { return ctl.Serve(ctx) })
	g.Go(func() error { return srv.Serve(ctx, l) })
	for _, d := range devs {
		g.Go(func() error { return d.Run(ctx, o.syncInterval) })
	}
	err = g.Wait()
	for _, d := range devs {
		if ferr := d.Flush(); err == nil {
			err = ferr
		}
	}
	return err
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
