package fs

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// Options tune a mount. The zero value is a private mount listing 100 points.
type Options struct {
	// AllowOther lets every user read the tree: it mounts with allow_other
	// and default_permissions (the kernel checks the modes) and gives
	// directories 0555 and files 0444 instead of 0500 and 0400.
	AllowOther bool
	// Debug logs every FUSE request and reply through Logf, prefixed "fuse: ".
	Debug bool
	// ListPoints is how many of the newest points a disk directory lists
	// (bookmarks are always listed); 0 means 100.
	ListPoints int
	// Now is the clock that decides what is in the future and what relative
	// names mean; nil means time.Now.
	Now func() time.Time
	// Logf receives what cannot be returned: I/O errors the kernel sees as
	// EIO, a failure to raise read-ahead. nil means log.Printf.
	Logf func(format string, args ...any)
}

// Server is a mounted tree.
type Server struct {
	srv *fuse.Server
	dir string

	mu      sync.Mutex // serializes Unmount
	stopped chan struct{}
}

// readAheadKB is the read-ahead set on the mount: 1 MiB, the size of the
// largest request (MaxWrite).
const readAheadKB = 1024

// Mount serves src's history read-only at dir, which must be an existing
// directory; it creates nothing outside it. The tree stays mounted until
// Unmount or until ctx is done.
func Mount(ctx context.Context, dir string, src Source, opt Options) (*Server, error) {
	if src == nil {
		return nil, errors.New("hindsight fs: mount: nil Source")
	}
	if st, err := os.Stat(dir); err != nil {
		return nil, fmt.Errorf("hindsight fs: mount: %w", err)
	} else if !st.IsDir() {
		return nil, fmt.Errorf("hindsight fs: mount %s: not a directory", dir)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("hindsight fs: mount %s: %w", dir, err)
	}

	t := &tree{
		src:        src,
		listPoints: opt.ListPoints,
		now:        opt.Now,
		logf:       opt.Logf,
		uid:        uint32(os.Getuid()),
		gid:        uint32(os.Getgid()),
		dirMode:    0o500,
		fileMode:   0o400,
		mounted:    time.Now(),
	}
	if t.listPoints <= 0 {
		t.listPoints = 100
	}
	if t.now == nil {
		t.now = time.Now
	}
	if t.logf == nil {
		t.logf = log.Printf
	}
	mountOpts := []string{"ro"}
	if opt.AllowOther {
		t.dirMode, t.fileMode = 0o555, 0o444
		mountOpts = append(mountOpts, "default_permissions")
	}

	logf := t.logf
	fsOpts := &fs.Options{
		MountOptions: fuse.MountOptions{
			FsName:      "hindsight",
			Name:        "hindsight",
			Options:     mountOpts,
			AllowOther:  opt.AllowOther,
			MaxWrite:    1 << 20, // 1 MiB requests; see also readAheadKB
			DirectMount: true,    // falls back to fusermount3 by itself
			// MS_RDONLY as well as "ro": the direct mount takes flags.
			DirectMountFlags: syscall.MS_RDONLY | syscall.MS_NOSUID | syscall.MS_NODEV,
			// No extended attributes: ENOSYS once, and the kernel stops asking.
			DisableXAttrs: true,
			// Reads answer from memory, never from an fd, so splice cannot
			// save a copy; go-fuse would still set up a pipe for every read
			// and fail (and log) on 1 MiB ones, which exceed the pipe limit.
			DisableSplice: true,
			Debug:         opt.Debug,
			Logger:        log.New(logWriter{logf, "fuse: "}, "", 0),
		},
		Logger:         log.New(logWriter{logf, "hindsight fs: go-fuse: "}, "", 0),
		RootStableAttr: &fs.StableAttr{Ino: fuse.FUSE_ROOT_ID},
		UID:            t.uid,
		GID:            t.gid,
	}
	root := &rootNode{t: t}
	server, err := fuse.NewServer(fs.NewNodeFS(root, fsOpts), dir, &fsOpts.MountOptions)
	if err != nil {
		return nil, fmt.Errorf("hindsight fs: mount %s: %w", dir, err)
	}
	go server.Serve()
	if err := server.WaitMount(); err != nil {
		_ = server.Unmount()
		return nil, fmt.Errorf("hindsight fs: mount %s: %w", dir, err)
	}

	if err := raiseReadAhead(dir); err != nil {
		logf("hindsight fs: %s: reads stay at 128 KiB: %v", dir, err)
	}

	s := &Server{srv: server, dir: dir, stopped: make(chan struct{})}
	go func() {
		server.Wait()
		close(s.stopped)
	}()
	go func() {
		select {
		case <-ctx.Done():
			if err := s.Unmount(); err != nil {
				logf("hindsight fs: unmount %s: %v", dir, err)
			}
		case <-s.stopped:
		}
	}()
	return s, nil
}

// Unmount unmounts the tree and waits until serving has stopped; it retries
// while the mount is busy for a short while, and then fails with the kernel's
// error (EBUSY). Unmounting what is unmounted already is a no-op.
func (s *Server) Unmount() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-s.stopped:
		return nil // unmounted already, maybe from outside
	default:
	}
	if err := s.srv.Unmount(); err != nil {
		return fmt.Errorf("hindsight fs: unmount %s: %w", s.dir, err)
	}
	return nil
}

// Wait returns once the tree is unmounted, by Unmount, ctx, or from outside
// (umount, fusermount3 -u).
func (s *Server) Wait() {
	<-s.stopped
}

// raiseReadAhead sets the read-ahead of the mount at dir to readAheadKB. The
// kernel offers FUSE 128 KiB at setup and go-fuse can only lower it, so a
// sequential reader would get 128 KiB requests however large MaxWrite is;
// the mount's backing device info is where it can be raised.
func raiseReadAhead(dir string) error {
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		return err
	}
	bdi := fmt.Sprintf("/sys/class/bdi/%d:%d/read_ahead_kb", unix.Major(st.Dev), unix.Minor(st.Dev))
	return os.WriteFile(bdi, []byte(fmt.Sprint(readAheadKB)), 0)
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
