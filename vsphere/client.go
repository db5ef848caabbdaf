package vsphere

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/vmware/govmomi"
	"github.com/vmware/govmomi/fault"
	"github.com/vmware/govmomi/find"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/session"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

// Config says where and how to connect. URL may carry user:password (as
// GOVC_URL does); Username and Password, when set, take precedence.
// It crosses the service's owner-only control socket as JSON (credentials
// included) and is never logged.
type Config struct {
	URL        string `json:"url"` // https://vcenter/sdk, or a bare host name
	Username   string `json:"username,omitempty"`
	Password   string `json:"password,omitempty"`
	Insecure   bool   `json:"insecure,omitempty"`   // skip TLS verification (--insecure)
	CAFile     string `json:"ca_file,omitempty"`    // PEM file(s) of CAs to trust besides the system's
	Datacenter string `json:"datacenter,omitempty"` // inventory path or name; "" means the only one
	// Logf receives progress messages; it never sees credentials.
	Logf func(format string, args ...any) `json:"-"`
}

// Client is a logged-in session with one datacenter selected.
type Client struct {
	vc     *govmomi.Client
	finder *find.Finder
	dc     *object.Datacenter
	logf   func(format string, args ...any)
	host   string // server host, for messages
}

// ParseURL splits a GOVC_URL-style address into the server URL (no user
// information) and the credentials it carried.
func ParseURL(raw string) (*url.URL, *url.Userinfo, error) {
	if raw == "" {
		return nil, nil, fmt.Errorf("%w: no server: give --url or set GOVC_URL", ErrBadInput)
	}
	u, err := soap.ParseURL(raw)
	if err != nil {
		// url.Parse quotes the whole input, password included: do not wrap it.
		return nil, nil, fmt.Errorf("%w: server URL is not a URL", ErrBadInput)
	}
	user := u.User
	u.User = nil
	return u, user, nil
}

// Connect logs in and selects the datacenter.
func Connect(ctx context.Context, cfg Config) (*Client, error) {
	u, user, err := ParseURL(cfg.URL)
	if err != nil {
		return nil, err
	}
	name, pass := "", ""
	if user != nil {
		name = user.Username()
		pass, _ = user.Password()
	}
	if cfg.Username != "" {
		name = cfg.Username
	}
	if cfg.Password != "" {
		pass = cfg.Password
	}
	sc := soap.NewClient(u, cfg.Insecure)
	if cfg.CAFile != "" {
		if err := sc.SetRootCAs(cfg.CAFile); err != nil {
			return nil, fmt.Errorf("%w: CA file %s: %v", ErrBadInput, cfg.CAFile, err)
		}
	}
	vc, err := vim25.NewClient(ctx, sc)
	if err != nil {
		return nil, fmt.Errorf("vsphere: connect to %s: %w%s", u.Host, err, tlsHint(err))
	}
	gc := &govmomi.Client{Client: vc, SessionManager: session.NewManager(vc)}
	if err := loginClient(ctx, gc, name, pass); err != nil {
		return nil, err
	}
	logf := cfg.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	cl := &Client{vc: gc, finder: find.NewFinder(vc, false), logf: logf, host: u.Host}
	dc, err := cl.finder.DatacenterOrDefault(ctx, cfg.Datacenter)
	if err != nil {
		cl.Logout(context.WithoutCancel(ctx))
		return nil, notFound(err, "datacenter", cfg.Datacenter)
	}
	cl.dc = dc
	cl.finder.SetDatacenter(dc)
	return cl, nil
}

func loginClient(ctx context.Context, c *govmomi.Client, user, pass string) error {
	if err := c.Login(ctx, url.UserPassword(user, pass)); err != nil {
		if fault.Is(err, &types.InvalidLogin{}) {
			return fmt.Errorf("%w: the server refused user %q and its password", ErrLogin, user)
		}
		return fmt.Errorf("vsphere: log in as %q: %w", user, err)
	}
	return nil
}

// tlsHint explains what to do about a certificate the client cannot verify.
func tlsHint(err error) string {
	s := err.Error()
	if strings.Contains(s, "x509:") || strings.Contains(s, "certificate") {
		return " (the server's certificate is not trusted: give --ca-file PEM, or --insecure to skip verification)"
	}
	return ""
}

// Logout ends the session.
func (c *Client) Logout(ctx context.Context) error { return c.vc.Logout(ctx) }

// Vim is the underlying client, for callers that need raw API calls.
func (c *Client) Vim() *vim25.Client { return c.vc.Client }

// Datacenter is the selected datacenter.
func (c *Client) Datacenter() *object.Datacenter { return c.dc }

// notFound turns a finder error into ErrNotFound with what was looked for.
func notFound(err error, kind, path string) error {
	var nf *find.NotFoundError
	var dnf *find.DefaultNotFoundError
	var mf *find.MultipleFoundError
	var dmf *find.DefaultMultipleFoundError
	switch {
	case errors.As(err, &nf), errors.As(err, &dnf):
		if path == "" {
			return fmt.Errorf("%w: no default %s: name one", ErrNotFound, kind)
		}
		return fmt.Errorf("%w: %s %q", ErrNotFound, kind, path)
	case errors.As(err, &mf), errors.As(err, &dmf):
		return fmt.Errorf("%w: %s %q is ambiguous: give its full inventory path", ErrBadInput, kind, path)
	}
	return fmt.Errorf("vsphere: find %s %q: %w", kind, path, err)
}
