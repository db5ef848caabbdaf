package nbd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

// memDisk is the in-memory Backend model: it records every call in order
// and fails the test on any call outside the disk.
type memDisk struct {
	t    testing.TB
	mu   sync.Mutex
	data []byte
	log  []string // "W off len", "Z off len", "F"
	// beforeWrite, when set, runs before a write is applied (outside mu).
	beforeWrite func(off int64, p []byte)
	bad         int
}

var (
	_ Backend   = (*memDisk)(nil)
	_ Describer = (*memDisk)(nil)
)

func newMemDisk(t testing.TB, size int) *memDisk {
	return &memDisk{t: t, data: make([]byte, size)}
}

func (m *memDisk) Size() int64         { return int64(len(m.data)) }
func (m *memDisk) Description() string { return "in-memory model" }

func (m *memDisk) check(op string, off, n int64) bool {
	if off < 0 || n < 0 || off+n > int64(len(m.data)) || off+n < off {
		m.bad++
		m.t.Errorf("backend %s out of range: %d+%d (size %d)", op, off, n, len(m.data))
		return false
	}
	return true
}

func (m *memDisk) ReadAt(p []byte, off int64) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.check("read", off, int64(len(p))) {
		return 0, errors.New("out of range")
	}
	return copy(p, m.data[off:]), nil
}

func (m *memDisk) WriteAt(p []byte, off int64) (int, error) {
	if m.beforeWrite != nil {
		m.beforeWrite(off, p)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.check("write", off, int64(len(p))) {
		return 0, errors.New("out of range")
	}
	m.log = append(m.log, fmt.Sprintf("W %d %d", off, len(p)))
	return copy(m.data[off:], p), nil
}

func (m *memDisk) Zero(off, n int64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.check("zero", off, n) {
		return errors.New("out of range")
	}
	m.log = append(m.log, fmt.Sprintf("Z %d %d", off, n))
	clear(m.data[off : off+n])
	return nil
}

func (m *memDisk) Flush() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.log = append(m.log, "F")
	return nil
}

// snapshot returns a copy of the content and of the call log.
func (m *memDisk) snapshot() ([]byte, []string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return bytes.Clone(m.data), append([]string(nil), m.log...)
}

func (m *memDisk) count(prefix string) int {
	_, log := m.snapshot()
	n := 0
	for _, e := range log {
		if strings.HasPrefix(e, prefix) {
			n++
		}
	}
	return n
}

// exports serves the named disks; other names are refused.
func exports(disks map[string]*memDisk) Options {
	return Options{
		Exports: func(name string) (Backend, error) {
			if d, ok := disks[name]; ok {
				return d, nil
			}
			return nil, fmt.Errorf("no export %q", name)
		},
		List: func() []string {
			var names []string
			for n := range disks {
				names = append(names, n)
			}
			return names
		},
	}
}

// server is a running Serve on an ephemeral loopback port.
type server struct {
	addr   string
	cancel func()
	done   chan error
}

// wait returns Serve's result, or an error if it does not return.
func (s *server) wait() error {
	select {
	case err := <-s.done:
		return err
	case <-time.After(20 * time.Second):
		return errors.New("Serve did not return after cancel")
	}
}

// startServerCancel starts serving opt; the caller stops it.
func startServerCancel(t testing.TB, opt Options) *server {
	t.Helper()
	if opt.Logf == nil {
		opt.Logf = func(f string, a ...any) { t.Logf(f, a...) }
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &server{addr: l.Addr().String(), cancel: cancel, done: make(chan error, 1)}
	go func() { s.done <- NewServer(opt).Serve(ctx, l) }()
	return s
}

// startServer serves opt until the test ends; the cleanup stops it and
// checks that Serve returned nil.
func startServer(t testing.TB, opt Options) string {
	t.Helper()
	s := startServerCancel(t, opt)
	t.Cleanup(func() {
		s.cancel()
		if err := s.wait(); err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return s.addr
}

// needTool returns the path of an external client, failing (not
// skipping) the test when it is missing.
func needTool(t testing.TB, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s is required: install it with `apt-get install -y %s`", name, pkg)
	}
	return p
}

// runToolErr runs a client with a timeout and returns its combined
// output; it may be called from any goroutine.
func runToolErr(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	return string(out), err
}

// runTool runs a client; wantOK says whether it must succeed or fail.
func runTool(t testing.TB, wantOK bool, name string, args ...string) string {
	t.Helper()
	out, err := runToolErr(name, args...)
	if wantOK && err != nil {
		t.Fatalf("%s %q: %v\n%s", name, args, err, out)
	}
	if !wantOK && err == nil {
		t.Fatalf("%s %q succeeded, want a failure\n%s", name, args, out)
	}
	return out
}

// pattern returns n bytes of a deterministic, non-repeating-looking
// content seeded by seed.
func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	x := uint32(seed)*2654435761 + 1
	for i := range b {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		b[i] = byte(x)
	}
	return b
}

func fill(n int, c byte) []byte { return bytes.Repeat([]byte{c}, n) }
