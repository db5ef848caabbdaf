package nbd

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// maxSocketPath is the longest path a Unix socket can be bound to on Linux
// (sun_path is 108 bytes, NUL included).
const maxSocketPath = 107

// ListenUnix listens on a Unix socket at path that only its owner may open:
// the socket file is mode 0600 (connecting needs write permission). A
// socket already there is removed when nothing answers on it; any other
// file there is an error. The listener removes the socket when closed.
//
// Between bind and chmod the socket has the mode the umask gives it;
// Serve's peer-credential check (see Options.AllowUID) covers that moment
// and any socket whose mode or directory lets others in.
func ListenUnix(path string) (net.Listener, error) {
	if len(path) > maxSocketPath {
		return nil, fmt.Errorf("nbd: socket path %s is %d bytes, longer than the %d a Unix socket allows: give a shorter --listen unix:PATH", path, len(path), maxSocketPath)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode().Type() != fs.ModeSocket {
			return nil, fmt.Errorf("nbd: %s exists and is not a socket; remove it or choose another path", path)
		}
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("nbd: %s is in use by another server", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("nbd: remove stale socket: %w", err)
		}
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("nbd: listen: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return nil, fmt.Errorf("nbd: %w", err)
	}
	return l, nil
}

// errNoCred: the connection is a Unix socket whose peer could not be told.
var errNoCred = errors.New("peer credentials unavailable")

// peerCred returns the credentials the process at the other end of a Unix
// socket connection had when it connected (SO_PEERCRED), and nil for any
// other kind of connection.
func peerCred(nc net.Conn) (*unix.Ucred, error) {
	uc, isUnix := nc.(*net.UnixConn)
	if !isUnix {
		return nil, nil
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errNoCred, err)
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return nil, fmt.Errorf("%w: %w", errNoCred, err)
	}
	if cerr != nil {
		return nil, fmt.Errorf("%w: %w", errNoCred, cerr)
	}
	return cred, nil
}

// ownerOrRoot is the default Options.AllowUID: the server's own effective
// uid (the socket's owner) and root.
func ownerOrRoot(euid int) func(uint32) bool {
	return func(uid uint32) bool { return uid == 0 || int64(uid) == int64(euid) }
}
