package service

import (
	"bufio"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hindsight-cdp/hindsight/fs/tap"
	"github.com/hindsight-cdp/hindsight/store/storetest"
)

// TestDesiredStateSurvivesRestart: a protection recorded by one service is
// brought back by the next on the same repository, with what was written.
func TestDesiredStateSurvivesRestart(t *testing.T) {
	needRoot(t)
	r, dir := storetest.Repo(t)
	if _, err := r.CreateDisk("web", 1<<20, 4096); err != nil {
		t.Fatal(err)
	}
	mnt := filepath.Join(t.TempDir(), "tap")
	t.Cleanup(func() {
		if isMountPoint(t, mnt) {
			syscall.Unmount(mnt, syscall.MNT_DETACH)
		}
	})
	s1, _ := newServiceOn(t, r, Options{Record: true})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s1.Run(ctx) }()
	if _, err := s1.Protect(context.Background(), ProtectSpec{Targets: []string{"web"}, Tap: &TapSpec{Mount: mnt}}); err != nil {
		cancel()
		<-done
		t.Fatal(err)
	}
	img := filepath.Join(mnt, "web.img")
	if f, err := os.OpenFile(img, os.O_WRONLY, 0); err != nil {
		t.Error(err)
	} else {
		f.WriteAt([]byte("before the restart"), 0)
		if err := f.Close(); err != nil {
			t.Error(err)
		}
	}
	cancel() // a clean stop: front ends end, the record stays
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if isMountPoint(t, mnt) {
		t.Fatal("the tap is still mounted after the service stopped")
	}
	if _, err := os.Stat(StatePath(dir) + ".tmp"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a .tmp is left beside service.json: %v", err)
	}

	s2, log := newServiceOn(t, r, Options{Record: true})
	s2.Restore(context.Background())
	runService(t, s2)
	ps := s2.Protections()
	if len(ps) != 1 || ps[0].Name != "web" || ps[0].State != StateRunning || ps[0].Where != mnt {
		t.Fatalf("after the restart: %+v\n%s", ps, log)
	}
	b := make([]byte, 18)
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	f.ReadAt(b, 0)
	if string(b) != "before the restart" {
		t.Errorf("the tap brought back reads %q", b)
	}
	if !strings.Contains(log.String(), "protection back") {
		t.Errorf("log: %s", log)
	}
}

// TestStateFile: written whole and atomically; a .tmp left by a crash is
// ignored; a damaged file is a clear error naming it.
func TestStateFile(t *testing.T) {
	dir := t.TempDir()
	path := StatePath(dir)
	// A crash while writing left a half .tmp: the record is what it was.
	os.WriteFile(path+".tmp", []byte(`{"version":1,"protec`), 0o600)
	f, err := loadState(dir)
	if err != nil || len(f.specs()) != 0 {
		t.Fatalf("with a stale .tmp: %v %+v", err, f.specs())
	}
	a := ProtectSpec{Name: "a", Targets: []string{"a"}, Tap: &TapSpec{Mount: "/m/a"}}
	b := ProtectSpec{Name: "b", Targets: []string{"b"}, NBD: &NBDSpec{Listen: "unix:/m/b.sock"}}
	for _, s := range []ProtectSpec{b, a, b} {
		if err := f.put(s); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := os.Stat(path + ".tmp"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the .tmp is still there after a write: %v", err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("service.json: %v %v", fi, err)
	}
	g, err := loadState(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got := g.specs(); len(got) != 2 || got[0].Name != "a" || got[1].Name != "b" || got[1].NBD.Listen != "unix:/m/b.sock" {
		t.Fatalf("read back: %+v", got)
	}
	if err := g.drop("a"); err != nil {
		t.Fatal(err)
	}
	if h, _ := loadState(dir); len(h.specs()) != 1 || h.specs()[0].Name != "b" {
		t.Errorf("after drop: %+v", h.specs())
	}
	// A write that cannot happen leaves the record and the memory as they were.
	os.Mkdir(path+".tmp", 0o700)
	if err := g.put(a); err == nil {
		t.Error("put with service.json.tmp a directory: no error")
	}
	os.Remove(path + ".tmp")
	if got := g.specs(); len(got) != 1 {
		t.Errorf("a failed put changed the record in memory: %+v", got)
	}

	for _, bad := range []string{`{"version":1,"protections":[{"name":`, `{"version":7,"protections":[]}`, "\x00\x01"} {
		os.WriteFile(path, []byte(bad), 0o600)
		_, err := loadState(dir)
		if err == nil || !strings.Contains(err.Error(), path) {
			t.Errorf("service.json %q: %v, want an error naming it", bad, err)
		}
	}
	r, _ := storetest.Repo(t)
	os.WriteFile(StatePath(r.Dir()), []byte("{oops"), 0o600)
	if _, err := New(r, Options{Record: true}); err == nil || !strings.Contains(err.Error(), "is damaged") || !strings.Contains(err.Error(), "fix or remove it") {
		t.Errorf("New with a damaged service.json: %v", err)
	}
	if _, err := New(r, Options{}); err != nil {
		t.Errorf("New without Record reads no state: %v", err)
	}
}

// memDisk is a disk in memory for a tap mounted in a test.
type memDisk struct {
	mu sync.Mutex
	b  []byte
}

func (m *memDisk) Size() int64 { return int64(len(m.b)) }
func (m *memDisk) ReadAt(p []byte, off int64) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return copy(p, m.b[off:]), nil
}
func (m *memDisk) WriteFileAt(p []byte, off int64) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return copy(m.b[off:], p), nil
}
func (m *memDisk) Zero(off, n int64) error { clear(m.b[off : off+n]); return nil }
func (m *memDisk) Flush() error            { return nil }

