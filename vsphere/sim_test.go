package vsphere

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"io"
	"net/url"
	"os/exec"
	"testing"
	"time"

	"github.com/hindsight-cdp/hindsight/cdp"
	"github.com/hindsight-cdp/hindsight/store"
	"github.com/hindsight-cdp/hindsight/store/storetest"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/zeebo/blake3"
)

// sim is an in-process vCenter simulator with TLS.
type sim struct {
	m   *simulator.Model
	srv *simulator.Server
	url *url.URL // without user information
	ca  string   // PEM of the server's certificate
}

func newSim(t *testing.T, user *url.Userinfo) *sim {
	t.Helper()
	m := simulator.VPX()
	if err := m.Create(); err != nil {
		t.Fatal(err)
	}
	m.Service.TLS = new(tls.Config)
	if user != nil {
		m.Service.Listen = &url.URL{User: user}
	}
	srv := m.Service.NewServer()
	t.Cleanup(func() { srv.Close(); m.Remove() })
	ca, err := srv.CertificateFile()
	if err != nil {
		t.Fatal(err)
	}
	u := *srv.URL
	u.User = nil
	return &sim{m: m, srv: srv, url: &u, ca: ca}
}

// connect logs in with the simulator's default user.
func (s *sim) connect(t *testing.T) *Client {
	t.Helper()
	ctx := context.Background()
	c, err := Connect(ctx, Config{URL: s.url.String(), Username: "user", Password: "pass", CAFile: s.ca, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Logout(context.Background()) })
	return c
}

// object returns the simulator's own object behind ref, for tests that
// set what the API cannot (free space, change IDs).
func (s *sim) object(ref mo.Reference) mo.Reference {
	return s.m.Service.Context.Map.Get(ref.Reference())
}

// dsDir is the local folder behind a datastore.
func (s *sim) dsDir(t *testing.T, c *Client, name string) string {
	t.Helper()
	ds, err := c.datastore(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	sum, err := ds.summary(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return sum.Url
}

// newRepo makes a writer repository holding disks (name → size), each
// imported once with random content; with group set they form that group.
func newRepo(t *testing.T, group string, sizes map[string]int64, names ...string) *store.Repo {
	t.Helper()
	r, _ := storetest.Repo(t)
	for _, n := range names {
		if _, err := r.CreateDisk(n, sizes[n], 4096); err != nil {
			t.Fatal(err)
		}
	}
	if group != "" {
		if _, err := r.CreateGroup(group, names); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range names {
		d, err := r.Disk(n)
		if err != nil {
			t.Fatal(err)
		}
		img := randomImage(sizes[n])
		if _, err := cdp.Import(context.Background(), r, d, bytesAt(img), int64(len(img)), time.Time{}, nil); err != nil {
			t.Fatal(err)
		}
	}
	return r
}

// randomImage is size bytes: random 64 KiB runs with zero gaps.
func randomImage(size int64) []byte {
	b := make([]byte, size)
	for off := int64(0); off < size; off += 256 << 10 {
		rand.Read(b[off:min(off+64<<10, size)])
	}
	return b
}

type bytesAt []byte

func (b bytesAt) ReadAt(p []byte, off int64) (int, error) {
	if off >= int64(len(b)) {
		return 0, io.EOF
	}
	n := copy(p, b[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// hashOf is the BLAKE3 of size bytes of r.
func hashOf(t *testing.T, r io.ReaderAt, size int64) string {
	t.Helper()
	h := blake3.New()
	if _, err := io.Copy(h, io.NewSectionReader(r, 0, size)); err != nil {
		t.Fatal(err)
	}
	return string(h.Sum(nil))
}

func qemuCheck(t *testing.T, file string) {
	t.Helper()
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Fatal("qemu-img is not installed: run 'make deps'")
	}
	out, err := exec.Command("qemu-img", "check", file).CombinedOutput()
	if err != nil {
		t.Fatalf("qemu-img check %s: %v\n%s", file, err, out)
	}
	out, err = exec.Command("qemu-img", "info", "--output=json", file).CombinedOutput()
	if err != nil {
		t.Fatalf("qemu-img info %s: %v\n%s", file, err, out)
	}
}
