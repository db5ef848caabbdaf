package tests

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmware/govmomi"
	"github.com/vmware/govmomi/find"
)

// instantSlot is the size of one write of the protected disk's writer.
const instantSlot = 64 << 10

// instantWriter writes a protected disk through its tap file, slot after slot
// round the disk, each write fsynced, and records when each began and was
// acknowledged: the model the journal's instants are checked against.
type instantWriter struct {
	f     *os.File
	slots int
	stop  chan struct{}
	done  chan error

	mu    sync.Mutex
	start []time.Time // by generation
	acked []time.Time
}

func startInstantWriter(t *testing.T, file string, size int64) *instantWriter {
	t.Helper()
	f, err := os.OpenFile(file, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	w := &instantWriter{f: f, slots: int(size / instantSlot), stop: make(chan struct{}), done: make(chan error, 1)}
	go w.run()
	t.Cleanup(func() { w.finish() })
	return w
}

// block is generation g's data: g in its first 8 bytes, then a pattern.
func instantBlock(g int) []byte {
	b := bytes.Repeat([]byte{byte(g*7 + 1)}, instantSlot)
	binary.BigEndian.PutUint64(b, uint64(g)+1)
	return b
}

func (w *instantWriter) run() {
	defer w.f.Close()
	for g := 0; ; g++ {
		select {
		case <-w.stop:
			w.done <- nil
			return
		default:
		}
		w.mu.Lock()
		w.start = append(w.start, time.Now())
		w.mu.Unlock()
		if _, err := w.f.WriteAt(instantBlock(g), int64(g%w.slots)*instantSlot); err != nil {
			w.done <- err
			return
		}
		if err := w.f.Sync(); err != nil {
			w.done <- err
			return
		}
		w.mu.Lock()
		w.acked = append(w.acked, time.Now())
		w.mu.Unlock()
		time.Sleep(5 * time.Millisecond)
	}
}

// finish stops the writer, once, and returns its error.
func (w *instantWriter) finish() error {
	select {
	case <-w.stop:
		return nil
	default:
	}
	close(w.stop)
	return <-w.done
}

// ackedBetween counts the writes acknowledged in (from, to].
func (w *instantWriter) ackedBetween(from, to time.Time) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for _, a := range w.acked {
		if a.After(from) && !a.After(to) {
			n++
		}
	}
	return n
}

// checkAt checks an image of the disk at instant at against the model: each
// slot holds a generation begun before at, and none older than the last
// one acknowledged before at.
func (w *instantWriter) checkAt(t *testing.T, img []byte, at time.Time) {
	t.Helper()
	w.mu.Lock()
	defer w.mu.Unlock()
	for s := 0; s < w.slots; s++ {
		got := img[s*instantSlot : (s+1)*instantSlot]
		lastAcked := -1
		for g := s; g < len(w.acked); g += w.slots {
			if !w.acked[g].After(at) {
				lastAcked = g
			}
		}
		if bytes.Equal(got, make([]byte, instantSlot)) {
			if lastAcked >= 0 {
				t.Fatalf("slot %d is empty at %s, but generation %d was acknowledged before", s, at.Format(time.RFC3339Nano), lastAcked)
			}
			continue
		}
		g := int(binary.BigEndian.Uint64(got)) - 1
		if g < 0 || g >= len(w.start) || g%w.slots != s || !bytes.Equal(got, instantBlock(g)) {
			t.Fatalf("slot %d at %s holds no write of the writer (generation %d)", s, at.Format(time.RFC3339Nano), g)
		}
		if g < lastAcked || w.start[g].After(at) {
			t.Fatalf("slot %d at %s holds generation %d; acknowledged before: %d", s, at.Format(time.RFC3339Nano), g, lastAcked)
		}
	}
}

// TestVSphereInstantBesideProtection is acceptance 2's vSphere part: with
// `hindsight serve` protecting a disk through a tap that keeps being
// written, `vsphere instant` of that disk at a past instant runs in the
// service against vcsim: the VM is registered, the clone's file serves
// the instant's exact bytes and takes writes, and instant-end unregisters
// the VM and drops the clone, while the protected disk went on being
// written and its instant stayed as it was.
func TestVSphereInstantBesideProtection(t *testing.T) {
	t.Parallel()
	needRoot(t)
	sim := startVCSim(t)
	work := t.TempDir()
	pwFile := filepath.Join(work, "pw")
	os.WriteFile(pwFile, []byte("s3cret-pw\n"), 0o600)
	conn := []string{"--url", sim.URL, "--username", "admin", "--password-file", pwFile, "--ca-file", sim.CA}
	vc := instantFinder(t, sim)

	repo := newRepo(t)
	const size = 8 << 20
	ok(t, "--repo", repo, "disk", "create", "web", "--size", "8M")
	svc := start(t, nil, "--repo", repo, "serve", "--sync-interval", "100ms")
	waitInstant(t, "the service", func() bool { return hs(t, "--repo", repo, "protections").code == 0 })
	mnt := filepath.Join(work, "web")
	ok(t, "--repo", repo, "protect", "web", "--mount", mnt)
	w := startInstantWriter(t, filepath.Join(mnt, "web.img"), size)

	time.Sleep(700 * time.Millisecond)
	at := time.Now().UTC()
	atSpec := at.Format(time.RFC3339Nano)
	time.Sleep(500 * time.Millisecond) // published past the instant
	exportAt := func(name, spec string) []byte {
		p := filepath.Join(work, name+".raw")
		os.Remove(p)
		ok(t, "--repo", repo, "export", name, "--at", spec, "--out", p)
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	atT := exportAt("web", atSpec)
	w.checkAt(t, atT, at)

	nfs := filepath.Join(work, "hindsight-nfs")
	os.Mkdir(nfs, 0o755)
	began := time.Now()
	out := ok(t, append([]string{"--repo", repo, "--json", "vsphere", "instant", "web", "--at", atSpec, "--name", "web-inst",
		"--pool", "/DC0/host/DC0_C0/Resources", "--nfs-datastore", "hindsight-nfs", "--nfs-dir", nfs,
		"--nfs-host", "127.0.0.1", "--nfs-local-path", nfs, "--memory", "256"}, conn...)...)
	var ready struct {
		VM     string
		Clones []string
		Seq    uint64
	}
	if err := json.Unmarshal([]byte(out), &ready); err != nil || ready.VM != "web-inst" || len(ready.Clones) != 1 {
		t.Fatalf("instant: %v\n%s", err, out)
	}
	t.Logf("instant VM registered through the service in %s", time.Since(began))
	if _, err := vc.VirtualMachine(context.Background(), "web-inst"); err != nil {
		t.Fatalf("vcsim has no VM web-inst: %v", err)
	}
	flat := filepath.Join(nfs, "web-inst", "web", "web-flat.vmdk")
	got, err := os.ReadFile(flat)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, atT) {
		t.Fatal("the clone's file differs from the instant (export --at)")
	}
	f, err := os.OpenFile(flat, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(bytes.Repeat([]byte{0xee}, 1<<20), 0); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if got, _ := os.ReadFile(flat); !bytes.Equal(got[:1<<20], bytes.Repeat([]byte{0xee}, 1<<20)) {
		t.Fatal("the clone did not take the write")
	}
	time.Sleep(300 * time.Millisecond) // the protected disk goes on being written

	out = ok(t, append([]string{"--repo", repo, "--json", "vsphere", "instant-end", "web-inst"}, conn...)...)
	ended := time.Now()
	var end struct {
		Unregistered bool
		ClonesGone   []string `json:"clones_deleted"`
		By           string
	}
	if err := json.Unmarshal([]byte(out), &end); err != nil || !end.Unregistered || len(end.ClonesGone) != 1 || end.By != "server" {
		t.Fatalf("instant-end: %v\n%s", err, out)
	}
	if _, err := vc.VirtualMachine(context.Background(), "web-inst"); err == nil {
		t.Error("the VM is still registered in vcsim")
	}
	if ents, _ := os.ReadDir(nfs); len(ents) != 0 {
		t.Errorf("left in the NFS folder: %v", ents)
	}
	if isMounted(filepath.Join(nfs, "web-inst", "web")) {
		t.Error("the clone's tap is still mounted")
	}
	if disks := ok(t, "--repo", repo, "--json", "disk", "list"); strings.Contains(disks, "web-inst") {
		t.Errorf("the clone outlived the instant:\n%s", disks)
	}

	// The protected disk was written all along, and is still protected.
	time.Sleep(200 * time.Millisecond)
	if err := w.finish(); err != nil {
		t.Fatalf("the tap's writer: %v", err)
	}
	if n := w.ackedBetween(began, ended); n < 10 {
		t.Errorf("only %d writes acknowledged while the instant ran", n)
	}
	time.Sleep(400 * time.Millisecond) // published
	newest := exportAt("web", "latest")
	w.checkAt(t, newest, time.Now())
	if !bytes.Equal(exportAt("web", atSpec), atT) {
		t.Error("the instant changed")
	}
	if prots := ok(t, "--repo", repo, "protections"); !strings.Contains(prots, "web") || strings.Contains(prots, "failed") {
		t.Errorf("protections after the instant:\n%s", prots)
	}
	ok(t, "--repo", repo, "unprotect", "web")
	// The credentials crossed the socket; the service's log never shows them.
	if log := svc.stderr.String(); strings.Contains(log, "s3cret-pw") || !strings.Contains(log, "web-inst") {
		t.Errorf("the service's log shows the password, or nothing of the instant:\n%s", log)
	}

	// A service killed under an instant leaves its record; the next
	// service ends it from there: VM unregistered, dead tap detached,
	// clone dropped.
	ok(t, append([]string{"--repo", repo, "vsphere", "instant", "web", "--at", atSpec, "--name", "web-orphan",
		"--pool", "/DC0/host/DC0_C0/Resources", "--nfs-datastore", "hindsight-nfs", "--nfs-dir", nfs, "--nfs-host", "127.0.0.1", "--nfs-local-path", nfs, "--memory", "256"}, conn...)...)
	svc.kill()
	start(t, nil, "--repo", repo, "serve")
	waitInstant(t, "the restarted service", func() bool { return hs(t, "--repo", repo, "protections").code == 0 })
	if r := hs(t, "--repo", repo, "vsphere", "instant-end", "web-orphan"); r.code != 2 || !strings.Contains(r.stderr, "vSphere connection") {
		t.Errorf("instant-end of an orphan without a connection: exit %d: %s", r.code, r.stderr)
	}
	out = ok(t, append([]string{"--repo", repo, "--json", "vsphere", "instant-end", "web-orphan"}, conn...)...)
	end.Unregistered, end.ClonesGone, end.By = false, nil, ""
	if err := json.Unmarshal([]byte(out), &end); err != nil || !end.Unregistered || len(end.ClonesGone) != 1 || end.By != "here" {
		t.Fatalf("instant-end after kill -9: %v\n%s", err, out)
	}
	if _, err := vc.VirtualMachine(context.Background(), "web-orphan"); err == nil {
		t.Error("the orphaned VM is still registered in vcsim")
	}
	if ents, _ := os.ReadDir(nfs); len(ents) != 0 {
		t.Errorf("left in the NFS folder after kill -9: %v", ents)
	}
	if disks := ok(t, "--repo", repo, "--json", "disk", "list"); strings.Contains(disks, "web-orphan") {
		t.Errorf("the orphan's clone outlived it:\n%s", disks)
	}
}

// instantFinder is a govmomi finder on the simulator: the test's own view of
// the inventory, independent of Hindsight's.
func instantFinder(t *testing.T, sim vcsim) *find.Finder {
	t.Helper()
	u, err := url.Parse(sim.URL)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.UserPassword("admin", "s3cret-pw")
	ctx := context.Background()
	c, err := govmomi.NewClient(ctx, u, true)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Logout(context.Background()) })
	f := find.NewFinder(c.Client, true)
	dc, err := f.DefaultDatacenter(ctx)
	if err != nil {
		t.Fatal(err)
	}
	f.SetDatacenter(dc)
	return f
}

// waitInstant polls ready for up to 10 s.
func waitInstant(t *testing.T, what string, ready func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !ready() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s after 10 s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