// TestHelperTap runs in a child process of TestStaleTap: it mounts a tap
// and waits to be killed.
func TestHelperTap(t *testing.T) {
	dir := os.Getenv("HINDSIGHT_TEST_TAP")
	if dir == "" {
		t.Skip("a helper of TestStaleTap")
	}
	if _, err := tap.Mount(context.Background(), dir, "x.img", &memDisk{b: make([]byte, 1<<20)}, tap.Options{}); err != nil {
		t.Fatal(err)
	}
	os.Stdout.WriteString("mounted\n")
	time.Sleep(time.Minute)
}

// deadTap mounts a tap at dir in a child process and kills it with
// SIGKILL: the mount stays, answering ENOTCONN.
func deadTap(t *testing.T, dir string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperTap$")
	cmd.Env = append(os.Environ(), "HINDSIGHT_TEST_TAP="+dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if _, err := os.Stat(dir); errors.Is(err, syscall.ENOTCONN) {
			syscall.Unmount(dir, syscall.MNT_DETACH) // still dead: the test failed
		}
	})
	line, _ := bufio.NewReader(out).ReadString('\n')
	if line != "mounted\n" {
		t.Fatalf("the helper tap did not mount: %q", line)
	}
	cmd.Process.Kill()
	cmd.Wait()
	if fstype, _ := mountAt(dir); fstype != tapFSType {
		t.Fatalf("after the kill: %q mounted at %s, want a dead %s", fstype, dir, tapFSType)
	}
	if _, err := os.Stat(dir); !errors.Is(err, syscall.ENOTCONN) {
		t.Fatalf("stat of the dead tap: %v, want ENOTCONN", err)
	}
}

// TestStaleTap: a dead tap at a protection's mount directory is detached
// and the protection starts there; a foreign mount (tmpfs) and a live tap
// are refused and left as they were.
func TestStaleTap(t *testing.T) {
	needRoot(t)
	s, log := newTestService(t, Options{})
	runService(t, s)
	for _, n := range []string{"a", "b", "c"} {
		if _, err := s.r.CreateDisk(n, 1<<20, 4096); err != nil {
			t.Fatal(err)
		}
	}
	ctx := context.Background()

	dead := filepath.Join(t.TempDir(), "dead")
	os.Mkdir(dead, 0o700)
	deadTap(t, dead)
	if _, err := s.Protect(ctx, ProtectSpec{Targets: []string{"a"}, Tap: &TapSpec{Mount: dead}}); err != nil {
		t.Fatalf("protect over a dead tap: %v", err)
	}
	if fi, err := os.Stat(filepath.Join(dead, "a.img")); err != nil || fi.Size() != 1<<20 {
		t.Errorf("the new tap: %v %v", fi, err)
	}
	if !strings.Contains(log.String(), "detached the dead tap left at "+dead) {
		t.Errorf("the detach is not logged:\n%s", log)
	}

	foreign := filepath.Join(t.TempDir(), "foreign")
	os.Mkdir(foreign, 0o700)
	if err := syscall.Mount("tmpfs", foreign, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Unmount(foreign, syscall.MNT_DETACH) })
	os.WriteFile(filepath.Join(foreign, "mine"), []byte("keep"), 0o600)
	_, err := s.Protect(ctx, ProtectSpec{Targets: []string{"b"}, Tap: &TapSpec{Mount: foreign}})
	if !errors.Is(err, ErrForeignMount) || !strings.Contains(err.Error(), "mount point of tmpfs") {
		t.Errorf("protect over tmpfs: %v, want ErrForeignMount naming tmpfs", err)
	}
	if b, err := os.ReadFile(filepath.Join(foreign, "mine")); err != nil || string(b) != "keep" {
		t.Errorf("the tmpfs was touched: %q %v", b, err)
	}

	live := filepath.Join(t.TempDir(), "live")
	os.Mkdir(live, 0o700)
	srv, err := tap.Mount(ctx, live, "x.img", &memDisk{b: make([]byte, 1<<20)}, tap.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Unmount() })
	_, err = s.Protect(ctx, ProtectSpec{Targets: []string{"c"}, Tap: &TapSpec{Mount: live}})
	if !errors.Is(err, ErrForeignMount) || !strings.Contains(err.Error(), "live Hindsight tap") {
		t.Errorf("protect over a live tap: %v, want ErrForeignMount", err)
	}
	if _, err := os.Stat(filepath.Join(live, "x.img")); err != nil {
		t.Errorf("the live tap was touched: %v", err)
	}
	if ps := s.Protections(); len(ps) != 1 || ps[0].Name != "a" {
		t.Errorf("protections: %+v", ps)
	}
}

// TestUnescapeMountinfo: mount points with spaces are found.
func TestUnescapeMountinfo(t *testing.T) {
	for in, want := range map[string]string{`/a\040b`: "/a b", `/plain`: "/plain", `/x\134y`: `/x\y`, `/bad\09`: `/bad\09`, `/end\04`: `/end\04`} {
		if got := unescapeMountinfo(in); got != want {
			t.Errorf("unescapeMountinfo(%q) = %q, want %q", in, got, want)
		}
	}
}
