package cdp

import (
	"context"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/hindsight-cdp/hindsight/store"
	"golang.org/x/sys/unix"
)

// Live is a read-only repository that follows the writer: every listing call
// first moves to the newest published view. It is safe for concurrent use.
type Live struct {
	dir   string
	cache *pebble.Cache
	logf  func(string, ...any)

	mu      sync.Mutex
	cur     *handle
	pending chan struct{}  // closed when the refresh under way ends; nil if none
	closing sync.WaitGroup // views being closed in the background

	// published is the newest view generation the watcher saw, so that a
	// lookup learns of new views without a syscall (0: unknown, ask).
	published atomic.Uint64
	watch     *os.File // inotify on the views directory; nil: none
}

// How a call wants the view it reads.
type freshness int

const (
	// current: the view at hand (reads of an image addressed by position).
	current freshness = iota
	// eventually: the view at hand, and a move to a newer one started in the
	// background (listings that may lag by one publish: disks, bookmarks).
	eventually
	// newest: wait for the newest published view (latest, points, new instants).
	newest
)

// handle is one open view, closed when it is superseded and unused.
type handle struct {
	repo    *store.Repo
	closing *sync.WaitGroup
	mu      sync.Mutex
	refs    int // 1 for being current, plus one per reader
}

// release drops a reference. The last one closes the view in the
// background: closing pebble and removing the view's private links takes
// milliseconds (tens while the writer syncs), which no lookup should wait for.
func (h *handle) release() {
	h.mu.Lock()
	h.refs--
	last := h.refs == 0
	h.mu.Unlock()
	if last {
		h.closing.Go(func() { h.repo.Close() })
	}
}

// OpenLive opens the newest view of the repository in dir.
func OpenLive(dir string, logf func(string, ...any)) (*Live, error) {
	l := &Live{dir: dir, cache: pebble.NewCache(256 << 20), logf: logf}
	r, err := store.Open(dir, store.Options{ReadOnly: true, Cache: l.cache, Logf: logf})
	if err != nil {
		l.cache.Unref()
		return nil, err
	}
	if err := r.Warm(); err != nil && logf != nil {
		logf("cdp: warm view: %v", err)
	}
	l.cur = &handle{repo: r, closing: &l.closing, refs: 1}
	l.watchViews()
	return l, nil
}

// watchViews follows the publication of views with inotify: a lookup then
// compares two numbers instead of listing the views directory, which can
// wait behind the writer's directory changes while the disk syncs. Without
// inotify, published stays 0 and lookups list the directory.
func (l *Live) watchViews() {
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return
	}
	if _, err := unix.InotifyAddWatch(fd, store.ViewsDir(l.dir), unix.IN_MOVED_TO|unix.IN_CREATE); err != nil {
		unix.Close(fd)
		return
	}
	l.watch = os.NewFile(uintptr(fd), "inotify")
	l.notePublished()
	go func() {
		buf := make([]byte, 4096)
		for {
			if _, err := l.watch.Read(buf); err != nil {
				return // closed
			}
			l.notePublished()
		}
	}()
}

// notePublished records the newest published view.
func (l *Live) notePublished() {
	if gen, err := store.NewestView(l.dir); err == nil {
		l.published.Store(gen)
	}
}

// Close releases the view; images handed out stop working.
func (l *Live) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	for l.pending != nil { // the refresh uses the cache released below
		ch := l.pending
		l.mu.Unlock()
		<-ch
		l.mu.Lock()
	}
	if l.watch != nil {
		l.watch.Close()
		l.watch = nil
	}
	if l.cur != nil {
		l.cur.release()
		l.cur = nil
		l.closing.Wait()
		l.cache.Unref()
	}
	return nil
}

// acquire returns a view as fresh as f asks, with a reference the caller releases.
func (l *Live) acquire(f freshness) (*handle, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if f != current {
		if ch := l.refresh(f == newest); ch != nil && f == newest {
			l.mu.Unlock()
			<-ch
			l.mu.Lock()
		}
	}
	if l.cur == nil {
		return nil, fmt.Errorf("cdp: live view of %s is closed", l.dir)
	}
	l.cur.mu.Lock()
	l.cur.refs++
	l.cur.mu.Unlock()
	return l.cur, nil
}

// refresh starts moving to the newest published view, unless it is the
// current one, and returns a channel closed when the move ends (nil if there
// is nothing to do). Opening a view replays its log and opens its tables,
// which takes milliseconds, so it runs in the background and lookups that
// can go on with the view at hand do. With ask, the views directory is
// listed rather than trusted to the watcher. Called with l.mu held.
func (l *Live) refresh(ask bool) chan struct{} {
	if l.pending != nil {
		return l.pending
	}
	if l.cur == nil {
		return nil
	}
	gen := l.published.Load()
	if ask || gen == 0 {
		var err error
		if gen, err = store.NewestView(l.dir); err != nil {
			return nil
		}
	}
	if gen <= l.cur.repo.Generation() {
		return nil
	}
	ch := make(chan struct{})
	l.pending = ch
	go func() {
		r, err := store.Open(l.dir, store.Options{ReadOnly: true, Cache: l.cache, Logf: l.logf})
		if err == nil {
			if werr := r.Warm(); werr != nil && l.logf != nil {
				l.logf("cdp: warm view %d: %v", gen, werr)
			}
		}
		var old *handle
		l.mu.Lock()
		switch {
		case err != nil:
			// Keep serving the view we have; the next call tries again.
			if l.logf != nil {
				l.logf("cdp: could not move to view %d: %v", gen, err)
			}
		case l.cur == nil || r.Generation() <= l.cur.repo.Generation():
			r.Close()
		default:
			old = l.cur
			l.cur = &handle{repo: r, closing: &l.closing, refs: 1}
		}
		// Released before pending clears, so that Close, which waits for
		// pending, never waits on l.closing while this adds to it.
		if old != nil {
			old.release()
		}
		l.pending = nil
		close(ch)
		l.mu.Unlock()
	}()
	return ch
}

