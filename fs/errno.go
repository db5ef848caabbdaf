package fs

import (
	"context"
	"errors"
	"os"
	"syscall"

	"github.com/hindsight-cdp/hindsight/cdp/timespec"
	"github.com/hindsight-cdp/hindsight/store"
)

// toErrno converts an error of the Source, the image readers or timespec to
// the errno the kernel gets. It is the only place errors become errnos.
//
// An interrupted request answers EINTR (go-fuse cancels the request's ctx on a
// FUSE_INTERRUPT); a wrapped context.Canceled must never reach the kernel as
// anything else. Names that do not resolve are ENOENT; a write refused
// because the repository's filesystem is full is ENOSPC; anything unexpected
// is EIO.
func toErrno(err error) syscall.Errno {
	var errno syscall.Errno
	switch {
	case err == nil:
		return 0
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return syscall.EINTR
	case errors.Is(err, store.ErrCorrupt): // damage is EIO, whatever it wraps
		return syscall.EIO
	case errors.Is(err, store.ErrNoSpace): // a write refused at the repository's reserve
		return syscall.ENOSPC
	case errors.Is(err, store.ErrUnknownDisk),
		errors.Is(err, store.ErrNoPoint),
		errors.Is(err, store.ErrUnknownBookmark),
		errors.Is(err, timespec.ErrBadTime),
		errors.Is(err, os.ErrNotExist):
		return syscall.ENOENT
	case errors.As(err, &errno):
		return errno
	default:
		return syscall.EIO
	}
}

// errno is toErrno that also logs what the kernel will only see as EIO, with
// the operation that failed, since the error itself is lost on the way.
func (t *tree) errno(op string, err error) syscall.Errno {
	e := toErrno(err)
	if e == syscall.EIO {
		t.logf("hindsight fs: %s: %v", op, err)
	}
	return e
}
