package cutfs

import (
	"errors"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// Options tune a mount; the zero value is ready to use.
type Options struct {
	// Logf receives what undoing the namespace at a cut could not do, and
	// go-fuse's debug trace when Debug is set (nil: discarded).
	Logf  func(format string, args ...any)
	Debug bool
}

// FS is one mount of a backing directory.
type FS struct {
	mnt, backing, trash string
	server              *fuse.Server
	conn                uint32 // the kernel's FUSE connection (fusectl)
	logf                func(string, ...any)

	// mu serializes every operation with Cut: an operation runs wholly
	// before the cut or fails with EIO after it.
	mu      sync.Mutex
	cut     bool
	files   map[uint64]*pending // by backing inode
	undo    []nsop              // namespace operations not yet durable, oldest first
	trashed int                 // names handed out in the trash
}

// nsop is a namespace operation not yet durable.
type nsop struct {
	kind   nsKind
	dirs   []uint64 // backing inodes of the directories it changed
	synced []bool   // which of dirs were fsynced since
	// Paths relative to the backing directory; trash is absolute.
	path, to, trash string
}

type nsKind int

const (
	nsCreate   nsKind = iota // path appeared (file, dir, link, symlink, node)
	nsRemove                 // path moved to trash (unlink, rmdir)
	nsRename                 // path moved to to; a replaced to is in trash
	nsExchange               // path and to swapped
)

// Mount serves backing at mnt (both existing directories).
func Mount(mnt, backing string, opts Options) (*FS, error) {
	backing, err := filepath.Abs(backing)
	if err != nil {
		return nil, err
	}
	trash := filepath.Join(filepath.Dir(backing), "."+filepath.Base(backing)+".cutfs-trash")
	if err := os.RemoveAll(trash); err != nil {
		return nil, fmt.Errorf("cutfs: clear %s: %w", trash, err)
	}
	if err := os.Mkdir(trash, 0o700); err != nil {
		return nil, fmt.Errorf("cutfs: %w", err)
	}
	c := &FS{mnt: mnt, backing: backing, trash: trash, files: map[uint64]*pending{}, logf: opts.Logf}
	if c.logf == nil {
		c.logf = func(string, ...any) {}
	}
	lroot, err := fs.NewLoopbackRoot(backing)
	if err != nil {
		return nil, fmt.Errorf("cutfs: %w", err)
	}
	root := &node{LoopbackNode: lroot.(*fs.LoopbackNode), c: c}
	sec := time.Second
	fo := &fs.Options{
		EntryTimeout: &sec,
		AttrTimeout:  &sec,
		MountOptions: fuse.MountOptions{
			FsName:      "cutfs",
			Name:        "cutfs",
			DirectMount: true,
			AllowOther:  true,
			Debug:       opts.Debug,
			Logger:      log.New(logWriter(c.logf), "go-fuse: ", 0),
		},
	}
	c.server, err = fs.Mount(mnt, root, fo)
	if err != nil {
		os.Remove(trash)
		return nil, fmt.Errorf("cutfs: mount %s: %w", mnt, err)
	}
	var st unix.Stat_t
	if err := unix.Stat(mnt, &st); err != nil {
		c.server.Unmount()
		return nil, fmt.Errorf("cutfs: %w", err)
	}
	c.conn = unix.Minor(st.Dev)
	return c, nil
}

// fusectl is where the kernel lets a connection be aborted.
const fusectl = "/sys/fs/fuse/connections"

// abort ends the connection as a dead device would: every request still
// waiting and every later one fails (ENOTCONN), and the server stops.
// Without it a process holding a file open in the detached mount would
// keep it served, and one exiting with a file open in its own mount would
// hang in close.
func (c *FS) abort() error {
	if _, err := os.Stat(filepath.Join(fusectl, "version")); err != nil {
		if _, err := os.Stat(fusectl); err != nil {
			return fmt.Errorf("cutfs: no %s: %w", fusectl, err)
		}
		if err := unix.Mount("fusectl", fusectl, "fusectl", 0, ""); err != nil && !errors.Is(err, unix.EBUSY) {
			return fmt.Errorf("cutfs: mount fusectl: %w", err)
		}
	}
	err := os.WriteFile(filepath.Join(fusectl, fmt.Sprint(c.conn), "abort"), []byte("1"), 0)
	if err != nil && !errors.Is(err, os.ErrNotExist) { // gone already: nothing was open
		return fmt.Errorf("cutfs: abort connection %d: %w", c.conn, err)
	}
	return nil
}

// Dir is the mount point.
func (c *FS) Dir() string { return c.mnt }

// Backing is the backing directory.
func (c *FS) Backing() string { return c.backing }

// Cut simulates a power cut (see the package doc), detaches the mount and
// aborts its connection: processes that still hold files in it get errors
// (EIO, then ENOTCONN) and the server ends.
func (c *FS) Cut() error {
	c.mu.Lock()
	if c.cut {
		c.mu.Unlock()
		return errors.New("cutfs: already cut")
	}
	c.cut = true
	c.files = nil
	var errs []error
	for i := len(c.undo) - 1; i >= 0; i-- {
		if err := c.revert(c.undo[i]); err != nil {
			c.logf("cutfs: undo: %v", err)
			errs = append(errs, err)
		}
	}
	c.undo = nil
	errs = append(errs, c.emptyTrash())
	c.mu.Unlock()
	// Abort, then detach: the dead mount must not stay in anyone's way.
	errs = append(errs, c.abort())
	if err := unix.Unmount(c.mnt, unix.MNT_DETACH); err != nil {
		errs = append(errs, fmt.Errorf("cutfs: detach %s: %w", c.mnt, err))
	}
	errs = append(errs, c.Wait(10*time.Second))
	return errors.Join(errs...)
}

// Wait waits until the server ended (every file of a cut mount closed), at
// most timeout.
func (c *FS) Wait(timeout time.Duration) error {
	done := make(chan struct{})
	go func() { c.server.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-time.After(timeout):
		return fmt.Errorf("cutfs: the server of %s still runs after %v: a process holds files in it", c.mnt, timeout)
	}
}

// Unmount is a clean shutdown: every pending change is made durable, then
// the mount is unmounted (it fails while files are open in it).
func (c *FS) Unmount() error {
	c.mu.Lock()
	if c.cut {
		c.mu.Unlock()
		return c.Wait(10 * time.Second)
	}
	if err := c.server.Unmount(); err != nil {
		c.mu.Unlock()
		return fmt.Errorf("cutfs: unmount %s: %w", c.mnt, err)
	}
	var errs []error
	for ino, p := range c.files {
		errs = append(errs, c.applyIno(ino, p))
	}
	c.files = nil
	for _, op := range c.undo {
		errs = append(errs, c.durable(op))
	}
	c.undo = nil
	c.cut = true // nothing is served any more
	errs = append(errs, os.RemoveAll(c.trash))
	c.mu.Unlock()
	errs = append(errs, c.Wait(10*time.Second))
	return errors.Join(errs...)
}

// applyIno makes a file's pending changes durable without an open handle
// (clean unmount): the file is found by inode under the backing directory
// or the trash.
func (c *FS) applyIno(ino uint64, p *pending) error {
	var found string
	for _, dir := range []string{c.backing, c.trash} {
		filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
			if err != nil || found != "" {
				return filepath.SkipDir
			}
			if info, err := d.Info(); err == nil && info.Sys().(*syscall.Stat_t).Ino == ino && d.Type().IsRegular() {
				found = path
				return filepath.SkipAll
			}
			return nil
		})
	}
	if found == "" {
		return nil // unlinked and gone: nothing to keep
	}
	fd, err := unix.Open(found, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return p.apply(fd)
}

