package fusesrv

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/hindsight-cdp/hindsight/fs/fuseuring"
)

type helloRoot struct{ fs.Inode }

func (r *helloRoot) OnAdd(ctx context.Context) {
	f := &fs.MemRegularFile{Data: []byte("hello\n"), Attr: fuse.Attr{Mode: 0o444}}
	r.AddChild("hello", r.NewPersistentInode(ctx, f, fs.StableAttr{Ino: 2}), false)
}

// logLines collects what the server logs.
type logLines struct {
	mu    sync.Mutex
	lines []string
}

func (l *logLines) logf(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, fmt.Sprintf(format, args...))
}

func (l *logLines) matching(s string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var m []string
	for _, line := range l.lines {
		if strings.Contains(line, s) {
			m = append(m, line)
		}
	}
	return m
}

func mountHello(t *testing.T, cfg Config) (string, *Server) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting needs root")
	}
	dir := t.TempDir()
	procs := runtime.GOMAXPROCS(0)
	srv, err := Mount(context.Background(), dir, &helloRoot{}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := srv.Unmount(); err != nil {
			t.Error(err)
		}
		if IsMountPoint(dir) {
			t.Errorf("%s still mounted", dir)
		}
		if got := runtime.GOMAXPROCS(0); got != procs {
			t.Errorf("GOMAXPROCS %d after unmounting, %d before mounting", got, procs)
		}
	})
	b, err := os.ReadFile(filepath.Join(dir, "hello"))
	if err != nil || string(b) != "hello\n" {
		t.Fatalf("read hello: %q, %v", b, err)
	}
	return dir, srv
}

func TestIOUring(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting needs root")
	}
	if err := fuseuring.Available(); err != nil && !errors.Is(err, fuseuring.ErrSwitchOff) {
		t.Skip(err)
	}
	var log logLines
	procs := runtime.GOMAXPROCS(0)
	_, srv := mountHello(t, Config{Name: "test", IOUring: true, Logf: log.logf})
	if !srv.IOUring() {
		t.Fatalf("served over /dev/fuse; log: %q", log.lines)
	}
	if got := runtime.GOMAXPROCS(0); got <= procs {
		t.Errorf("GOMAXPROCS %d while mounted over io_uring, %d before", got, procs)
	}
}

// TestIOUringFallback: when io_uring cannot be used, the tree is served
// over /dev/fuse and one log line says why.
func TestIOUringFallback(t *testing.T) {
	var log logLines
	cfg := Config{Name: "test", IOUring: true, Logf: log.logf}
	cfg.mountURing = func(context.Context, string, fuse.RawFileSystem, fuseuring.Options) (*fuseuring.Server, error) {
		return nil, fmt.Errorf("%w: %v", fuseuring.ErrUnavailable, syscall.ENOSYS)
	}
	dir, srv := mountHello(t, cfg)
	if srv.IOUring() {
		t.Error("IOUring() true although io_uring failed")
	}
	if lines := log.matching("serving over /dev/fuse"); len(lines) != 1 || !strings.Contains(lines[0], dir) || !strings.Contains(lines[0], "unavailable") {
		t.Errorf("log lines about the fallback: %q", lines)
	}
}

func TestDevFuse(t *testing.T) {
	_, srv := mountHello(t, Config{Name: "test"})
	if srv.IOUring() {
		t.Error("served over io_uring without asking")
	}
}

// TestUnmountWait: a mount kept busy by an open file is not unmounted; the
// error says so, names the mount point and wraps EBUSY, after the timeout.
// Once the file is closed (while UnmountWait retries), it is unmounted.
func TestUnmountWait(t *testing.T) {
	for _, uring := range []bool{false, true} {
		t.Run(fmt.Sprintf("iouring=%v", uring), func(t *testing.T) {
			if uring {
				if err := fuseuring.Available(); err != nil && !errors.Is(err, fuseuring.ErrSwitchOff) {
					t.Skip(err)
				}
			}
			var log logLines
			dir, srv := mountHello(t, Config{Name: "test", IOUring: uring, Logf: log.logf})
			if srv.IOUring() != uring {
				t.Fatalf("IOUring() = %v, asked %v; log: %q", srv.IOUring(), uring, log.lines)
			}
			f, err := os.Open(filepath.Join(dir, "hello"))
			if err != nil {
				t.Fatal(err)
			}
			closed := make(chan struct{})
			t.Cleanup(func() {
				select {
				case <-closed:
				default:
					f.Close()
				}
			})

			const short = 300 * time.Millisecond
			start := time.Now()
			err = srv.UnmountWait(context.Background(), short)
			took := time.Since(start)
			t.Logf("busy: %v", err)
			if !errors.Is(err, syscall.EBUSY) {
				t.Fatalf("UnmountWait with a file open: %v, want EBUSY", err)
			}
			for _, want := range []string{dir, "still in use after 300ms", "umount " + dir} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not say %q", err, want)
				}
			}
			if took < short || took > short+2*time.Second {
				t.Errorf("UnmountWait gave up after %v, timeout %v", took, short)
			}
			if !IsMountPoint(dir) {
				t.Fatal("unmounted although a file was open")
			}

			// A cancelled ctx ends the wait at once.
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			if err := srv.UnmountWait(ctx, time.Minute); !errors.Is(err, syscall.EBUSY) || !errors.Is(err, context.Canceled) {
				t.Errorf("UnmountWait with a cancelled ctx: %v, want EBUSY and context.Canceled", err)
			}

			go func() {
				time.Sleep(500 * time.Millisecond)
				f.Close()
				close(closed)
			}()
			if err := srv.UnmountWait(context.Background(), 10*time.Second); err != nil {
				t.Fatalf("UnmountWait after the file is closed: %v", err)
			}
			<-closed
			if IsMountPoint(dir) {
				t.Error("still mounted after UnmountWait returned nil")
			}
		})
	}
}
