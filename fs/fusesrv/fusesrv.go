// Package fusesrv mounts a go-fuse node tree the way every Hindsight mount
// wants it: 1 MiB requests with the read-ahead raised to match, no xattrs or
// splice, owner-only unless asked otherwise, logs through the caller, and an
// unmount when the caller's context ends or someone runs umount.
//
// With Config.IOUring the tree is served over FUSE's io_uring transport
// (package fuseuring: each request answered on the CPU that issued it),
// and over /dev/fuse by go-fuse's server when that is not possible.
package fusesrv

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/hindsight-cdp/hindsight/fs/fuseuring"
)

// Config says how to mount.
type Config struct {
	Name       string // file system name shown in /proc/mounts
	ReadOnly   bool
	AllowOther bool // allow_other plus default_permissions: the kernel checks modes
	Debug      bool // log every request through Logf, prefixed "fuse: "
	Logf       func(format string, args ...any)
	// IOUring serves over FUSE's io_uring transport, turning the kernel's
	// switch (fuseuring.SwitchPath) on if it is off, and raising
	// GOMAXPROCS by one per queue thread while mounted. Where it cannot
	// be used (a kernel before 6.14 or without it, not root, io_uring
	// disabled) the mount is served over /dev/fuse, and one log line says
	// why.
	IOUring bool

	// mountURing replaces fuseuring.Mount in tests.
	mountURing func(ctx context.Context, dir string, fs fuse.RawFileSystem, opts fuseuring.Options) (*fuseuring.Server, error)
}

// Server is a mounted tree.
type Server struct {
	srv   transport
	uring bool
	dir   string
	logf  func(format string, args ...any)

	mu      sync.Mutex // serializes Unmount
	stopped chan struct{}
}

// ReadAheadKB is the read-ahead set on a mount: 1 MiB, the largest request.
const ReadAheadKB = 1024

// Mount serves root at dir, an existing directory, until Unmount, until ctx
// ends, or until it is unmounted from outside.
func Mount(ctx context.Context, dir string, root fs.InodeEmbedder, cfg Config) (*Server, error) {
	if st, err := os.Stat(dir); err != nil {
		return nil, fmt.Errorf("mount: %w", err)
	} else if !st.IsDir() {
		return nil, fmt.Errorf("mount %s: not a directory", dir)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("mount %s: %w", dir, err)
	}
	logf := cfg.Logf
	if logf == nil {
		logf = log.Printf
	}
	var opts []string
	flags := uintptr(syscall.MS_NOSUID | syscall.MS_NODEV)
	if cfg.ReadOnly {
		opts = append(opts, "ro")
		flags |= syscall.MS_RDONLY // the direct mount takes flags, not "ro"
	}
	if cfg.AllowOther {
		opts = append(opts, "default_permissions")
	}
	fsOpts := &fs.Options{
		MountOptions: fuse.MountOptions{
			FsName:           cfg.Name,
			Name:             cfg.Name,
			Options:          opts,
			AllowOther:       cfg.AllowOther,
			MaxWrite:         1 << 20, // 1 MiB requests; see also ReadAheadKB
			DirectMount:      true,    // falls back to fusermount3 by itself
			DirectMountFlags: flags,
			// No extended attributes: ENOSYS once, and the kernel stops asking.
			DisableXAttrs: true,
			// Reads answer from memory, never from an fd, so splice cannot
			// save a copy; go-fuse would still set up a pipe for every read
			// and fail (and log) on 1 MiB ones, which exceed the pipe limit.
			DisableSplice: true,
			Debug:         cfg.Debug,
			Logger:        log.New(logWriter{logf, "fuse: "}, "", 0),
		},
		Logger:         log.New(logWriter{logf, "go-fuse: "}, "", 0),
		RootStableAttr: &fs.StableAttr{Ino: fuse.FUSE_ROOT_ID},
		UID:            uint32(os.Getuid()),
		GID:            uint32(os.Getgid()),
	}
	raw := fs.NewNodeFS(root, fsOpts)
	var server transport
	release := func() {}
	if cfg.IOUring {
		u, err := mountURing(ctx, dir, raw, fsOpts.MountOptions, flags, cfg, logf)
		if err != nil && ctx.Err() != nil {
			return nil, fmt.Errorf("mount %s: %w", dir, ctx.Err())
		} else if err != nil {
			logf("%s: serving over /dev/fuse: %v", dir, err)
		} else {
			server = u
			release = reserveProcs(u.Queues())
		}
	}
	uring := server != nil
	if server == nil {
		// A failed io_uring attempt left no connection behind (its
		// mount is gone): the same bridge serves this one.
		gs, err := fuse.NewServer(raw, dir, &fsOpts.MountOptions)
		if err != nil {
			return nil, fmt.Errorf("mount %s: %w", dir, err)
		}
		go gs.Serve()
		if err := gs.WaitMount(); err != nil {
			_ = gs.Unmount()
			return nil, fmt.Errorf("mount %s: %w", dir, err)
		}
		server = gs
	}
	if err := raiseReadAhead(dir); err != nil {
		logf("%s: requests stay at 128 KiB: %v", dir, err)
	}
	s := &Server{srv: server, uring: uring, dir: dir, logf: logf, stopped: make(chan struct{})}
	go func() {
		server.Wait()
		release()
		close(s.stopped)
	}()
	go func() {
		select {
		case <-ctx.Done():
			if err := s.Unmount(); err != nil {
				logf("unmount %s: %v", dir, err)
			}
		case <-s.stopped:
		}
	}()
	return s, nil
}

