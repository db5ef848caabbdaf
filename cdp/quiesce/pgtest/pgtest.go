// Package pgtest runs throwaway PostgreSQL servers for tests: a cluster
// initialized in a directory the test owns, served on a Unix socket only (no
// TCP port to collide on), as the postgres user when the test runs as root
// (PostgreSQL refuses to run as root), stopped at cleanup.
//
// The binaries come from $PG_BINDIR, else from the newest
// /usr/lib/postgresql/N/bin (Debian's layout), else from $PATH.
package pgtest

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hindsight-cdp/hindsight/cdp/quiesce/internal/proc"
)

// BinDir returns the directory holding postgres, initdb and the client tools.
func BinDir() (string, error) {
	if d := os.Getenv("PG_BINDIR"); d != "" {
		return d, nil
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return version(dirs[i]) > version(dirs[j]) })
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "postgres")); err == nil {
			return d, nil
		}
	}
	p, err := exec.LookPath("postgres")
	if err != nil {
		return "", errors.New("pgtest: PostgreSQL is not installed (Debian: apt-get install postgresql)")
	}
	return filepath.Dir(p), nil
}

func version(binDir string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return n
}

// Need returns the binary directory, or fails tb when PostgreSQL is missing.
func Need(tb testing.TB) string {
	tb.Helper()
	d, err := BinDir()
	if err != nil {
		tb.Fatal(err)
	}
	return d
}

// credential is who the servers and tools run as: the postgres user when the
// test runs as root, else the test's own user (nil).
func credential(tb testing.TB) *syscall.Credential {
	tb.Helper()
	if os.Geteuid() != 0 {
		return nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		tb.Fatalf("pgtest: running as root needs a postgres user: %v", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
}

// Dir returns a new empty directory that the server's user owns and can
// reach, removed at cleanup. Its path is short enough for a socket.
func Dir(tb testing.TB) string {
	tb.Helper()
	d, err := os.MkdirTemp("", "pgt")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { os.RemoveAll(d) })
	Give(tb, d)
	return d
}

// Give makes path (recursively) owned by the server's user, with mode 0700
// for directories, and lets that user traverse every ancestor directory.
func Give(tb testing.TB, path string) {
	tb.Helper()
	c := credential(tb)
	if c == nil {
		return
	}
	err := filepath.Walk(path, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if fi.IsDir() {
			if err := os.Chmod(p, 0o700); err != nil {
				return err
			}
		}
		return os.Lchown(p, int(c.Uid), int(c.Gid))
	})
	if err != nil {
		tb.Fatalf("pgtest: give %s to postgres: %v", path, err)
	}
	for d := filepath.Dir(path); d != "/" && d != "."; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			tb.Fatal(err)
		}
		if fi.Mode().Perm()&0o001 == 0 {
			if err := os.Chmod(d, fi.Mode().Perm()|0o001); err != nil {
				tb.Fatal(err)
			}
		}
	}
}

// command returns name (a binary of bin) with args, run as the server's
// user, in a process group of its own.
func command(tb testing.TB, bin, name string, args ...string) *exec.Cmd {
	cmd := exec.Command(filepath.Join(bin, name), args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: credential(tb), Setpgid: true}
	cmd.Dir = "/"
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	return cmd
}

// InitDB creates a cluster in data (created if missing) with trust
// authentication for the superuser postgres. Extra args go to initdb.
func InitDB(tb testing.TB, data string, args ...string) {
	tb.Helper()
	bin := Need(tb)
	if err := os.MkdirAll(data, 0o700); err != nil {
		tb.Fatal(err)
	}
	Give(tb, data)
	all := append([]string{"-D", data, "-U", "postgres", "--auth=trust", "--no-instructions", "-E", "UTF8"}, args...)
	if out, err := command(tb, bin, "initdb", all...).CombinedOutput(); err != nil {
		tb.Fatalf("initdb %s: %v\n%s", data, err, out)
	}
}

// Server is a running postmaster.
type Server struct {
	Bin, Data, Socket string

	tb   testing.TB
	cmd  *exec.Cmd
	log  logBuffer
	done chan struct{}
	err  error
}

