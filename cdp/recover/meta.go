package recover

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
// support (xattrs on a filesystem without them) is skipped.
func (c *copier) meta(fd, dirfd int, name, src string, st *unixStat) error {
	var p string // a path that reaches the entry itself, not through a symlink
	if fd >= 0 {
		p = fmt.Sprintf("/proc/self/fd/%d", fd)
		if err := unix.Fchown(fd, int(st.Uid), int(st.Gid)); err != nil && !errors.Is(err, unix.EPERM) {
			return &os.PathError{Op: "chown", Path: src, Err: err}
		}
		if err := unix.Fchmod(fd, st.Mode&0o7777); err != nil {
			return &os.PathError{Op: "chmod", Path: src, Err: err}
		}
	} else {
		p = fmt.Sprintf("/proc/self/fd/%d/%s", dirfd, name)
		if err := unix.Fchownat(dirfd, name, int(st.Uid), int(st.Gid), unix.AT_SYMLINK_NOFOLLOW); err != nil && !errors.Is(err, unix.EPERM) {
			return &os.PathError{Op: "chown", Path: src, Err: err}
		}
		if st.Mode&unix.S_IFMT != unix.S_IFLNK {
			if err := unix.Fchmodat(dirfd, name, st.Mode&0o7777, 0); err != nil {
				return &os.PathError{Op: "chmod", Path: src, Err: err}
			}
		}
	}
	set := func(n string, v []byte) error { return unix.Lsetxattr(p, n, v, 0) }
	if fd >= 0 { // lsetxattr would act on the /proc link itself
		set = func(n string, v []byte) error { return unix.Fsetxattr(fd, n, v, 0) }
	}
	if err := copyXattrs(src, set); err != nil {
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

// copyXattrs copies the extended attributes of src (not followed) with set.
func copyXattrs(src string, set func(name string, value []byte) error) error {
	names, err := listXattrs(src)
	if err != nil || len(names) == 0 {
		return nil // a source without xattr support has none to copy
	}
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
