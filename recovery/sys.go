package recovery

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// loopAttach attaches size bytes at off of file read-only to a free loop
// device with autoclear: the kernel detaches it when the last user (our fd,
// then the mount made from it) lets go, so a process that dies between
// attach and mount leaves no device behind. The caller closes the returned
// file once the device is mounted (or on failure).
func loopAttach(file string, off, size int64, writable bool) (*os.File, error) {
	flag, loFlags := os.O_RDONLY, uint32(unix.LO_FLAGS_READ_ONLY|unix.LO_FLAGS_AUTOCLEAR)
	if writable {
		flag, loFlags = os.O_RDWR, unix.LO_FLAGS_AUTOCLEAR
	}
	backing, err := os.OpenFile(file, flag, 0)
	if err != nil {
		return nil, err
	}
	defer backing.Close() // the loop device holds its own reference
	ctl, err := os.OpenFile("/dev/loop-control", os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("loop devices: %w", err)
	}
	defer ctl.Close()
	for try := 0; ; try++ {
		n, err := unix.IoctlRetInt(int(ctl.Fd()), unix.LOOP_CTL_GET_FREE)
		if err != nil {
			return nil, fmt.Errorf("find a free loop device: %w", err)
		}
		dev, err := os.OpenFile(fmt.Sprintf("/dev/loop%d", n), flag, 0)
		if err != nil {
			return nil, err
		}
		cfg := unix.LoopConfig{Fd: uint32(backing.Fd())}
		cfg.Info.Offset, cfg.Info.Sizelimit = uint64(off), uint64(size)
		cfg.Info.Flags = loFlags
		err = unix.IoctlLoopConfigure(int(dev.Fd()), &cfg)
		if err == nil {
			return dev, nil
		}
		dev.Close()
		if !errors.Is(err, unix.EBUSY) || try > 20 { // taken by another process meanwhile
			return nil, fmt.Errorf("configure %s: %w", dev.Name(), err)
		}
	}
}

// unmount unmounts dir, retrying while it is busy for up to wait, then
// detaches it lazily so that nothing stays visible; it reports the busy error
// in that case.
func unmount(dir string, wait time.Duration) error {
	deadline := time.Now().Add(wait)
	for {
		err := unix.Unmount(dir, 0)
		switch {
		case err == nil || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT):
			return nil // unmounted, or not a mount point (any more)
		case errors.Is(err, unix.EBUSY) && time.Now().Before(deadline):
			time.Sleep(100 * time.Millisecond)
			continue
		}
		if lerr := unix.Unmount(dir, unix.MNT_DETACH); lerr != nil && !errors.Is(lerr, unix.EINVAL) {
			return fmt.Errorf("unmount %s: %w (lazy: %v)", dir, err, lerr)
		}
		return fmt.Errorf("unmount %s: %w: detached lazily", dir, err)
	}
}

// tool runs a helper program in its own process group, so that a Ctrl-C
// typed at the terminal reaches Hindsight (which then cleans up) and not the
// helper half way through its work; cancelling ctx kills it (what a helper
// that has daemonized mounted is left to Close).
func tool(ctx context.Context, name string, args ...string) error {
	return runTool(ctx, exec.CommandContext(ctx, name, args...))
}

// runTool runs cmd as tool does.
func runTool(ctx context.Context, cmd *exec.Cmd) error {
	// Output goes to a file, not a pipe: a helper that daemonizes (ntfs-3g)
	// keeps a pipe open and Wait would block until it exits.
	out, err := os.CreateTemp("", "hindsight-tool-")
	if err != nil {
		return err
	}
	defer os.Remove(out.Name())
	defer out.Close()
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		msg, _ := os.ReadFile(out.Name())
		return fmt.Errorf("%s: %w: %s", strings.Join(cmd.Args, " "), err, strings.TrimSpace(string(msg)))
	}
	return ctx.Err()
}
