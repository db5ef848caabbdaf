package tests

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/zeebo/blake3"
)

// vcsim is the simulator helper (tests/vcsim) running as its own process.
type vcsim struct {
	URL        string            `json:"url"`
	CA         string            `json:"ca"`
	Datastores map[string]string `json:"datastores"`
}

func startVCSim(t *testing.T) vcsim {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "vcsim")
	if out, err := exec.Command("go", "build", "-o", bin, "./vcsim").CombinedOutput(); err != nil {
		t.Fatalf("build vcsim: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, "-user", "admin:s3cret-pw")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait() })
	var v vcsim
	line, err := bufio.NewReader(out).ReadBytes('\n')
	if err != nil || json.Unmarshal(line, &v) != nil {
		t.Fatalf("vcsim said %q: %v", line, err)
	}
	return v
}

func b3File(t *testing.T, name string) string {
	t.Helper()
	f, err := os.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := blake3.New()
	io.Copy(h, f)
	return fmt.Sprintf("%x", h.Sum(nil))
}

// TestVSphereE2E drives `hindsight vsphere` against the simulator in its own
// process: copy mode of a two-disk group (qemu-img check, byte-identical
// files, name clash, --replace), bad input, and instant recovery ended by
// instant-end, which leaves the folder and the journal as they were.
func TestVSphereE2E(t *testing.T) {
	needRoot(t)
	needTools(t, "qemu-img")
	sim := startVCSim(t)
	u, _ := url.Parse(sim.URL)
	u.User = url.UserPassword("admin", "s3cret-pw")
	t.Setenv("GOVC_URL", u.String())
	t.Setenv("GOVC_TLS_CA_CERTS", sim.CA)
	t.Setenv("GOVC_PASSWORD", "")
	repo := newRepo(t)
	work := t.TempDir()
	for _, d := range []struct {
		name string
		size int
	}{{"web-os", 8 << 20}, {"web-data", 4 << 20}} {
		ok(t, "--repo", repo, "disk", "create", d.name, "--size", fmt.Sprint(d.size))
	}
	ok(t, "--repo", repo, "group", "create", "web", "web-os", "web-data")
	for _, n := range []string{"web-os", "web-data"} {
		size := map[string]int{"web-os": 8 << 20, "web-data": 4 << 20}[n]
		img := make([]byte, size)
		for off := 0; off < size; off += 256 << 10 {
			rand.Read(img[off : off+64<<10])
		}
		p := filepath.Join(work, n+".img")
		os.WriteFile(p, img, 0o600)
		ok(t, "--repo", repo, "import", n, p)
	}
	pool := "/DC0/host/DC0_C0/Resources"
	ds := sim.Datastores["LocalDS_0"]

	var reg struct {
		VM    string
		Disks []struct{ Disk, Descriptor, Controller, BLAKE3 string }
	}
	out := ok(t, "--repo", repo, "--json", "vsphere", "register", "web", "--datastore", "LocalDS_0", "--pool", pool,
		"--name", "web-restored", "--controller", "pvscsi", "--power-on", "--memory", "512")
	if err := json.Unmarshal([]byte(out), &reg); err != nil || len(reg.Disks) != 2 {
		t.Fatalf("register: %v\n%s", err, out)
	}
	for _, d := range reg.Disks {
		exp := ok(t, "--repo", repo, "--json", "export", d.Disk, "--out", filepath.Join(work, d.Disk+".raw"))
		var e struct{ BLAKE3 string }
		json.Unmarshal([]byte(exp), &e)
		flat := filepath.Join(ds, "web-restored", d.Disk+"-flat.vmdk")
		if got := b3File(t, flat); got != e.BLAKE3 || d.BLAKE3 != e.BLAKE3 || d.Controller != "pvscsi" {
			t.Errorf("%s: file %s, reported %s, instant %s, controller %s", d.Disk, got, d.BLAKE3, e.BLAKE3, d.Controller)
		}
		run(t, "qemu-img", "check", filepath.Join(ds, "web-restored", d.Disk+".vmdk"))
	}
	if r := hs(t, "--repo", repo, "vsphere", "register", "web", "--datastore", "LocalDS_0", "--pool", pool, "--name", "web-restored"); r.code != 4 || !strings.Contains(r.stderr, "--replace") {
		t.Errorf("name clash: exit %d: %s", r.code, r.stderr)
	}
	ok(t, "--repo", repo, "vsphere", "register", "web", "--datastore", "LocalDS_0", "--pool", pool, "--name", "web-restored", "--replace")
	var list []struct{ VM, Mode, Source string }
	json.Unmarshal([]byte(ok(t, "--json", "vsphere", "list")), &list)
	if len(list) != 1 || list[0].VM != "web-restored" || list[0].Source != "web" {
		t.Errorf("list: %+v", list)
	}

	bad := []struct {
		args []string
		code int
		says string
	}{
		{[]string{"--datastore", "nope", "--pool", pool, "--name", "x"}, 3, `datastore "nope"`},
		{[]string{"--datastore", "LocalDS_0", "--pool", "/DC0/host/nope", "--name", "x"}, 3, "resource pool"},
		{[]string{"--datastore", "LocalDS_0", "--pool", pool, "--folder", "/DC0/vm/nope", "--name", "x"}, 3, "folder"},
		{[]string{"--datastore", "LocalDS_0", "--pool", pool, "--name", "x", "--controller", "floppy"}, 2, "controller"},
	}
	for _, b := range bad {
		r := hs(t, append([]string{"--repo", repo, "vsphere", "register", "web"}, b.args...)...)
		if r.code != b.code || !strings.Contains(r.stderr, b.says) {
			t.Errorf("%v: exit %d: %s", b.args, r.code, r.stderr)
		}
	}
	wrong := *u
	wrong.User = url.UserPassword("admin", "wrong-pw")
	r := hs(t, "--repo", repo, "vsphere", "list", "--url", wrong.String())
	if r.code != 2 || !strings.Contains(r.stderr, "login failed") || strings.Contains(r.stderr, "wrong-pw") {
		t.Errorf("wrong password: exit %d: %s", r.code, r.stderr)
	}
	if _, err := os.Stat(filepath.Join(ds, "x")); err == nil {
		t.Error("a failed register left a folder")
	}

	// Instant recovery, ended from another process.
	nfs := filepath.Join(t.TempDir(), "hindsight-nfs")
	os.Mkdir(nfs, 0o755)
	disksBefore := ok(t, "--repo", repo, "--json", "disk", "list")
	at := time.Now().UTC().Format(time.RFC3339Nano)
	sumBefore := ok(t, "--repo", repo, "--json", "export", "web-os", "--at", at, "--out", "-", "--format", "raw")
	begin := time.Now()
	p := start(t, nil, "--repo", repo, "vsphere", "instant", "web", "--at", at, "--name", "web-instant", "--pool", pool,
		"--nfs-datastore", "hindsight-nfs", "--nfs-dir", nfs, "--nfs-host", "127.0.0.1", "--nfs-local-path", nfs, "--power-on")
	// Ready once registered and powered on: it says so on stdout.
	p.waitUntil(t, "instant VM", func() bool { return strings.Contains(p.stdout.String(), "registered from") })
	t.Logf("instant VM registered %s after the command started", time.Since(begin))
	flat := filepath.Join(nfs, "web-instant", "web-os", "web-os-flat.vmdk")
	run(t, "qemu-img", "check", filepath.Join(nfs, "web-instant", "web-os", "web-os.vmdk"))
	f, err := os.OpenFile(flat, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt(make([]byte, 1<<20), 0)
	f.Close()
	ok(t, "--repo", repo, "vsphere", "instant-end", "web-instant")
	select {
	case <-p.done:
		if p.err != nil {
			t.Fatalf("instant process: %v\n%s", p.err, p.stderr.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the instant process still runs")
	}
	if ents, _ := os.ReadDir(nfs); len(ents) != 0 {
		t.Errorf("left in the NFS folder: %v", ents)
	}
	if after := ok(t, "--repo", repo, "--json", "disk", "list"); after != disksBefore {
		t.Errorf("disks changed:\n%s\n%s", disksBefore, after)
	}
	if sumAfter := ok(t, "--repo", repo, "--json", "export", "web-os", "--at", at, "--out", "-", "--format", "raw"); sumAfter != sumBefore {
		t.Error("the instant changed")
	}

	// Migrate: a second instant, written by its VM, made permanent on
	// LocalDS_0: the VM is created there with the clone's newest state, the
	// instant process ends, and the clones are dropped.
	p = start(t, nil, "--repo", repo, "vsphere", "instant", "web", "--at", at, "--name", "web-mig", "--pool", pool,
		"--nfs-datastore", "hindsight-nfs", "--nfs-dir", nfs, "--nfs-host", "127.0.0.1", "--nfs-local-path", nfs, "--power-on")
	p.waitUntil(t, "instant VM to migrate", func() bool { return strings.Contains(p.stdout.String(), "registered from") })
	f, err = os.OpenFile(filepath.Join(nfs, "web-mig", "web-os", "web-os-flat.vmdk"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	written := bytes.Repeat([]byte{0xab}, 1<<20)
	if _, err := f.WriteAt(written, 1<<20); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if r := hs(t, "--repo", repo, "vsphere", "migrate", "web-mig", "--datastore", "LocalDS_0", "--pool", pool); r.code == 0 {
		t.Fatal("migrate of a powered-on VM without --power-off succeeded")
	}
	ok(t, "--repo", repo, "vsphere", "migrate", "web-mig", "--datastore", "LocalDS_0", "--pool", pool, "--power-off")
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		t.Fatal("the instant process still runs after migrate")
	}
	want := []byte(sumBefore) // the instant's raw image (export --out - printed it)
	copy(want[1<<20:], written)
	got, err := os.ReadFile(filepath.Join(ds, "web-mig", "web-os-flat.vmdk"))
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("migrated disk differs from the clone's newest state (%v)", err)
	}
	run(t, "qemu-img", "check", filepath.Join(ds, "web-mig", "web-os.vmdk"))
	json.Unmarshal([]byte(ok(t, "--json", "vsphere", "list")), &list)
	found := false
	for _, v := range list {
		found = found || v.VM == "web-mig"
	}
	if !found {
		t.Errorf("list after migrate: %+v", list)
	}
	if after := ok(t, "--repo", repo, "--json", "disk", "list"); after != disksBefore {
		t.Errorf("clones left after migrate:\n%s\n%s", disksBefore, after)
	}
}
