package fuseuring

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// ErrUnavailable is returned, wrapped, when FUSE over io_uring cannot be
// used here: a kernel without it, the kernel switch off, io_uring disabled,
// or not root. Test with errors.Is.
var ErrUnavailable = errors.New("fuseuring: FUSE over io_uring unavailable")

// ErrSwitchOff is returned by Available when the kernel has FUSE over
// io_uring but its switch is off; Enable turns it on. It wraps
// ErrUnavailable. Test with errors.Is.
var ErrSwitchOff = fmt.Errorf("%w: %s is off", ErrUnavailable, SwitchPath)

// SwitchPath is the kernel's switch for FUSE over io_uring (Linux 6.14 and
// later, CONFIG_FUSE_IO_URING). It is read when a mount starts: a mount made
// while it is off never uses io_uring.
const SwitchPath = "/sys/module/fuse/parameters/enable_uring"

// Available returns nil when Mount can serve over io_uring, or an error
// wrapping ErrUnavailable that says why not.
func Available() error {
	b, err := os.ReadFile(SwitchPath)
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("%w: kernel without CONFIG_FUSE_IO_URING (needs Linux 6.14 or later)", ErrUnavailable)
	} else if err != nil {
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	if os.Geteuid() != 0 {
		return fmt.Errorf("%w: mounting needs root", ErrUnavailable)
	}
	if strings.TrimSpace(string(b)) != "Y" {
		return ErrSwitchOff
	}
	r, err := newRing(1, 0)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrUnavailable, err) // e.g. kernel.io_uring_disabled, seccomp
	}
	r.close()
	return nil
}

// Enable turns the kernel switch on (root only). It affects every FUSE
// mount made afterwards on this machine, but only servers that ask for
// io_uring use it: the others go on over /dev/fuse as before.
func Enable() error {
	if err := os.WriteFile(SwitchPath, []byte("Y"), 0); err != nil {
		return fmt.Errorf("%w: turn on %s: %w", ErrUnavailable, SwitchPath, err)
	}
	return nil
}

// mountFD opens /dev/fuse and mounts it at dir, the way go-fuse's direct
// mount does, and returns the device fd and the mount's device number.
func mountFD(dir string, o *fuse.MountOptions, flags uintptr) (int, uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		return -1, 0, fmt.Errorf("mount %s: %w", dir, err)
	}
	fd, err := unix.Open("/dev/fuse", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, 0, fmt.Errorf("mount %s: %w", dir, err)
	}
	data := []string{
		fmt.Sprintf("fd=%d", fd),
		fmt.Sprintf("rootmode=%o", st.Mode&unix.S_IFMT),
		fmt.Sprintf("user_id=%d", os.Geteuid()),
		fmt.Sprintf("group_id=%d", os.Getegid()),
		fmt.Sprintf("max_read=%d", o.MaxWrite),
	}
	data = append(data, o.Options...)
	if o.AllowOther {
		data = append(data, "allow_other")
	}
	source := o.FsName
	if source == "" {
		source = o.Name
	}
	if source == "" {
		source = "fuseuring" // the kernel refuses an empty source
	}
	fstype := "fuse"
	if o.Name != "" {
		fstype += "." + o.Name
	}
	if flags == 0 {
		flags = unix.MS_NOSUID | unix.MS_NODEV
	}
	if err := unix.Mount(source, dir, fstype, flags, strings.Join(data, ",")); err != nil {
		unix.Close(fd)
		return -1, 0, fmt.Errorf("mount %s: %w", dir, err)
	}
	// The new mount's device, without a stat through it (nothing can
	// answer before INIT): the last mount at dir in mountinfo.
	dev, err := mountDev(dir)
	if err != nil {
		_ = unix.Unmount(dir, unix.MNT_DETACH)
		unix.Close(fd)
		return -1, 0, fmt.Errorf("mount %s: %w", dir, err)
	}
	return fd, dev, nil
}

// mountDev returns the device number of the topmost mount at dir.
func mountDev(dir string) (uint64, error) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return 0, err
	}
	var dev uint64
	found := false
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) <= 4 || unescapeMountinfo(f[4]) != dir {
			continue
		}
		var major, minor uint32
		if _, err := fmt.Sscanf(f[2], "%d:%d", &major, &minor); err != nil {
			return 0, fmt.Errorf("mountinfo: %q", f[2])
		}
		dev, found = unix.Mkdev(major, minor), true
	}
	if !found {
		return 0, fmt.Errorf("not in mountinfo after mounting")
	}
	return dev, nil
}

// unescapeMountinfo undoes the octal escapes (\040 for a space) of a path
// in /proc/self/mountinfo.
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, "\\") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
