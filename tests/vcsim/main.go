// Command vcsim serves govmomi's vCenter simulator on loopback for the
// end-to-end tests, as its own process. It is not part of Hindsight. It
// prints one JSON line (URL without credentials, CA file, datastore
// folders) and serves until SIGTERM.
package main

import (
	"crypto/tls"
	"encoding/json"
	"flag"
	"fmt"
	"net/url"
	"os"
	"os/signal"
	"syscall"

	"github.com/vmware/govmomi/simulator"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to listen on")
	user := flag.String("user", "user:pass", "accepted user:password")
	flag.Parse()
	m := simulator.VPX()
	if err := m.Create(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer m.Remove()
	m.Service.TLS = new(tls.Config)
	name, pass, _ := cut(*user)
	m.Service.Listen = &url.URL{Host: *listen, User: url.UserPassword(name, pass)}
	s := m.Service.NewServer()
	defer s.Close()
	ca, err := s.CertificateFile()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	u := *s.URL
	u.User = nil
	dirs := map[string]string{}
	for _, e := range m.Service.Context.Map.All("Datastore") {
		ds := e.(*simulator.Datastore)
		dirs[ds.Name] = ds.Summary.Url
	}
	json.NewEncoder(os.Stdout).Encode(map[string]any{"url": u.String(), "ca": ca, "datastores": dirs})
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, os.Interrupt)
	<-sig
}

func cut(s string) (string, string, bool) {
	for i := range s {
		if s[i] == ':' {
			return s[:i], s[i+1:], true
		}
	}
	return s, "", false
}
