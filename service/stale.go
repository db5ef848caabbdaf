package service

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// tapFSType is the file system type of Hindsight's taps in /proc/mounts
// (fs/tap mounts with the name "hindsight-tap").
const tapFSType = "fuse.hindsight-tap"

// mountAt returns the file system type mounted at dir ("" when dir is not
// a mount point), from the last matching line of /proc/self/mountinfo.
func mountAt(dir string) (string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", err
	}
	defer f.Close()
	fstype := ""
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		// ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [OPTIONAL...] - FSTYPE SOURCE SUPER
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 || unescapeMountinfo(fields[4]) != dir {
			continue
		}
		for i, f := range fields {
			if f == "-" && i+1 < len(fields) {
				fstype = fields[i+1]
				break
			}
		}
	}
	return fstype, sc.Err()
}

// unescapeMountinfo undoes the kernel's octal escapes (\040 for a space).
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var v byte
			ok := true
			for _, c := range s[i+1 : i+4] {
				if c < '0' || c > '7' {
					ok = false
					break
				}
				v = v*8 + byte(c-'0')
			}
			if ok {
				b.WriteByte(v)
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// ErrForeignMount: the directory a tap is to be mounted on holds a mount
// that is not a dead tap of Hindsight's. Use errors.Is.
var ErrForeignMount = errors.New("service: mount point in use")

// clearStaleTap prepares dir for a tap: a dead Hindsight tap there (its
// process was killed, so the kernel answers ENOTCONN) is detached; a live
// one, or any other file system, is left alone and refused.
func clearStaleTap(dir string, logf func(string, ...any)) error {
	fstype, err := mountAt(dir)
	if err != nil {
		return fmt.Errorf("service: read mounts: %w", err)
	}
	if fstype == "" {
		return nil
	}
	if fstype != tapFSType {
		return fmt.Errorf("%w: %s is a mount point of %s, not a Hindsight tap; unmount it or choose another directory", ErrForeignMount, dir, fstype)
	}
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); !errors.Is(err, syscall.ENOTCONN) {
		return fmt.Errorf("%w: a live Hindsight tap is mounted at %s (another service or protect serves it)", ErrForeignMount, dir)
	}
	if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
		return fmt.Errorf("service: detach the dead tap at %s: %w", dir, err)
	}
	logf("detached the dead tap left at %s by a process that was killed", dir)
	return nil
}
