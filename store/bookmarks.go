package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"
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

// AddBookmark names the instant at of disk d (of its whole group when it
// has one). The instant must lie within the disk's history: at or after its
// first point, at or before now.
func (r *Repo) AddBookmark(d Disk, name string, at time.Time, kind string) (Bookmark, error) {
	return r.Mark(d, Bookmark{Name: name, Time: at, Kind: kind})
}

// Mark records bm (its Name, Time, Kind, Quiesce and Files) as a bookmark of
// d's timeline, at the point that shows bm.Time. Everything journaled so far
// is made durable with it, so a bookmark never names a position a crash could cut.
func (r *Repo) Mark(d Disk, bm Bookmark) (Bookmark, error) {
	if err := r.writable(); err != nil {
		return Bookmark{}, err
	}
	if err := ValidName("bookmark", bm.Name); err != nil {
		return Bookmark{}, err
	}
	switch bm.Kind {
	case KindCrash, KindApplication, KindUser, KindResync:
	default:
		return Bookmark{}, fmt.Errorf("store: bookmark kind %q: use crash, application or user", bm.Kind)
	}
	r.acquire()
	defer r.wmu.Unlock()
	owner := timelineName(d)
	if _, err := r.Bookmark(d, bm.Name); err == nil {
		return Bookmark{}, fmt.Errorf("%w: %q on %q", ErrBookmarkExists, bm.Name, owner)
	} else if !errors.Is(err, ErrUnknownBookmark) {
		return Bookmark{}, err
	}
	now := time.Now().UTC()
	at := bm.Time.UTC()
	if at.After(now) {
		return Bookmark{}, fmt.Errorf("%w: bookmark time %s is in the future", ErrNoPoint, at.Format(time.RFC3339Nano))
	}
	p, err := r.PointAt(d.Timeline, at)
	if err != nil {
		return Bookmark{}, fmt.Errorf("bookmark %q: %q has no point at or before %s: %w", bm.Name, owner, at.Format(time.RFC3339Nano), err)
	}
	bm.Disk, bm.Seq, bm.Time, bm.Created = owner, p.Seq, at, now
	v, _ := json.Marshal(bm)
	b := r.db.NewBatch()
	defer b.Close()
	b.Set(bookmarkKey(d.Timeline, bm.Name), v, nil)
	// Synced with everything journaled: never a position a crash could cut.
	if err := r.commitSynced(b, r.head.Load()); err != nil {
		return Bookmark{}, fmt.Errorf("store: bookmark %q: %w", bm.Name, err)
	}
	if last, ok := r.lastTimes[d.Timeline]; ok && at.After(last) {
		r.lastTimes[d.Timeline] = at // the next point comes after the bookmark
	}
	return bm, r.publish()
}

// timelineName is what owns d's points and bookmarks: its group, else itself.
func timelineName(d Disk) string {
	if d.Group != "" {
		return d.Group
	}
	return d.Name
}

// Bookmark returns the named bookmark of d, or ErrUnknownBookmark.
func (r *Repo) Bookmark(d Disk, name string) (Bookmark, error) {
	v, ok, err := r.get(bookmarkKey(d.Timeline, name))
	if err != nil {
		return Bookmark{}, err
	}
	if !ok || ValidName("bookmark", name) != nil {
		return Bookmark{}, fmt.Errorf("%w: %q on %q", ErrUnknownBookmark, name, timelineName(d))
	}
	var bm Bookmark
	if err := json.Unmarshal(v, &bm); err != nil {
		return Bookmark{}, fmt.Errorf("store: bookmark %q: %v: %w", name, err, ErrCorrupt)
	}
	return bm, nil
}

// Bookmarks lists the bookmarks of d's timeline by name.
func (r *Repo) Bookmarks(d Disk) ([]Bookmark, error) {
	var out []Bookmark
	err := r.scan(bookmarkPrefix(d.Timeline), func(k, v []byte) error {
		var bm Bookmark
		if err := json.Unmarshal(v, &bm); err != nil {
			return fmt.Errorf("store: bookmark %q: %v: %w", k[5:], err, ErrCorrupt)
		}
		out = append(out, bm)
		return nil
	})
	return out, err
}
