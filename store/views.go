package store

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// A view is a pebble checkpoint of the index, published by the writer after
// each change under views/<generation>. Readers never open a view in place:
// they hard-link its files into a private directory, so the writer can delete
// superseded views while readers still use them, and two readers never
// contend for one pebble lock.

const privatePrefix = ".r-"

// viewLogBytes is the most memtable a view carries as log for readers to
// replay on open (about 10 ms a MiB): beyond it the writer flushes first.
const viewLogBytes = 1 << 20

func viewsDir(dir string) string { return filepath.Join(dir, "views") }

// ViewsDir is where the writer of the repository in dir publishes views:
// readers may watch it for new ones.
func ViewsDir(dir string) string { return viewsDir(dir) }

// viewGenerations lists published generations, ascending.
func viewGenerations(dir string) ([]uint64, error) {
	ents, err := os.ReadDir(viewsDir(dir))
	if err != nil {
		return nil, err
	}
	var gens []uint64
	for _, e := range ents {
		if g, err := strconv.ParseUint(e.Name(), 16, 64); err == nil && len(e.Name()) == 16 {
			gens = append(gens, g)
		}
	}
	sort.Slice(gens, func(i, j int) bool { return gens[i] < gens[j] })
	return gens, nil
}

// NewestView returns the newest published view generation of the repository
// in dir: cheap, so readers call it to learn whether to reopen.
func NewestView(dir string) (uint64, error) {
	gens, err := viewGenerations(dir)
	if err != nil {
		return 0, fmt.Errorf("store: list views of %s: %w", dir, err)
	}
	if len(gens) == 0 {
		return 0, fmt.Errorf("%w: %s has no published view", ErrNotRepository, dir)
	}
	return gens[len(gens)-1], nil
}

// publish checkpoints the index as the next view and drops older ones.
func (r *Repo) publish() error {
	gens, err := viewGenerations(r.dir)
	if err != nil {
		return err
	}
	next := uint64(1)
	if len(gens) > 0 {
		next = gens[len(gens)-1] + 1
	}
	name := fmt.Sprintf("%016x", next)
	tmp := filepath.Join(viewsDir(r.dir), ".tmp-"+name)
	os.RemoveAll(tmp)
	// Readers in other processes read content from the files.
	if err := r.segs.write(); err != nil {
		return err
	}
	// The index's own log is synced now and then (captured steps never
	// sync it): a crash then replays at most this much from the segments.
	if err := r.db.LogData(nil, pebble.Sync); err != nil {
		return fmt.Errorf("store: publish view: %w", err)
	}
	// Every reader that opens the view replays its log: keep it short.
	if r.db.Metrics().MemTable.Size > viewLogBytes {
		if err := r.db.Flush(); err != nil {
			return fmt.Errorf("store: publish view: %w", err)
		}
	}
	if err := r.db.Checkpoint(tmp, pebble.WithFlushedWAL()); err != nil {
		return fmt.Errorf("store: publish view: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(viewsDir(r.dir), name)); err != nil {
		return fmt.Errorf("store: publish view: %w", err)
	}
	if err := syncDir(viewsDir(r.dir)); err != nil {
		return err
	}
	for _, g := range gens {
		os.RemoveAll(filepath.Join(viewsDir(r.dir), fmt.Sprintf("%016x", g)))
	}
	return nil
}

// removeStaleViews drops half-written checkpoints and the private copies of
// readers that died without closing.
func (r *Repo) removeStaleViews() {
	ents, err := os.ReadDir(viewsDir(r.dir))
	if err != nil {
		return
	}
	for _, e := range ents {
		name := e.Name()
		switch {
		case strings.HasPrefix(name, ".tmp-"):
		case strings.HasPrefix(name, privatePrefix):
			pid, _, _ := strings.Cut(strings.TrimPrefix(name, privatePrefix), "-")
			if _, err := os.Stat("/proc/" + pid); err == nil {
				continue
			}
		default:
			continue
		}
		os.RemoveAll(filepath.Join(viewsDir(r.dir), name))
	}
}

func openView(dir string, opt Options) (*Repo, error) {
	// The newest view lacks what a writer that died made durable but never
	// published. If the last writer died (its pid is still in the lock file),
	// open the repository as the writer once, unless one runs: that recovers
	// the journal and publishes it. Any failure (a writer is running, no
	// permission to write) leaves the views as they are.
	if uncleanWriter(dir) {
		wopt := opt
		wopt.ReadOnly = false
		if w, err := openWriterWait(dir, wopt, false, 0); err == nil {
			w.Close()
		}
	}
	var lastErr error
	for attempt := 0; attempt < 20; attempt++ {
		gen, err := NewestView(dir)
		if err != nil {
			return nil, err
		}
		r, err := openViewGen(dir, gen, opt)
		if err == nil {
			return r, nil
		}
		lastErr = err
		if !errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
		// The writer replaced the view while we linked it: take the newer one.
		time.Sleep(time.Duration(attempt) * time.Millisecond)
	}
	return nil, fmt.Errorf("store: open a view of %s: %w", dir, lastErr)
}

func openViewGen(dir string, gen uint64, opt Options) (_ *Repo, err error) {
	src := filepath.Join(viewsDir(dir), fmt.Sprintf("%016x", gen))
	priv := filepath.Join(viewsDir(dir), fmt.Sprintf("%s%d-%016x-%d", privatePrefix, os.Getpid(), gen, time.Now().UnixNano()))
	if err := os.Mkdir(priv, 0o700); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			os.RemoveAll(priv)
		}
	}()
	ents, err := os.ReadDir(src)
	if err != nil {
		return nil, err
	}
	for _, e := range ents {
		if e.Name() == "LOCK" {
			continue // pebble locks by inode: each reader needs its own
		}
		if err := os.Link(filepath.Join(src, e.Name()), filepath.Join(priv, e.Name())); err != nil {
			return nil, err
		}
	}
	cache := opt.Cache
	if cache == nil {
		cache = pebble.NewCache(256 << 20)
		defer cache.Unref()
	}
	opt.ReadOnly = true
	db, err := pebble.Open(priv, pebbleOptions(opt, cache))
	if err != nil {
		return nil, fmt.Errorf("store: open view %d: %w", gen, indexOpenError(dir, err))
	}
	r := &Repo{dir: dir, db: db, opts: opt, readOnly: true, private: priv, cache: cache, gen: gen, space: newSpaceGuard(dir, opt)}
	cache.Ref()
	head, err := r.getU64(metaHead)
	r.head.Store(head)
	if err != nil {
		r.Close()
		return nil, err
	}
	if r.segs, err = openSegments(filepath.Join(dir, "segments")); err != nil {
		r.Close()
		return nil, err
	}
	if err := r.loadRetired(); err != nil {
		r.Close()
		return nil, err
	}
	r.private = priv
	return r, nil
}

// Warm opens every table of the view's index and reads its index block, so
// that the first lookups on a view just opened do not each pay for opening
// tables: a reader moving to a newer view warms it before switching.
func (r *Repo) Warm() error {
	levels, err := r.db.SSTables()
	if err != nil {
		return err
	}
	it, err := r.db.NewIter(nil)
	if err != nil {
		return err
	}
	for _, level := range levels {
		for _, t := range level {
			it.SeekGE(t.Smallest.UserKey) // positions every level there: opens its tables
		}
	}
	return errors.Join(it.Error(), it.Close())
}
