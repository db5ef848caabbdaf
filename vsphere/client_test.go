package vsphere

import (
	"context"
	"errors"
	"net/url"
	"strings"
	"testing"
)

// TestConnect: TLS is verified unless asked otherwise, wrong credentials
// get ErrLogin, and the password never appears in an error.
func TestConnect(t *testing.T) {
	ctx := context.Background()
	s := newSim(t, url.UserPassword("admin", "s3cret-pw"))
	withCreds := *s.url
	withCreds.User = url.UserPassword("admin", "s3cret-pw")
	if _, err := Connect(ctx, Config{URL: withCreds.String()}); err == nil || !strings.Contains(err.Error(), "--insecure") {
		t.Fatalf("untrusted certificate: %v", err)
	} else if strings.Contains(err.Error(), "s3cret-pw") {
		t.Fatalf("the error shows the password: %v", err)
	}
	c, err := Connect(ctx, Config{URL: withCreds.String(), Insecure: true})
	if err != nil {
		t.Fatal(err)
	}
	c.Logout(ctx)
	c, err = Connect(ctx, Config{URL: s.url.String(), Username: "admin", Password: "s3cret-pw", CAFile: s.ca})
	if err != nil {
		t.Fatal(err)
	}
	c.Logout(ctx)
	bad := *s.url
	bad.User = url.UserPassword("admin", "wrong-pw")
	_, err = Connect(ctx, Config{URL: bad.String(), CAFile: s.ca})
	if !errors.Is(err, ErrLogin) || strings.Contains(err.Error(), "wrong-pw") {
		t.Fatalf("wrong password: %v", err)
	}
	if _, err := Connect(ctx, Config{URL: s.url.String(), Username: "admin", Password: "s3cret-pw", CAFile: s.ca, Datacenter: "nope"}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown datacenter: %v", err)
	}
}
