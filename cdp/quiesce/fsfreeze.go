package quiesce

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// The Linux freeze ioctls (<linux/fs.h>): _IOWR('X', 119, int) and
// _IOWR('X', 120, int). golang.org/x/sys/unix does not define them.
const (
	ioctlFIFREEZE = 0xC0045877
	ioctlFITHAW   = 0xC0045878
)

// fsFreeze freezes the filesystems holding paths, in order, and thaws them
// in reverse: FIFREEZE syncs a filesystem and blocks every new write to it
// until FITHAW, leaving its journal clean (ext4, XFS and Btrfs support it).
// Paths on one filesystem are frozen once.
type fsFreeze struct {
	paths  []string
	frozen []*freezeCall // in freeze order
}

// freezeCall is one FIFREEZE, which the kernel does not let us interrupt:
// done closes when it returns, and only then may the filesystem be thawed.
type freezeCall struct {
	path string
	f    *os.File
	done chan struct{}
	err  error
}

var _ Agent = (*fsFreeze)(nil)

func (z *fsFreeze) Name() string { return "fsfreeze" }

func (z *fsFreeze) Freeze(ctx context.Context, st *Step) error {
	seen := map[uint64]string{}
	var lines []string
	for _, p := range z.paths {
		f, err := os.Open(p)
		if err != nil {
			return fmt.Errorf("fsfreeze %s: %w", p, err)
		}
		var sb unix.Stat_t
		if err := unix.Fstat(int(f.Fd()), &sb); err != nil {
			f.Close()
			return fmt.Errorf("fsfreeze %s: %w", p, err)
		}
		if first, ok := seen[sb.Dev]; ok {
			f.Close()
			lines = append(lines, fmt.Sprintf("%s: same filesystem as %s", p, first))
			continue
		}
		seen[sb.Dev] = p
		c := &freezeCall{path: p, f: f, done: make(chan struct{})}
		z.frozen = append(z.frozen, c)
		go func() {
			c.err = ioctl(c.f, ioctlFIFREEZE)
			close(c.done)
		}()
		select {
		case <-c.done:
			if c.err != nil {
				return fmt.Errorf("fsfreeze %s: %w", p, c.err)
			}
			lines = append(lines, p+": frozen")
		case <-ctx.Done():
			return fmt.Errorf("fsfreeze %s: still freezing: %w", p, ctx.Err())
		}
	}
	st.Output = strings.Join(lines, "\n")
	return nil
}

// Thaw thaws every filesystem whose freeze was attempted, waiting for a
// freeze still in progress. If ctx ends first, that filesystem is thawed in
// the background as soon as its freeze returns.
func (z *fsFreeze) Thaw(ctx context.Context, st *Step) error {
	var errs []error
	var lines []string
	for i := len(z.frozen) - 1; i >= 0; i-- {
		c := z.frozen[i]
		select {
		case <-c.done:
		case <-ctx.Done():
			go func() { <-c.done; thawCall(c) }()
			errs = append(errs, fmt.Errorf("fsthaw %s: freeze still in progress, thawing when it returns: %w", c.path, ctx.Err()))
			continue
		}
		if c.err != nil { // never frozen
			c.f.Close()
			continue
		}
		if err := thawCall(c); err != nil {
			errs = append(errs, err)
			continue
		}
		lines = append(lines, c.path+": thawed")
	}
	z.frozen = nil
	st.Output = strings.Join(lines, "\n")
	return errors.Join(errs...)
}

// thawCall thaws c's filesystem and closes its file. EINVAL means it was
// not frozen (someone ran fsfreeze -u), which is what thawing wants.
func thawCall(c *freezeCall) error {
	defer c.f.Close()
	if err := ioctl(c.f, ioctlFITHAW); err != nil && !errors.Is(err, syscall.EINVAL) {
		return fmt.Errorf("fsthaw %s: %w", c.path, err)
	}
	return nil
}

func ioctl(f *os.File, req uintptr) error {
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), req, 0); errno != 0 {
		return errno
	}
	return nil
}
