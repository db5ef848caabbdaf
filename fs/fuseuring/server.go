package fuseuring

import (
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// Options say how to mount and serve.
type Options struct {
	// MountOptions are go-fuse's: MaxWrite, Name, FsName, Options,
	// AllowOther, Debug, Logger, capabilities. Splice is never used,
	// DirectMount and fusermount are not: Mount mounts by itself.
	fuse.MountOptions
	// MountFlags are mount(2) flags; zero means MS_NOSUID|MS_NODEV.
	MountFlags uintptr
	// Depth is the number of ring entries of each CPU's queue: how many
	// requests issued on one CPU the server holds at once. Zero means
	// DefaultDepth.
	Depth int
	// NormalPriority keeps queue threads at normal priority instead of
	// SCHED_IDLE (see the package doc: a synchronous client then moves
	// to another CPU at every reply).
	NormalPriority bool
	// Logf receives the few lines this package logs; nil means log.Printf.
	Logf func(format string, args ...any)
}

// DefaultDepth is the ring entries of a queue unless Options say otherwise.
const DefaultDepth = 8

// Server is a mount served over io_uring.
type Server struct {
	dir    string
	dev    uint64 // the mount's device number
	fd     int    // /dev/fuse
	fs     fuse.RawFileSystem
	ps     *fuse.ProtocolServer
	logf   func(format string, args ...any)
	idle   bool // queue threads at SCHED_IDLE
	queues []*queue

	// The scheduling guard parks while every queue is idle; the first
	// request wakes it (sched.go).
	guardParked atomic.Bool
	guardWake   chan struct{}
	guardWakes  atomic.Uint64 // how often a request woke it, for tests

	wg       sync.WaitGroup // queues, the /dev/fuse reader and its answers
	stopped  chan struct{}
	unmounts sync.Mutex
}

// Mount mounts dir, an existing directory, serves fs there and returns once
// every CPU's queue is registered with the kernel, so that requests flow.
// ctx bounds the setup only: serving ends when the mount goes (Unmount,
// umount from outside). It fails with an error wrapping ErrUnavailable,
// leaving nothing mounted, when FUSE over io_uring cannot be used.
func Mount(ctx context.Context, dir string, fs fuse.RawFileSystem, opts Options) (*Server, error) {
	if err := Available(); err != nil {
		return nil, err
	}
	dir, err := filepath.Abs(dir)
	if err == nil {
		dir, err = filepath.EvalSymlinks(dir)
	}
	if err != nil {
		return nil, fmt.Errorf("mount: %w", err)
	}
	s := &Server{dir: dir, fs: fs, logf: opts.Logf, idle: !opts.NormalPriority, stopped: make(chan struct{}), guardWake: make(chan struct{}, 1)}
	if s.logf == nil {
		s.logf = log.Printf
	}
	mo := opts.MountOptions
	mo.ExtraCapabilities |= capOverIOURing
	mo.DisableSplice = true
	if mo.MaxWrite <= 0 {
		mo.MaxWrite = 128 << 10
	}
	if mo.Logger == nil {
		mo.Logger = log.New(logWriter{s.logf}, "", 0)
	}
	s.ps = fuse.NewProtocolServer(fs, &mo)
	if s.fd, s.dev, err = mountFD(dir, &mo, opts.MountFlags); err != nil {
		return nil, err
	}
	payload, err := s.init(ctx)
	if err != nil {
		s.abort()
		unix.Close(s.fd)
		return nil, err
	}
	if err := s.startQueues(payload, opts.Depth); err != nil {
		s.abort()
		s.wg.Wait()
		unix.Close(s.fd)
		return nil, fmt.Errorf("mount %s: %w: %w", dir, ErrUnavailable, err)
	}
	stopGuard := make(chan struct{})
	guarded := make(chan struct{})
	go func() {
		defer close(guarded)
		if s.idle {
			s.guardQueues(stopGuard)
		}
	}()
	go func() {
		s.wg.Wait()
		close(stopGuard)
		<-guarded
		unix.Close(s.fd)
		s.fs.OnUnmount()
		close(s.stopped)
	}()
	return s, nil
}

// startQueues starts the /dev/fuse reader and a queue for every possible
// CPU, as the kernel counts them, and waits until all are registered.
func (s *Server) startQueues(payload, depth int) error {
	n, err := possibleCPUs()
	if err != nil {
		return err
	}
	if depth <= 0 {
		depth = DefaultDepth
	}
	for qid := range n {
		s.queues = append(s.queues, newQueue(s, qid, depth))
	}
	s.wg.Add(1)
	go s.readDevice(payload)
	ready := make(chan error, n)
	for _, q := range s.queues {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			q.run(payload, ready)
		}()
	}
	var first error
	for range n {
		if err := <-ready; err != nil && first == nil {
			first = err
		}
	}
	return first
}

