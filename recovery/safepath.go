package recovery

import (
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// ErrEscape: a path resolved to somewhere outside the image's root. The
// kernel's RESOLVE_IN_ROOT makes this impossible; the check stays as a
// second guard.
var ErrEscape = errors.New("recovery: path leaves the image root")

// cleanPath makes p absolute and lexically clean: "../../x" is "/x", as a
// process chrooted into the image would see it.
func cleanPath(p string) string { return path.Clean("/" + p) }

// resolveIn returns the real path, under root, of the image path p as the
// image itself would resolve it: every directory on the way is resolved
// inside root (".." stops at root, an absolute symlink starts again at
// root), and the last component is not followed, so a symlink is itself.
// A missing path is fs.ErrNotExist.
func resolveIn(root, p string) (string, error) {
	clean := cleanPath(p)
	if clean == "/" {
		return root, nil
	}
	dir, base := path.Split(clean)
	rfd, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", &os.PathError{Op: "open", Path: root, Err: err}
	}
	defer unix.Close(rfd)
	// The root as the kernel names it: root may be relative, or go through
	// a symlink, and the check below compares kernel names.
	realRoot, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", rfd))
	if err != nil {
		return "", err
	}
	fd, err := unix.Openat2(rfd, "."+dir, &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV,
	})
	if err != nil {
		if errors.Is(err, unix.ENOTDIR) || errors.Is(err, unix.ELOOP) {
			err = unix.ENOENT
		}
		return "", &os.PathError{Op: "resolve", Path: clean, Err: err}
	}
	defer unix.Close(fd)
	real, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", fd))
	if err != nil {
		return "", err
	}
	rel, ok := strings.CutPrefix(real, realRoot)
	if realRoot == "/" {
		rel, ok = real, true
	}
	if !ok || (rel != "" && !strings.HasPrefix(rel, "/")) {
		return "", fmt.Errorf("%w: %s → %s", ErrEscape, clean, real)
	}
	full := filepath.Join(root, rel, base)
	if _, err := os.Lstat(full); err != nil {
		return "", err
	}
	return full, nil
}
