package fs

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/hindsight-cdp/hindsight/fs/fusesrv"
)

// Options tune a mount. The zero value is a private mount listing 100 points.
type Options struct {
	// AllowOther lets every user read the tree: it mounts with allow_other
	// and default_permissions (the kernel checks the modes) and gives
	// directories 0555 and files 0444 instead of 0500 and 0400.
	AllowOther bool
	// Debug logs every FUSE request and reply through Logf, prefixed "fuse: ".
	Debug bool
	// ListPoints is how many of the newest points a disk directory lists
	// (bookmarks are always listed); 0 means 100.
	ListPoints int
	// Now is the clock that decides what is in the future and what relative
	// names mean; nil means time.Now.
	Now func() time.Time
	// Logf receives what cannot be returned: I/O errors the kernel sees as
	// EIO, a failure to raise read-ahead. nil means log.Printf.
	Logf func(format string, args ...any)
}

// Server is a mounted tree.
type Server = fusesrv.Server

// Mount serves src's history read-only at dir, which must be an existing
// directory; it creates nothing outside it. The tree stays mounted until
// Unmount or until ctx is done.
func Mount(ctx context.Context, dir string, src Source, opt Options) (*Server, error) {
	if src == nil {
		return nil, errors.New("hindsight fs: mount: nil Source")
	}
	t := &tree{
		src:        src,
		listPoints: opt.ListPoints,
		now:        opt.Now,
		logf:       opt.Logf,
		uid:        uint32(os.Getuid()),
		gid:        uint32(os.Getgid()),
		dirMode:    0o500,
		fileMode:   0o400,
		mounted:    time.Now(),
	}
	if t.listPoints <= 0 {
		t.listPoints = 100
	}
	if t.now == nil {
		t.now = time.Now
	}
	if t.logf == nil {
		t.logf = log.Printf
	}
	if opt.AllowOther {
		t.dirMode, t.fileMode = 0o555, 0o444
	}
	srv, err := fusesrv.Mount(ctx, dir, &rootNode{t: t}, fusesrv.Config{
		Name:       "hindsight",
		ReadOnly:   true,
		AllowOther: opt.AllowOther,
		Debug:      opt.Debug,
		Logf:       t.logf,
	})
	if err != nil {
		return nil, fmt.Errorf("hindsight fs: %w", err)
	}
	return srv, nil
}
