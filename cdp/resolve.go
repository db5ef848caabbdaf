package cdp

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/hindsight-cdp/hindsight/cdp/timespec"
	"github.com/hindsight-cdp/hindsight/store"
)

// ErrFuture: the requested instant is after now.
var ErrFuture = errors.New("cdp: instant is in the future")

// PointReader is what resolving an instant reads.
type PointReader interface {
	LastPoint(tl uint32) (store.Point, error)
	PointAt(tl uint32, t time.Time) (store.Point, error)
	Bookmark(d store.Disk, name string) (store.Bookmark, error)
}

// Instant is an instant a user asked for and the point that shows it.
type Instant struct {
	Requested time.Time       `json:"requested"`
	Point     store.Point     `json:"point"`
	Bookmark  *store.Bookmark `json:"bookmark,omitempty"`
}

// Resolve turns spec ("latest", "bookmark:NAME", or any timespec form) into
// the point of disk d that shows it.
func Resolve(r PointReader, d store.Disk, spec string, now time.Time) (Instant, error) {
	switch {
	case spec == "latest" || spec == "":
		p, err := r.LastPoint(d.Timeline)
		if err != nil {
			return Instant{}, fmt.Errorf("disk %q has no point yet (import an image first): %w", d.Name, err)
		}
		return Instant{Requested: p.Time, Point: p}, nil
	case strings.HasPrefix(spec, "bookmark:"):
		bm, err := r.Bookmark(d, strings.TrimPrefix(spec, "bookmark:"))
		if err != nil {
			return Instant{}, err
		}
		p, err := r.PointAt(d.Timeline, bm.Time)
		if err != nil {
			return Instant{}, fmt.Errorf("bookmark %q of disk %q: %w", bm.Name, d.Name, err)
		}
		return Instant{Requested: bm.Time, Point: p, Bookmark: &bm}, nil
	}
	t, err := timespec.Parse(spec, now)
	if err != nil {
		return Instant{}, err
	}
	return ResolveTime(r, d, t, now)
}

// ResolveTime finds the point of disk d that shows instant t.
func ResolveTime(r PointReader, d store.Disk, t, now time.Time) (Instant, error) {
	if t.After(now) {
		return Instant{}, fmt.Errorf("%w: %s (now is %s)", ErrFuture, t.Format(time.RFC3339Nano), now.UTC().Format(time.RFC3339Nano))
	}
	p, err := r.PointAt(d.Timeline, t)
	if err != nil {
		return Instant{}, fmt.Errorf("disk %q has no point at or before %s: %w", d.Name, t.Format(time.RFC3339Nano), err)
	}
	return Instant{Requested: t, Point: p}, nil
}

// Owner returns the Disk-shaped handle of name, a disk or a group, by which
// its timeline's points and bookmarks are looked up.
func Owner(r *store.Repo, name string) (store.Disk, error) {
	d, err := r.Disk(name)
	if !errors.Is(err, store.ErrUnknownDisk) {
		return d, err
	}
	g, gerr := r.Group(name)
	if errors.Is(gerr, store.ErrUnknownGroup) {
		return store.Disk{}, fmt.Errorf("%w: %q is neither a disk nor a group (list them with 'hindsight disk list' and 'hindsight group list')", store.ErrUnknownDisk, name)
	}
	return g.Handle(), gerr
}
