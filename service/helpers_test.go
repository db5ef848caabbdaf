package service

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hindsight-cdp/hindsight/store"
	"github.com/hindsight-cdp/hindsight/store/storetest"
)

// logBuffer collects a service's log for a test to read.
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

// newTestService is a service of a new repository in a temporary
// directory, its log in the returned buffer.
func newTestService(t testing.TB, opt Options) (*Service, *logBuffer) {
	t.Helper()
	r, _ := storetest.Repo(t)
	return newServiceOn(t, r, opt)
}

func newServiceOn(t testing.TB, r *store.Repo, opt Options) (*Service, *logBuffer) {
	t.Helper()
	lb := &logBuffer{}
	opt.Logger = slog.New(slog.NewTextHandler(lb, nil))
	if opt.SyncInterval == 0 {
		opt.SyncInterval = 50 * time.Millisecond
	}
	s, err := New(r, opt)
	if err != nil {
		t.Fatal(err)
	}
	return s, lb
}

// runService runs s until the test ends; cleanup stops every front end.
func runService(t *testing.T, s *Service) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("service run: %v", err)
		}
	})
}

// serveSocket serves s's control protocol on the repository's socket until
// the test ends.
func serveSocket(t *testing.T, s *Service, lim controlLimits) string {
	t.Helper()
	l, err := listenControl(s.r.Dir())
	if err != nil {
		t.Fatal(err)
	}
	return serveOn(t, s, l, lim)
}

func serveOn(t *testing.T, s *Service, l net.Listener, lim controlLimits) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.serveControl(ctx, l, lim) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve control: %v", err)
		}
	})
	return l.Addr().String()
}

var defaultLimits = controlLimits{conns: maxConns, timeout: requestTimeout}

// isMountPoint says whether dir is a mount point now.
func isMountPoint(t *testing.T, dir string) bool {
	t.Helper()
	fstype, err := mountAt(dir)
	if err != nil {
		t.Fatal(err)
	}
	return fstype != ""
}

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root for FUSE mounts (make test runs as root)")
	}
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }
