package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// Bookmark kinds.
const (
	KindCrash       = "crash"
	KindApplication = "application"
	KindUser        = "user"
	// KindResync marks the point that brought the journal back in line with
	// a backing disk after a crash (see cdp.Resync).
	KindResync = "resync"
)

// AddBookmark names the instant at of disk d. The instant must lie within the
// disk's history: at or after its first point, at or before now.
func (r *Repo) AddBookmark(d Disk, name string, at time.Time, kind string) (Bookmark, error) {
	if err := r.writable(); err != nil {
		return Bookmark{}, err
	}
	if err := ValidName("bookmark", name); err != nil {
		return Bookmark{}, err
	}
	switch kind {
	case KindCrash, KindApplication, KindUser, KindResync:
	default:
		return Bookmark{}, fmt.Errorf("store: bookmark kind %q: use crash, application or user", kind)
	}
	r.wmu.Lock()
	defer r.wmu.Unlock()
	if _, err := r.Bookmark(d, name); err == nil {
		return Bookmark{}, fmt.Errorf("%w: %q on disk %q", ErrBookmarkExists, name, d.Name)
	} else if !errors.Is(err, ErrUnknownBookmark) {
		return Bookmark{}, err
	}
	now := time.Now().UTC()
	if at.After(now) {
		return Bookmark{}, fmt.Errorf("%w: bookmark time %s is in the future", ErrNoPoint, at.UTC().Format(time.RFC3339Nano))
	}
	p, err := r.PointAt(d.Timeline, at)
	if err != nil {
		return Bookmark{}, fmt.Errorf("bookmark %q: disk %q has no point at or before %s: %w", name, d.Name, at.UTC().Format(time.RFC3339Nano), err)
	}
	bm := Bookmark{Name: name, Disk: d.Name, Seq: p.Seq, Time: at.UTC(), Kind: kind, Created: now}
	v, _ := json.Marshal(bm)
	if err := r.db.Set(bookmarkKey(d.ID, name), v, pebble.Sync); err != nil {
		return Bookmark{}, fmt.Errorf("store: bookmark %q: %w", name, err)
	}
	return bm, r.publish()
}

// Bookmark returns the named bookmark of d, or ErrUnknownBookmark.
func (r *Repo) Bookmark(d Disk, name string) (Bookmark, error) {
	v, ok, err := r.get(bookmarkKey(d.ID, name))
	if err != nil {
		return Bookmark{}, err
	}
	if !ok || ValidName("bookmark", name) != nil {
		return Bookmark{}, fmt.Errorf("%w: %q on disk %q", ErrUnknownBookmark, name, d.Name)
	}
	var bm Bookmark
	if err := json.Unmarshal(v, &bm); err != nil {
		return Bookmark{}, fmt.Errorf("store: bookmark %q: %v: %w", name, err, ErrCorrupt)
	}
	return bm, nil
}

// Bookmarks lists the bookmarks of d by name.
func (r *Repo) Bookmarks(d Disk) ([]Bookmark, error) {
	var out []Bookmark
	err := r.scan(bookmarkPrefix(d.ID), func(k, v []byte) error {
		var bm Bookmark
		if err := json.Unmarshal(v, &bm); err != nil {
			return fmt.Errorf("store: bookmark %q: %v: %w", k[5:], err, ErrCorrupt)
		}
		out = append(out, bm)
		return nil
	})
	return out, err
}