// state returns the pending changes of the file with backing inode ino,
// whose backing descriptor is fd.
func (c *FS) state(ino uint64, fd int) (*pending, error) {
	if p := c.files[ino]; p != nil {
		return p, nil
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, err
	}
	p := newPending(st.Size)
	c.files[ino] = p
	return p, nil
}

// sync makes the pending changes of ino durable.
func (c *FS) sync(ino uint64, fd int) error {
	p := c.files[ino]
	if p == nil {
		return unix.Fdatasync(fd)
	}
	if err := p.apply(fd); err != nil {
		return err
	}
	delete(c.files, ino)
	return nil
}

// record adds a namespace operation to the undo log.
func (c *FS) record(op nsop) {
	op.synced = make([]bool, len(op.dirs))
	c.undo = append(c.undo, op)
}

// syncDir makes durable every recorded operation whose directories have
// all been synced.
func (c *FS) syncDir(ino uint64) error {
	var errs []error
	keep := c.undo[:0]
	for _, op := range c.undo {
		all := true
		for i, d := range op.dirs {
			if d == ino {
				op.synced[i] = true
			}
			all = all && op.synced[i]
		}
		if all {
			errs = append(errs, c.durable(op))
		} else {
			keep = append(keep, op)
		}
	}
	clear(c.undo[len(keep):])
	c.undo = keep
	return errors.Join(errs...)
}

// durable forgets what undoing op would have needed.
func (c *FS) durable(op nsop) error {
	if op.trash == "" {
		return nil
	}
	var st unix.Stat_t
	if unix.Lstat(op.trash, &st) == nil {
		delete(c.files, st.Ino)
	}
	return os.RemoveAll(op.trash)
}

// revert undoes op (at a cut). An entry whose directory is gone for good
// (its removal was durable) has nowhere to come back to: that is no error.
func (c *FS) revert(op nsop) error {
	path, to := c.abs(op.path), c.abs(op.to)
	if _, err := os.Lstat(filepath.Dir(path)); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	switch op.kind {
	case nsCreate:
		return os.RemoveAll(path)
	case nsRemove:
		return os.Rename(op.trash, path)
	case nsRename:
		if err := os.Rename(to, path); err != nil {
			return err
		}
		if op.trash != "" {
			return os.Rename(op.trash, to)
		}
	case nsExchange:
		return unix.Renameat2(unix.AT_FDCWD, path, unix.AT_FDCWD, to, unix.RENAME_EXCHANGE)
	}
	return nil
}

func (c *FS) emptyTrash() error {
	ents, err := os.ReadDir(c.trash)
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range ents {
		errs = append(errs, os.RemoveAll(filepath.Join(c.trash, e.Name())))
	}
	return errors.Join(errs...)
}

// toTrash moves the backing entry at abs into the trash and returns where.
func (c *FS) toTrash(abs string) (string, error) {
	c.trashed++
	t := filepath.Join(c.trash, fmt.Sprint(c.trashed))
	if err := os.Rename(abs, t); err != nil {
		return "", err
	}
	return t, nil
}

func (c *FS) abs(rel string) string {
	if rel == "" {
		return ""
	}
	return filepath.Join(c.backing, rel)
}

func (c *FS) rel(abs string) string {
	r, err := filepath.Rel(c.backing, abs)
	if err != nil {
		return abs
	}
	return r
}

// logWriter gives go-fuse's logger the Logf.
type logWriter func(string, ...any)

func (l logWriter) Write(p []byte) (int, error) {
	l("%s", strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
