package fs

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// testMount mounts src in a fresh directory and unmounts it when the test
// ends, failing the test if that fails or leaves the mount behind.
func testMount(tb testing.TB, src Source, opt Options) string {
	tb.Helper()
	dir := tb.TempDir()
	if opt.Logf == nil {
		var done atomic.Bool // t.Logf panics once the test is over
		tb.Cleanup(func() { done.Store(true) })
		opt.Logf = func(format string, args ...any) {
			if !done.Load() {
				tb.Logf(format, args...)
			}
		}
	}
	srv, err := Mount(context.Background(), dir, src, opt)
	if err != nil {
		tb.Fatalf("Mount: %v", err)
	}
	tb.Cleanup(func() {
		if err := srv.Unmount(); err != nil {
			tb.Errorf("Unmount: %v", err)
		}
		srv.Wait()
		if line := mountLine(tb, dir); line != "" {
			tb.Errorf("still mounted after Unmount: %s", line)
		}
	})
	return dir
}

// mountLine returns the /proc/mounts line of the mount at dir, "" if none.
func mountLine(tb testing.TB, dir string) string {
	tb.Helper()
	f, err := os.Open("/proc/self/mounts")
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if fields := strings.Fields(sc.Text()); len(fields) > 1 && fields[1] == dir {
			return sc.Text()
		}
	}
	return ""
}

func TestMountOptions(t *testing.T) {
	src, _ := newFixture()
	mnt := testMount(t, src, Options{})

	line := mountLine(t, mnt)
	fields := strings.Fields(line)
	if len(fields) < 4 || fields[0] != "hindsight" || fields[2] != "fuse.hindsight" {
		t.Fatalf("mount line %q: want source hindsight, type fuse.hindsight", line)
	}
	opts := "," + fields[3] + ","
	for _, want := range []string{",ro,", ",nosuid,", ",nodev,", "max_read=1048576"} {
		if !strings.Contains(opts, want) {
			t.Errorf("mount options %s lack %s", fields[3], want)
		}
	}
	if strings.Contains(opts, "allow_other") {
		t.Errorf("mount options %s: allow_other without AllowOther", fields[3])
	}

	var st unix.Stat_t
	if err := unix.Stat(mnt, &st); err != nil {
		t.Fatal(err)
	}
	ra, err := os.ReadFile(fmt.Sprintf("/sys/class/bdi/%d:%d/read_ahead_kb", unix.Major(st.Dev), unix.Minor(st.Dev)))
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(string(ra)); got != "1024" {
		t.Errorf("read_ahead_kb = %s, want 1024", got)
	}
}

func TestMountErrors(t *testing.T) {
	src, _ := newFixture()
	ctx := context.Background()
	if _, err := Mount(ctx, filepath.Join(t.TempDir(), "missing"), src, Options{}); err == nil {
		t.Error("Mount on a missing directory succeeded")
	}
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Mount(ctx, file, src, Options{}); err == nil {
		t.Error("Mount on a file succeeded")
	}
	if _, err := Mount(ctx, t.TempDir(), nil, Options{}); err == nil {
		t.Error("Mount of a nil Source succeeded")
	}
}

// A done ctx unmounts; Wait returns; Unmount afterwards is a no-op.
func TestMountContext(t *testing.T) {
	src, _ := newFixture()
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	srv, err := Mount(ctx, dir, src, Options{Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Unmount() })
	if mountLine(t, dir) == "" {
		t.Fatal("not mounted")
	}
	cancel()
	waited := make(chan struct{})
	go func() { srv.Wait(); close(waited) }()
	select {
	case <-waited:
	case <-time.After(10 * time.Second):
		t.Fatal("Wait did not return after ctx was cancelled")
	}
	if line := mountLine(t, dir); line != "" {
		t.Errorf("still mounted: %s", line)
	}
	if err := srv.Unmount(); err != nil {
		t.Errorf("second Unmount: %v", err)
	}
}

// Debug traces requests through Logf with a prefix.
func TestDebugLog(t *testing.T) {
	src, f := newFixture()
	var mu sync.Mutex
	var lines []string
	var done atomic.Bool
	t.Cleanup(func() { done.Store(true) })
	mnt := testMount(t, src, Options{Now: f.clock(), Debug: true, Logf: func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		if !done.Load() {
			lines = append(lines, fmt.Sprintf(format, args...))
		}
	}})
	if _, err := os.Stat(filepath.Join(mnt, "vm1", "latest")); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, l := range lines {
		if strings.HasPrefix(l, "fuse: ") && strings.Contains(l, `LOOKUP`) && strings.Contains(l, `"latest"`) {
			return
		}
	}
	t.Errorf("no prefixed LOOKUP of latest in %d lines: %q", len(lines), lines)
}

// Unmounted from outside: Wait returns, Unmount is a no-op.
func TestExternalUnmount(t *testing.T) {
	src, _ := newFixture()
	dir := t.TempDir()
	srv, err := Mount(context.Background(), dir, src, Options{Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Unmount() })
	if err := unix.Unmount(dir, 0); err != nil {
		t.Fatal(err)
	}
	waited := make(chan struct{})
	go func() { srv.Wait(); close(waited) }()
	select {
	case <-waited:
	case <-time.After(10 * time.Second):
		t.Fatal("Wait did not return after umount")
	}
	if err := srv.Unmount(); err != nil {
		t.Errorf("Unmount after umount: %v", err)
	}
}
