package replica

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/url"
	"strconv"
)

// ServerTLS loads a server certificate and key for TLS 1.3.
func ServerTLS(certFile, keyFile string) (*tls.Config, error) {
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("replica: load TLS certificate %s and key %s: %w", certFile, keyFile, err)
	}
	return &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS13}, nil
}

// serverTLS is conf with TLS 1.3 required, whatever the caller set.
func serverTLS(conf *tls.Config) *tls.Config {
	c := conf.Clone()
	if c.MinVersion < tls.VersionTLS13 {
		c.MinVersion = tls.VersionTLS13
	}
	return c
}

// clientTLS trusts only the target's pinned CA, not the system's roots.
func clientTLS(t Target) (*tls.Config, error) {
	host, _, err := net.SplitHostPort(t.Addr)
	if err != nil {
		return nil, fmt.Errorf("replica: target address %q: %w", t.Addr, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(t.CA) {
		return nil, fmt.Errorf("replica: the target's CA (--ca) holds no PEM certificate")
	}
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS13, ServerName: host}, nil
}

// parseURL returns the host:port of an hs://host:port URL.
func parseURL(u string) (string, error) {
	bad := func(why string) error {
		return fmt.Errorf("replica: target %q %s: write hs://HOST:PORT (e.g. hs://dr.example:7443)", u, why)
	}
	p, err := url.Parse(u)
	if err != nil {
		return "", bad("is not a URL")
	}
	switch {
	case p.Scheme != "hs":
		return "", bad("is not an hs:// URL")
	case p.User != nil:
		return "", bad("has a user part (the token goes in --token-file)")
	case p.Opaque != "" || (p.Path != "" && p.Path != "/") || p.RawQuery != "" || p.Fragment != "":
		return "", bad("has more than a host and a port")
	case p.Hostname() == "":
		return "", bad("has no host")
	}
	port, err := strconv.Atoi(p.Port())
	if err != nil || port < 1 || port > 65535 {
		return "", bad("has no port from 1 to 65535")
	}
	return net.JoinHostPort(p.Hostname(), p.Port()), nil
}

// isLoopback reports whether addr (host:port) is on this machine only.
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

// loopbackListener reports whether ln accepts only from this machine.
func loopbackListener(ln net.Listener) bool {
	a, ok := ln.Addr().(*net.TCPAddr)
	return ok && a.IP.IsLoopback()
}
