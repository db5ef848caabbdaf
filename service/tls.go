package service

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"

	"github.com/hindsight-cdp/hindsight/cdp/replica"
)

// ServerTLS loads an NBD endpoint's TLS: a certificate and key, and
// optionally the CA whose certificates clients must present.
func ServerTLS(cert, key, clientCA string) (*tls.Config, error) {
	if cert == "" && key == "" {
		if clientCA != "" {
			return nil, fmt.Errorf("%w: --tls-client-ca needs --tls-cert and --tls-key", ErrBadSpec)
		}
		return nil, nil
	}
	if cert == "" || key == "" {
		return nil, fmt.Errorf("%w: --tls-cert and --tls-key go together", ErrBadSpec)
	}
	pair, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		return nil, fmt.Errorf("%w: load TLS certificate: %v", ErrBadSpec, err)
	}
	conf := &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}
	if clientCA != "" {
		pem, err := os.ReadFile(clientCA)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrBadSpec, err)
		}
		conf.ClientCAs = x509.NewCertPool()
		if !conf.ClientCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%w: --tls-client-ca %s: no PEM certificate in it", ErrBadSpec, clientCA)
		}
		conf.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return conf, nil
}

// checkNBD refuses TCP that any local user (or anyone) could use unasked.
func checkNBD(network, addr string, conf *tls.Config, insecureLocal bool) error {
	clientCerts := conf != nil && conf.ClientCAs != nil
	switch {
	case network == "unix" && insecureLocal:
		return fmt.Errorf("%w: --insecure-local is for TCP on loopback; the Unix socket needs no such exception", ErrBadSpec)
	case network == "unix", clientCerts:
		return nil
	case !replica.IsLoopback(addr) && insecureLocal:
		return fmt.Errorf("%w: --insecure-local is only allowed on a loopback address, not %s: give --tls-cert, --tls-key and --tls-client-ca", ErrBadSpec, addr)
	case !replica.IsLoopback(addr):
		return fmt.Errorf("%w: %s is not a loopback address: give --tls-cert, --tls-key and --tls-client-ca", ErrBadSpec, addr)
	case !insecureLocal:
		return fmt.Errorf("%w: %s is TCP, which every local user can reach: give client certificates (--tls-cert, --tls-key and --tls-client-ca), "+
			"or --insecure-local to let every local user read and write the disks, or use an owner-only Unix socket (unix:PATH)", ErrBadSpec, addr)
	}
	return nil
}

func splitHostPort(addr string) (string, string, error) { return net.SplitHostPort(addr) }
