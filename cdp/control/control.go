// Package control lets other processes ask the one writer of a repository
// (protect, serve-nbd) to record bookmarks while it journals: the writer
// holds pebble, so `hindsight bookmark` beside it cannot open the journal
// itself. The writer listens on R/run/control.sock, a Unix socket only its
// owner may open (mode 0600 in a 0700 directory); a request is one JSON line
// and so is its answer. The server reads at most MaxRequest bytes of a
// request, waits 10 s for it, and serves 32 connections at once (one more is
// answered ErrBusy): a stuck or hostile client cannot exhaust the writer.
//
// Journal is the consumer's view; Local serves it from an open repository
// (no writer running, or inside the writer), Client from the writer's socket.
package control

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"

	"github.com/hindsight-cdp/hindsight/cdp"
	"github.com/hindsight-cdp/hindsight/store"
)

// ErrNoWriter: no writer process listens on the repository's control socket.
var ErrNoWriter = errors.New("control: no writer process is running on the repository")

// Journal is what a bookmark needs of the journal: the newest point of a
// target's timeline (the instant a quiesced bookmark names), and the mark.
type Journal interface {
	// Head returns the newest point of target (a disk or a group), made
	// durable, and target's disks.
	Head(ctx context.Context, target string) (Head, error)
	// Mark records bm (Name, Time, Kind, Quiesce, Files) on target's timeline.
	Mark(ctx context.Context, target string, bm store.Bookmark) (store.Bookmark, error)
}

// Head is a target's newest durable point and what the target is.
type Head struct {
	Point store.Point `json:"point"`
	Group bool        `json:"group"`
	Disks []string    `json:"disks"`
}

// SocketPath is the control socket of the repository in dir.
func SocketPath(dir string) string { return filepath.Join(dir, "run", "control.sock") }

// Local is a Journal over a repository opened for writing.
type Local struct{ R *store.Repo }

// Head syncs the journal and returns target's newest point.
func (l Local) Head(ctx context.Context, target string) (Head, error) {
	tl, disks, err := l.R.Members(target)
	if err != nil {
		return Head{}, err
	}
	if err := l.R.Sync(); err != nil {
		return Head{}, err
	}
	p, err := l.R.LastPoint(tl)
	if err != nil {
		return Head{}, fmt.Errorf("%q has no point yet: %w", target, err)
	}
	h := Head{Point: p, Disks: []string{}}
	for _, d := range disks {
		h.Disks = append(h.Disks, d.Name)
		h.Group = d.Group == target
	}
	return h, nil
}

// Mark records the bookmark.
func (l Local) Mark(ctx context.Context, target string, bm store.Bookmark) (store.Bookmark, error) {
	d, err := cdp.Owner(l.R, target)
	if err != nil {
		return store.Bookmark{}, err
	}
	return l.R.Mark(d, bm)
}