// Unmount unmounts the tree and waits until serving has stopped; it fails
// with the kernel's error (EBUSY) while the mount is in use. Unmounting what
// is unmounted already is a no-op.
func (s *Server) Unmount() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-s.stopped:
		return nil // unmounted already, maybe from outside
	default:
	}
	if err := s.srv.Unmount(); err != nil {
		if !errors.Is(err, syscall.EBUSY) && strings.Contains(strings.ToLower(err.Error()), syscall.EBUSY.Error()) {
			// go-fuse falls back to fusermount3 -u, whose error is
			// its message: make it the errno callers can test.
			err = syscall.EBUSY
		}
		if s.uring {
			return err // fuseuring's error names the mount point
		}
		return fmt.Errorf("unmount %s: %w", s.dir, err)
	}
	<-s.stopped
	return nil
}

// UnmountTimeout is how long a busy mount is waited for by default: long
// enough for a user to close a file and for the kernel to let go of a loop
// device's backing file a moment after the last unmount above it, short
// enough that a stuck shutdown says so.
const UnmountTimeout = 30 * time.Second

// UnmountWait is Unmount retried, with a short backoff, while the kernel
// answers EBUSY (an open file, a working directory, a loop device over a
// file of the tree), for up to timeout or until ctx ends. It then fails
// with an error that names the mount point, says what holds it and wraps
// EBUSY. Any other error returns at once.
func (s *Server) UnmountWait(ctx context.Context, timeout time.Duration) error {
	start := time.Now()
	deadline := start.Add(timeout)
	delay := 10 * time.Millisecond
	logged := false
	for {
		err := s.Unmount()
		if err == nil || !errors.Is(err, syscall.EBUSY) {
			return err
		}
		left := time.Until(deadline)
		if left <= 0 {
			return fmt.Errorf("%w: still in use after %v: close the files open in it and leave it (no working directory inside), unmount what is mounted from its files and detach their loop devices (losetup -j FILE), then run 'umount %s'", err, timeout, s.dir)
		}
		if !logged && time.Since(start) >= 2*time.Second {
			s.logf("%s is busy: retrying unmount for up to %v", s.dir, timeout)
			logged = true
		}
		t := time.NewTimer(min(delay, left))
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%w: still in use when given up: %w", err, context.Cause(ctx))
		case <-t.C:
		}
		delay = min(2*delay, 250*time.Millisecond)
	}
}

// Wait returns once the tree is unmounted, by Unmount, ctx, or from outside
// (umount, fusermount3 -u).
func (s *Server) Wait() { <-s.stopped }

// IOUring reports whether the tree is served over io_uring rather than
// /dev/fuse.
func (s *Server) IOUring() bool { return s.uring }

// transport is go-fuse's server or fuseuring's.
type transport interface {
	Unmount() error
	Wait()
}

var (
	_ transport = (*fuse.Server)(nil)
	_ transport = (*fuseuring.Server)(nil)
)

// mountURing mounts over io_uring, turning the kernel switch on if needed.
func mountURing(ctx context.Context, dir string, raw fuse.RawFileSystem, mo fuse.MountOptions, flags uintptr, cfg Config, logf func(string, ...any)) (*fuseuring.Server, error) {
	if err := fuseuring.Available(); errors.Is(err, fuseuring.ErrSwitchOff) {
		if err := fuseuring.Enable(); err != nil {
			return nil, err
		}
		logf("turned on %s for FUSE over io_uring", fuseuring.SwitchPath)
	}
	mount := cfg.mountURing
	if mount == nil {
		mount = fuseuring.Mount
	}
	return mount(ctx, dir, raw, fuseuring.Options{MountOptions: mo, MountFlags: flags, Logf: logf})
}

// procs serializes changes of GOMAXPROCS.
var procs sync.Mutex

// reserveProcs raises GOMAXPROCS by n, one P per io_uring queue thread,
// until release is called. A queue thread keeps its P while it waits in
// the kernel, which the runtime takes back only after a while (up to
// 10 ms); without more Ps, every other goroutine of the program (the
// journal behind a tap, requests handed off the queue threads) would wait
// that long.
func reserveProcs(n int) (release func()) {
	procs.Lock()
	runtime.GOMAXPROCS(runtime.GOMAXPROCS(0) + n)
	procs.Unlock()
	return func() {
		procs.Lock()
		runtime.GOMAXPROCS(max(1, runtime.GOMAXPROCS(0)-n))
		procs.Unlock()
	}
}

// raiseReadAhead sets the read-ahead of the mount at dir to ReadAheadKB. The
// kernel offers FUSE 128 KiB at setup and go-fuse can only lower it, so a
// sequential reader would get 128 KiB requests however large MaxWrite is;
// the mount's backing device info is where it can be raised.
func raiseReadAhead(dir string) error {
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		return err
	}
	bdi := fmt.Sprintf("/sys/class/bdi/%d:%d/read_ahead_kb", unix.Major(st.Dev), unix.Minor(st.Dev))
	return os.WriteFile(bdi, []byte(fmt.Sprint(ReadAheadKB)), 0)
}

// logWriter turns go-fuse's log.Logger output into Logf lines.
type logWriter struct {
	logf   func(format string, args ...any)
	prefix string
}

func (w logWriter) Write(p []byte) (int, error) {
	w.logf("%s%s", w.prefix, strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

// IsMountPoint reports whether dir is a mount point (of any filesystem),
// from /proc/self/mountinfo: for cleanup that must not unmount or remove
// what it did not find mounted.
func IsMountPoint(dir string) bool {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 4 && f[4] == dir {
			return true
		}
	}
	return false
}
