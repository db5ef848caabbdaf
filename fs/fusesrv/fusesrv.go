// Package fusesrv mounts a go-fuse node tree the way every Hindsight mount
// wants it: 1 MiB requests with the read-ahead raised to match, no xattrs or
// splice, owner-only unless asked otherwise, logs through the caller, and an
// unmount when the caller's context ends or someone runs umount.
package fusesrv

import (
	"context"
	"fmt"
	"log"
	"os"
	"strings"
	"sync"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// Config says how to mount.
type Config struct {
	Name       string // file system name shown in /proc/mounts
	ReadOnly   bool
	AllowOther bool // allow_other plus default_permissions: the kernel checks modes
	Debug      bool // log every request through Logf, prefixed "fuse: "
	Logf       func(format string, args ...any)
}

// Server is a mounted tree.
type Server struct {
	srv  *fuse.Server
	dir  string
	logf func(format string, args ...any)

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
	server, err := fuse.NewServer(fs.NewNodeFS(root, fsOpts), dir, &fsOpts.MountOptions)
	if err != nil {
		return nil, fmt.Errorf("mount %s: %w", dir, err)
	}
	go server.Serve()
	if err := server.WaitMount(); err != nil {
		_ = server.Unmount()
		return nil, fmt.Errorf("mount %s: %w", dir, err)
	}
	if err := raiseReadAhead(dir); err != nil {
		logf("%s: requests stay at 128 KiB: %v", dir, err)
	}
	s := &Server{srv: server, dir: dir, logf: logf, stopped: make(chan struct{})}
	go func() {
		server.Wait()
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
		return fmt.Errorf("unmount %s: %w", s.dir, err)
	}
	<-s.stopped
	return nil
}

// Wait returns once the tree is unmounted, by Unmount, ctx, or from outside
// (umount, fusermount3 -u).
func (s *Server) Wait() { <-s.stopped }

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