// with runs fn on a view as fresh as f asks.
func (l *Live) with(f freshness, fn func(r *store.Repo) error) error {
	h, err := l.acquire(f)
	if err != nil {
		return err
	}
	defer h.release()
	return fn(h.repo)
}

// Disks lists the repository's disks.
func (l *Live) Disks(ctx context.Context) (ds []store.Disk, err error) {
	err = l.with(eventually, func(r *store.Repo) error { ds, err = r.Disks(); return err })
	return ds, err
}

// Disk returns one disk.
func (l *Live) Disk(ctx context.Context, name string) (d store.Disk, err error) {
	err = l.with(eventually, func(r *store.Repo) error { d, err = r.Disk(name); return err })
	return d, err
}

// Groups lists the repository's consistency groups.
func (l *Live) Groups(ctx context.Context) (gs []store.Group, err error) {
	err = l.with(eventually, func(r *store.Repo) error { gs, err = r.Groups(); return err })
	return gs, err
}

// Points returns the newest limit points of the timeline of name (a disk
// or a group), oldest first.
func (l *Live) Points(ctx context.Context, name string, limit int) (ps []store.Point, err error) {
	err = l.with(newest, func(r *store.Repo) error {
		d, err := Owner(r, name)
		if err != nil {
			return err
		}
		ps, err = r.Points(d.Timeline, time.Unix(0, 0), time.Unix(0, 1<<63-1), limit)
		return err
	})
	return ps, err
}

// Skim is store.Repo.Skim on the timeline of name.
func (l *Live) Skim(ctx context.Context, name string, from, to time.Time, next func(time.Time) time.Time, limit int) (ps []store.Point, err error) {
	err = l.with(newest, func(r *store.Repo) error {
		d, err := Owner(r, name)
		if err != nil {
			return err
		}
		ps, err = r.Skim(d.Timeline, from, to, next, limit)
		return err
	})
	return ps, err
}

// Bookmarks lists the bookmarks of name's timeline.
func (l *Live) Bookmarks(ctx context.Context, name string) (bs []store.Bookmark, err error) {
	err = l.with(eventually, func(r *store.Repo) error {
		d, err := Owner(r, name)
		if err != nil {
			return err
		}
		bs, err = r.Bookmarks(d)
		return err
	})
	return bs, err
}

// Resolve returns the newest point of name's timeline at or before t. An
// instant no newer than the current view's newest point resolves the same in
// every later view (point times only grow), so it is answered without moving
// to a newer view: opening one replays its log, which would stall the lookup.
func (l *Live) Resolve(ctx context.Context, name string, t time.Time) (p store.Point, err error) {
	h, err := l.acquire(current)
	if err != nil {
		return store.Point{}, err
	}
	if d, err := Owner(h.repo, name); err == nil {
		if last, err := h.repo.LastPoint(d.Timeline); err == nil && !t.After(last.Time) {
			p, err = h.repo.PointAt(d.Timeline, t)
			h.release()
			return p, err
		}
	}
	h.release()
	err = l.with(newest, func(r *store.Repo) error {
		d, err := Owner(r, name)
		if err != nil {
			return err
		}
		p, err = r.PointAt(d.Timeline, t)
		return err
	})
	return p, err
}

// Latest returns the newest point of name's timeline.
func (l *Live) Latest(ctx context.Context, name string) (p store.Point, err error) {
	err = l.with(newest, func(r *store.Repo) error {
		d, err := Owner(r, name)
		if err != nil {
			return err
		}
		p, err = r.LastPoint(d.Timeline)
		return err
	})
	return p, err
}

// Image returns the disk at journal position seq. Each read runs on the
// current view, which is never older than the one that showed seq.
func (l *Live) Image(ctx context.Context, disk string, seq uint64) (io.ReaderAt, error) {
	var d store.Disk
	lookup := func(r *store.Repo) error {
		var err error
		if d, err = r.Disk(disk); err != nil {
			return err
		}
		if seq > r.Head() {
			return fmt.Errorf("cdp: position %d of disk %q is not published yet", seq, disk)
		}
		return nil
	}
	// The view at hand shows every position resolved so far; a position
	// from a newer view waits for it.
	if err := l.with(current, lookup); err != nil {
		if err := l.with(newest, lookup); err != nil {
			return nil, err
		}
	}
	return &liveImage{l: l, d: d, seq: seq}, nil
}

type liveImage struct {
	l   *Live
	d   store.Disk
	seq uint64
}

func (im *liveImage) ReadAt(p []byte, off int64) (int, error) {
	h, err := im.l.acquire(current)
	if err != nil {
		return 0, err
	}
	defer h.release()
	img, err := h.repo.Image(im.d, im.seq)
	if err != nil {
		return 0, err
	}
	return img.ReadAt(p, off)
}
