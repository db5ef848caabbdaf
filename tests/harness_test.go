package tests

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// hsBin is the hindsight binary built once for all tests.
var hsBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "hindsight-e2e-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	hsBin = filepath.Join(dir, "hindsight")
	build := exec.Command("go", "build", "-race", "-o", hsBin, "../cmd/hindsight")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build hindsight:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// result is one run of the binary.
type result struct {
	stdout, stderr string
	code           int
}

// hs runs the binary with args and returns what it printed and its exit code.
func hs(t *testing.T, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, hsBin, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.Env = append(os.Environ(), "HINDSIGHT_REPO=")
	if os.Getenv("GORACE") == "" {
		// A -race binary sleeps 1s at exit by default, once per command run.
		cmd.Env = append(cmd.Env, "GORACE=atexit_sleep_ms=0")
	}
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String()}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	case err != nil:
		t.Fatalf("run hindsight %v: %v", args, err)
	}
	return r
}

// ok runs the binary and fails the test unless it exits 0.
func ok(t *testing.T, args ...string) string {
	t.Helper()
	r := hs(t, args...)
	if r.code != 0 {
		t.Fatalf("hindsight %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r.stdout
}

// needRoot skips tests that attach loop devices or mount filesystems.
func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root for loop devices and mounts (make test runs as root in CI)")
	}
}

// needTools fails (not skips) when a tool the test drives is missing.
func needTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is not installed: run 'make deps' (or make test, which installs it)", tool)
		}
	}
}

// run runs a tool and fails the test on error, returning its stdout.
func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).Output()
	if err != nil {
		var stderr string
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("%s %s: %v\n%s%s", name, strings.Join(args, " "), err, out, stderr)
	}
	return string(out)
}

// newRepo initializes a repository in a temporary directory.
func newRepo(t *testing.T) string {
	t.Helper()
	repo := filepath.Join(t.TempDir(), "repo")
	ok(t, "--repo", repo, "init")
	return repo
}

// mountRepo runs `hindsight mount` in the background and returns the mount
// point; cleanup stops it and checks that nothing is left mounted.
func mountRepo(t *testing.T, repo string, extra ...string) string {
	t.Helper()
	mnt := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(mnt, 0o700); err != nil {
		t.Fatal(err)
	}
	p := start(t, func() {
		if isMounted(mnt) {
			exec.Command("umount", "-l", mnt).Run()
			t.Errorf("%s was still mounted after the mount process ended", mnt)
		}
	}, append([]string{"--repo", repo, "mount", mnt}, extra...)...)
	p.waitUntil(t, "mount "+mnt, func() bool { return isMounted(mnt) })
	return mnt
}

func isMounted(dir string) bool {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && f[4] == dir {
			return true
		}
	}
	return false
}

// attachLoop attaches file read-only (at offset, of size bytes when size > 0)
// and detaches it at cleanup.
func attachLoop(t *testing.T, file string, offset, size int64) string {
	t.Helper()
	dev, detach := attachLoopNow(t, file, offset, size)
	t.Cleanup(detach)
	return dev
}

// attachLoopNow is attachLoop for a caller that detaches early: detach may
// be called more than once.
func attachLoopNow(t *testing.T, file string, offset, size int64) (string, func()) {
	t.Helper()
	args := []string{"-r", "-f", "--show"}
	if offset > 0 {
		args = append(args, "-o", fmt.Sprint(offset))
	}
	if size > 0 {
		args = append(args, "--sizelimit", fmt.Sprint(size))
	}
	dev := strings.TrimSpace(run(t, "losetup", append(args, file)...))
	done := false
	return dev, func() {
		if !done {
			done = true
			detachLoop(t, dev)
		}
	}
}

// detachLoop detaches dev, retrying while the kernel still holds it.
func detachLoop(t *testing.T, dev string) {
	for i := 0; i < 50; i++ {
		if exec.Command("losetup", "-d", dev).Run() == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Errorf("could not detach %s", dev)
}

// mountRO mounts an ext4 device read-only without replaying its journal and
// unmounts it at cleanup.
func mountRO(t *testing.T, dev string) string {
	t.Helper()
	dir, unmount := mountRONow(t, dev)
	t.Cleanup(unmount)
	return dir
}

// mountRONow is mountRO for a caller that unmounts early.
func mountRONow(t *testing.T, dev string) (string, func()) {
	t.Helper()
	dir := t.TempDir()
	run(t, "mount", "-t", "ext4", "-o", "ro,noload", dev, dir)
	done := false
	return dir, func() {
		if done {
			return
		}
		done = true
		if err := exec.Command("umount", dir).Run(); err != nil {
			exec.Command("umount", "-l", dir).Run()
			t.Errorf("umount %s: %v", dir, err)
		}
	}
}