// possibleCPUs is num_possible_cpus(): the kernel makes a queue for each
// and starts the ring only when every one has an entry.
func possibleCPUs() (int, error) {
	b, err := os.ReadFile("/sys/devices/system/cpu/possible")
	if err != nil {
		return 0, err
	}
	n := 0
	for _, r := range strings.Split(strings.TrimSpace(string(b)), ",") {
		lo, hi, isRange := strings.Cut(r, "-")
		first, err1 := strconv.Atoi(lo)
		last, err2 := first, error(nil)
		if isRange {
			last, err2 = strconv.Atoi(hi)
		}
		if err1 != nil || err2 != nil || last < first {
			return 0, fmt.Errorf("parse /sys/devices/system/cpu/possible: %q", r)
		}
		n += last - first + 1
	}
	return n, nil
}

// abort ends the connection after a failed setup: a lazy unmount, which
// the kernel turns into an abort once nothing uses the mount.
func (s *Server) abort() {
	if err := unix.Unmount(s.dir, unix.MNT_DETACH); err != nil {
		s.logf("fuseuring: unmount %s: %v", s.dir, err)
	}
}

// Unmount unmounts and waits until serving has stopped. It fails with the
// kernel's error (EBUSY) while the mount is in use; unmounting what is
// unmounted already is a no-op. A mount whose connection was aborted
// (serving stopped, the mount point left behind) is unmounted too.
func (s *Server) Unmount() error {
	s.unmounts.Lock()
	defer s.unmounts.Unlock()
	select {
	case <-s.stopped:
		if !s.mounted() {
			return nil
		}
	default:
	}
	// As go-fuse does, retry a few times (150 ms in all): the kernel may
	// not have seen the last close of a file yet.
	var err error
	for delay := 5 * time.Millisecond; ; delay *= 2 {
		if err = unix.Unmount(s.dir, 0); err != unix.EBUSY || delay > 80*time.Millisecond {
			break
		}
		time.Sleep(delay)
	}
	if err != nil {
		return fmt.Errorf("unmount %s: %w", s.dir, err)
	}
	<-s.stopped
	return nil
}

// mounted reports whether our mount is still at dir, from mountinfo: the
// mount point may be unreachable (an aborted connection answers ENOTCONN),
// or someone may have mounted something else there since.
func (s *Server) mounted() bool {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return false
	}
	dev := fmt.Sprintf("%d:%d", unix.Major(s.dev), unix.Minor(s.dev))
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 4 && f[2] == dev && unescapeMountinfo(f[4]) == s.dir {
			return true
		}
	}
	return false
}

// Wait returns once the mount is gone, every queue has stopped and every
// handler has returned.
func (s *Server) Wait() { <-s.stopped }

// Queues is the number of ring queues: one per possible CPU.
func (s *Server) Queues() int { return len(s.queues) }

// Served is the number of requests served over the rings so far.
func (s *Server) Served() uint64 {
	var n uint64
	for _, q := range s.queues {
		n += q.served.Load()
	}
	return n
}

type logWriter struct{ logf func(string, ...any) }

func (w logWriter) Write(p []byte) (int, error) {
	w.logf("%s", strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}
