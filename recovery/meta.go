package recovery

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

type unixStat = syscall.Stat_t

// meta gives the restored entry src's owner, mode, xattrs and times: either
// the open fd (files, directories) or name in the directory dirfd, not
// followed (symlinks, device nodes). What the target filesystem does not
// support (xattrs on a filesystem without them) is skipped. The mode is
// applied after the owner (a chown clears setuid) and is the image's less
// what restoredMode strips; file capabilities are not copied unless
// c.special.
func (c *copier) meta(fd, dirfd int, name, rel, src string, st *unixStat) error {
	xattrs, _ := listXattrs(src) // a source without xattr support has none to copy
	caps := false
	if !c.special {
		for i, n := range xattrs {
			if n == capXattr {
				caps = true
				xattrs = append(xattrs[:i:i], xattrs[i+1:]...)
				break
			}
		}
	}
	mode := c.restoredMode(rel, st.Mode, caps)
	var p string // a path that reaches the entry itself, not through a symlink
	if fd >= 0 {
		p = fmt.Sprintf("/proc/self/fd/%d", fd)
		if err := unix.Fchown(fd, int(st.Uid), int(st.Gid)); err != nil && !errors.Is(err, unix.EPERM) {
			return &os.PathError{Op: "chown", Path: src, Err: err}
		}
		if err := unix.Fchmod(fd, mode); err != nil {
			return &os.PathError{Op: "chmod", Path: src, Err: err}
		}
	} else {
		p = fmt.Sprintf("/proc/self/fd/%d/%s", dirfd, name)
		if err := unix.Fchownat(dirfd, name, int(st.Uid), int(st.Gid), unix.AT_SYMLINK_NOFOLLOW); err != nil && !errors.Is(err, unix.EPERM) {
			return &os.PathError{Op: "chown", Path: src, Err: err}
		}
		if st.Mode&unix.S_IFMT != unix.S_IFLNK {
			if err := unix.Fchmodat(dirfd, name, mode, 0); err != nil {
				return &os.PathError{Op: "chmod", Path: src, Err: err}
			}
		}
	}
	set := func(n string, v []byte) error { return unix.Lsetxattr(p, n, v, 0) }
	if fd >= 0 { // lsetxattr would act on the /proc link itself
		set = func(n string, v []byte) error { return unix.Fsetxattr(fd, n, v, 0) }
	}
	if err := copyXattrs(src, xattrs, set); err != nil {
		return err
	}
	ts := []unix.Timespec{unix.NsecToTimespec(st.Atim.Nano()), unix.NsecToTimespec(st.Mtim.Nano())}
	flags := 0
	if fd < 0 {
		flags = unix.AT_SYMLINK_NOFOLLOW
	}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, flags); err != nil {
		return &os.PathError{Op: "set times", Path: src, Err: err}
	}
	return nil
}

// copyXattrs copies the extended attributes names of src (not followed)
// with set.
func copyXattrs(src string, names []string, set func(name string, value []byte) error) error {
	buf := make([]byte, 64<<10)
	for _, n := range names {
		sz, err := unix.Lgetxattr(src, n, buf)
		if err != nil {
			continue
		}
		err = set(n, buf[:sz])
		if err != nil && !errors.Is(err, unix.ENOTSUP) && !errors.Is(err, unix.EPERM) {
			return &os.PathError{Op: "setxattr " + n, Path: src, Err: err}
		}
	}
	return nil
}

func listXattrs(p string) ([]string, error) {
	sz, err := unix.Llistxattr(p, nil)
	if err != nil || sz == 0 {
		return nil, err
	}
	buf := make([]byte, sz)
	if sz, err = unix.Llistxattr(p, buf); err != nil {
		return nil, err
	}
	var out []string
	for _, n := range strings.Split(string(buf[:sz]), "\x00") {
		if n != "" {
			out = append(out, n)
		}
	}
	return out, nil
}
