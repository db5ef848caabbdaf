package service

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/hindsight-cdp/hindsight/cdp"
	"github.com/hindsight-cdp/hindsight/cdp/retention"
	"github.com/hindsight-cdp/hindsight/store"
)

// Writer is what the command line asks of the repository's writer: the
// service over its socket (Client) when one runs, else the repository
// opened here (Local). Both run the same code: the service answers with a
// Local of its own.
type Writer interface {
	// Head returns the newest point of target (a disk or a group), made
	// durable, and target's disks.
	Head(ctx context.Context, target string) (Head, error)
	// Mark records bm (Name, Time, Kind, Quiesce, Files, Pinned) on target's timeline.
	Mark(ctx context.Context, target string, bm store.Bookmark) (store.Bookmark, error)
	CreateDisk(ctx context.Context, req DiskRequest) (store.Disk, error)
	CreateGroup(ctx context.Context, name string, disks []string) (store.Group, error)
	JoinGroup(ctx context.Context, group, disk string) (store.Group, error)
	// Import journals the image at req.Path as a new point of req.Disk;
	// progress (may be nil) is told how many bytes were read.
	Import(ctx context.Context, req ImportRequest, progress func(int64)) (cdp.ImportResult, error)
	// SetPolicy records the retention policy of target (a disk or a
	// group; a group's disk names its group); nil removes it, and answers
	// the policy removed (retention.ErrNoPolicy when there was none).
	SetPolicy(ctx context.Context, target string, pol *retention.Policy) (retention.Entry, error)
	// Prune prunes req.Target, or with req.All every timeline that has a
	// policy (a failed one is reported in its Report's Error).
	Prune(ctx context.Context, req PruneRequest) ([]retention.Report, error)
	// Collect frees the content no version references any more; progress
	// (may be nil; not across the socket) is told the bytes of segments
	// processed and their total.
	Collect(ctx context.Context, req GCRequest, progress func(done, total int64)) (store.GCResult, error)
	// Failover makes the replica name (a disk or group) writable at its
	// newest point and records the handover.
	Failover(ctx context.Context, name string) (store.Handover, error)
}

// Head is a target's newest durable point and what the target is.
type Head struct {
	Point store.Point `json:"point"`
	Group bool        `json:"group"`
	Disks []string    `json:"disks"`
}

// HeadRequest asks for a target's Head.
type HeadRequest struct {
	Target string `json:"target"`
}

// MarkRequest records a bookmark.
type MarkRequest struct {
	Target   string         `json:"target"`
	Bookmark store.Bookmark `json:"bookmark"`
}

// DiskRequest creates a disk.
type DiskRequest struct {
	Name       string `json:"name"`
	Size       int64  `json:"size"`
	BlockSize  int    `json:"block_size"`
	Group      string `json:"group,omitempty"`      // joins this group
	Controller string `json:"controller,omitempty"` // the vSphere controller recorded for it
}

// GroupRequest creates a group of empty disks.
type GroupRequest struct {
	Name  string   `json:"name"`
	Disks []string `json:"disks"`
}

// JoinRequest adds an empty disk to a group.
type JoinRequest struct {
	Disk string `json:"disk"`
}

// ImportRequest journals an image file or device as a new point.
type ImportRequest struct {
	Disk string    `json:"disk"`
	Path string    `json:"path"` // absolute: the service opens it
	At   time.Time `json:"at,omitzero"`
}

// Local is a Writer over a repository opened for writing.
type Local struct{ R *store.Repo }

var _ Writer = Local{}

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
	if err := l.writable(target); err != nil {
		return store.Bookmark{}, err
	}
	d, err := cdp.Owner(l.R, target)
	if err != nil {
		return store.Bookmark{}, err
	}
	return l.R.Mark(d, bm)
}

// CreateDisk creates the disk, in its group if asked.
func (l Local) CreateDisk(ctx context.Context, req DiskRequest) (store.Disk, error) {
	if req.Group != "" {
		if _, err := l.R.Group(req.Group); err != nil {
			return store.Disk{}, err // before the disk exists: nothing to undo
		}
	}
	d, err := l.R.CreateDisk(req.Name, req.Size, req.BlockSize)
	if err != nil {
		return store.Disk{}, err
	}
	if req.Group != "" {
		if _, err := l.R.JoinGroup(req.Group, d.Name); err != nil {
			return d, err
		}
		d.Group = req.Group
	}
	if req.Controller != "" {
		if err := l.R.SetController(d.Name, req.Controller); err != nil {
			return d, err
		}
		d.Controller = req.Controller
	}
	return d, nil
}

// CreateGroup creates the group.
func (l Local) CreateGroup(ctx context.Context, name string, disks []string) (store.Group, error) {
	return l.R.CreateGroup(name, disks)
}

// JoinGroup adds disk to group.
func (l Local) JoinGroup(ctx context.Context, group, disk string) (store.Group, error) {
	return l.R.JoinGroup(group, disk)
}

// Import journals the image.
func (l Local) Import(ctx context.Context, req ImportRequest, progress func(int64)) (cdp.ImportResult, error) {
	if !filepath.IsAbs(req.Path) {
		return cdp.ImportResult{}, fmt.Errorf("%w: image path %q must be absolute", ErrBadRequest, req.Path)
	}
	d, err := l.R.Disk(req.Disk)
	if err != nil {
		return cdp.ImportResult{}, err
	}
	if err := writable(d); err != nil {
		return cdp.ImportResult{}, err
	}
	f, err := os.Open(req.Path)
	if err != nil {
		return cdp.ImportResult{}, fmt.Errorf("%w: %w", ErrBadSpec, err)
	}
	defer f.Close()
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return cdp.ImportResult{}, err
	}
	return cdp.Import(ctx, l.R, d, f, size, req.At, progress)
}

// writable refuses target (a disk or group) when it is a replica: a
// bookmark or import of its own would come between the source's steps.
func (l Local) writable(target string) error {
	_, disks, err := l.R.Members(target)
	if err != nil || len(disks) == 0 {
		return err
	}
	return writable(disks[0])
}