type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Start runs a server on the cluster in data with the given settings
// ("name=value") and waits until it accepts connections, at most timeout
// (recovery may take a while). Cleanup stops it.
func Start(tb testing.TB, data string, timeout time.Duration, settings ...string) *Server {
	tb.Helper()
	s, err := TryStart(tb, data, timeout, settings...)
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

// TryStart is Start returning the error, with the server's log in it, when
// the server exits or is not ready in time.
func TryStart(tb testing.TB, data string, timeout time.Duration, settings ...string) (*Server, error) {
	tb.Helper()
	s := &Server{Bin: Need(tb), Data: data, Socket: Dir(tb), tb: tb, done: make(chan struct{})}
	args := []string{"-D", data, "-k", s.Socket, "-c", "listen_addresses=", "-c", "fsync=on"}
	for _, kv := range settings {
		args = append(args, "-c", kv)
	}
	s.cmd = command(tb, s.Bin, "postgres", args...)
	s.cmd.Stdout, s.cmd.Stderr = &s.log, &s.log
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("pgtest: start postgres: %w", err)
	}
	go func() { s.err = s.cmd.Wait(); close(s.done) }()
	tb.Cleanup(s.Stop)
	deadline := time.Now().Add(timeout)
	for {
		if out, err := s.Command("pg_isready", "-q").CombinedOutput(); err == nil {
			return s, nil
		} else if time.Now().After(deadline) {
			s.Stop()
			return nil, fmt.Errorf("pgtest: server on %s not ready after %v: %v %s\n%s", data, timeout, err, out, s.Log())
		}
		select {
		case <-s.done:
			return nil, fmt.Errorf("pgtest: server on %s exited: %v\n%s", data, s.err, s.Log())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Log returns what the server logged so far.
func (s *Server) Log() string { return s.log.String() }

// DSN is a libpq connection string for the superuser on database db
// ("postgres" when empty).
func (s *Server) DSN(db string) string {
	if db == "" {
		db = "postgres"
	}
	return fmt.Sprintf("host=%s user=postgres dbname=%s", s.Socket, db)
}

// Command returns a client tool of the server's installation (psql, pgbench,
// pg_amcheck, …) set up to reach it through PGHOST and PGUSER.
func (s *Server) Command(name string, args ...string) *exec.Cmd {
	cmd := command(s.tb, s.Bin, name, args...)
	cmd.Env = append(cmd.Env, "PGHOST="+s.Socket, "PGUSER=postgres", "PGDATABASE=postgres")
	return cmd
}

// Run runs a client tool and returns its output, failing the test on error.
func (s *Server) Run(name string, args ...string) string {
	s.tb.Helper()
	out, err := s.Command(name, args...).CombinedOutput()
	if err != nil {
		s.tb.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// Query runs sql through psql and returns its unaligned, tuples-only output.
func (s *Server) Query(sql string) string {
	s.tb.Helper()
	return strings.TrimSpace(s.Run("psql", "-XAtq", "-v", "ON_ERROR_STOP=1", "-c", sql))
}

// Signal sends sig to the postmaster and every process it started. (Each
// backend calls setsid, so the postmaster's process group holds only it.)
func (s *Server) Signal(sig syscall.Signal) error {
	var errs []error
	for _, pid := range append([]int{s.cmd.Process.Pid}, children(s.cmd.Process.Pid)...) {
		if err := syscall.Kill(pid, sig); err != nil && err != syscall.ESRCH {
			errs = append(errs, fmt.Errorf("signal %v to %d: %w", sig, pid, err))
		}
	}
	return errors.Join(errs...)
}

// Pause stops the postmaster, then every process it started, and returns
// once all of them are stopped: the files then hold what a crash at this
// instant would leave, plus what the kernel has not yet written back.
func (s *Server) Pause() error {
	pm := s.cmd.Process.Pid
	if err := syscall.Kill(pm, syscall.SIGSTOP); err != nil {
		return err
	}
	if err := waitStopped(pm); err != nil { // no new children from here on
		return err
	}
	for _, pid := range children(pm) {
		if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil && err != syscall.ESRCH {
			return err
		}
	}
	for _, pid := range children(pm) {
		if err := waitStopped(pid); err != nil {
			return err
		}
	}
	return nil
}

// Resume continues what Pause stopped.
func (s *Server) Resume() error { return s.Signal(syscall.SIGCONT) }

// children lists the processes whose parent is pid.
func children(pid int) []int {
	return proc.All(func(_ int, s proc.Stat) bool { return s.PPID == pid })
}

// waitStopped waits until pid is stopped (or gone), at most 10 s.
func waitStopped(pid int) error {
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		if s, ok := proc.Read(pid); !ok || s.State == "T" || s.State == "t" || s.State == "Z" {
			return nil
		}
	}
	return fmt.Errorf("pgtest: process %d did not stop", pid)
}

// Stop shuts the server down (fast mode), or kills it after 30 s; it may be
// called more than once.
func (s *Server) Stop() {
	select {
	case <-s.done:
		return
	default:
	}
	s.Signal(syscall.SIGCONT)
	s.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-s.done:
	case <-time.After(30 * time.Second):
		s.Signal(syscall.SIGKILL)
		<-s.done
		s.tb.Errorf("pgtest: server on %s did not stop in 30 s; killed\n%s", s.Data, s.Log())
	}
}

// Kill ends the server and every backend with SIGKILL, as a crash would.
func (s *Server) Kill() {
	s.Signal(syscall.SIGKILL)
	<-s.done
}
