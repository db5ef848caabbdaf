package cdp

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/hindsight-cdp/hindsight/cdp/timespec"
	"github.com/hindsight-cdp/hindsight/store"
)

// Resync brings the journal of disk d in line with its backing disk before
// protection starts: blocks whose hashes differ from the journal's newest
// state (writes that reached the disk but not the journal before a crash, or
// changes made while it was not protected) are journaled as one point, and
// that point is bookmarked "resync-<time>" of kind resync. It returns the
// bookmark, or nil when nothing differed.
func Resync(ctx context.Context, r *store.Repo, d store.Disk, backing io.ReaderAt, size int64, progress func(int64)) (*store.Bookmark, ImportResult, error) {
	res, err := importImage(ctx, r, d, backing, size, time.Time{}, progress, false)
	if err != nil {
		return nil, res, fmt.Errorf("resync %q with its backing disk: %w", d.Name, err)
	}
	if res.Changed == 0 {
		return nil, res, nil
	}
	bm, err := r.AddBookmark(d, "resync-"+timespec.Format(res.Point.Time), res.Point.Time, store.KindResync)
	if err != nil {
		return nil, res, err
	}
	return &bm, res, nil
}
