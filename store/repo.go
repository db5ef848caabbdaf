package store

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"
	"github.com/klauspost/compress/zstd"
)

const (
	markerFile = "hindsight.json"
	lockFile   = "writer.lock"
	formatV1   = 1
)

type marker struct {
	Format  int       `json:"format"`
	Created time.Time `json:"created"`
	// Records: records.log holds every durable batch since creation, so
	// the index can be rebuilt from the logs alone (RebuildIndex).
	Records bool `json:"records,omitempty"`
	// Collected: garbage collection rewrote segments at this time, so the
	// logs no longer hold the whole history (gc.go).
	Collected *time.Time `json:"collected,omitempty"`
}

// Options tune how a repository is opened. The zero value opens it for writing.
type Options struct {
	// ReadOnly opens the newest published view without taking the writer lock.
	ReadOnly bool
	// Cache is shared by repositories opened in turn by one process (nil: a new 256 MiB cache).
	Cache *pebble.Cache
	// Logf receives pebble's informational messages (nil: discarded).
	Logf func(format string, args ...any)
	// Notef receives what a user must hear of: the journal recovered after
	// a crash or the loss of the index's tail (nil: to Logf).
	Notef func(format string, args ...any)
	// MinFree is the free space the writer keeps in reserve on the
	// repository's filesystem: new writes are refused with ErrNoSpace below
	// it (space.go). 0: DefaultMinFree, or an eighth of a small filesystem.
	MinFree uint64

	// statfs replaces the filesystem's free space (tests of the guard);
	// walPrealloc keeps pebble's WAL preallocation (benchmarks: A/B).
	statfs      func(dir string) (free, total uint64, err error)
	walPrealloc bool
}

// Repo is an open repository: the writer's, or a read-only view.
type Repo struct {
	dir  string
	db   *pebble.DB
	segs *segments
	opts Options

	head     atomic.Uint64 // committed head (for a view: as published)
	readOnly bool
	private  string // read-only: the private link directory to remove on Close
	gen      uint64 // read-only: the view generation opened

	lock *os.File
	recs *recordLog // the writer's records of durable batches (records.go)
	wmu  sync.Mutex // one step or metadata change at a time
	// mmu: one prune or gc at a time (they hold wmu only in pieces).
	mmu   sync.Mutex
	q     *queue // the writer's captured writes not yet journaled
	cache *pebble.Cache

	// Writer state under wmu: content added by captured steps and not yet
	// indexed (see Sync), and the newest point time of each timeline.
	unsynced   map[Hash]location
	lastTimes  map[uint32]time.Time
	versions   map[uint32]uint64 // non-zero versions per disk, as committed
	zeroHashes map[int]Hash      // ZeroHash per block size
	synced     uint64            // the position syncContent made durable, once committed

	holdMu      sync.Mutex
	streamHolds map[uint32]map[string]uint64 // per timeline, per stream: Hold

	durable   atomic.Uint64 // the newest position known durable (Durable)
	durableMu sync.Mutex    // guards durableCh
	durableCh chan struct{} // closed when durable moves
	zeroCache sync.Map      // ZeroHash per block size, without the writer
	// inDec decodes replicated content, bounded to a block (decodeIncoming).
	inDec     *zstd.Decoder
	inDecErr  error
	inDecOnce sync.Once

	// uncheckedReads skips the read check: set only by BenchmarkReadImage,
	// to measure what the check costs (A/B in one run).
	uncheckedReads bool

	// retired are the segments garbage collection emptied (refs.go).
	retired atomic.Pointer[retiredSet]
	space   *spaceGuard // the filesystem's free space (space.go)

	known     *knownHashes // the writer's filter of indexed content (known.go)
	stopKnown func()       // stops building it
}

// Init creates an empty repository in dir (created if missing).
func Init(dir string) error {
	if _, err := os.Stat(filepath.Join(dir, markerFile)); err == nil {
		return fmt.Errorf("store: %s already holds a repository", dir)
	}
	for _, d := range []string{dir, filepath.Join(dir, "segments"), filepath.Join(dir, "views")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return fmt.Errorf("store: init %s: %w", dir, err)
		}
	}
	r, err := openWriter(dir, Options{}, true)
	if err != nil {
		return err
	}
	if err := r.Close(); err != nil {
		return err
	}
	m, _ := json.Marshal(marker{Format: formatV1, Created: time.Now().UTC(), Records: true})
	if err := writeFileSync(filepath.Join(dir, markerFile), append(m, '\n')); err != nil {
		return err
	}
	// The repository's own entry too: a power cut must not take it away
	// after init said it exists (found by the power-cut test).
	return errors.Join(syncDir(dir), syncDir(filepath.Dir(filepath.Clean(dir))))
}

// Open opens the repository in dir: for writing (one process at a time), or
// with Options.ReadOnly the newest published view, beside a running writer.
func Open(dir string, opt Options) (*Repo, error) {
	b, err := os.ReadFile(filepath.Join(dir, markerFile))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%w: no repository at %s (create one with 'hindsight --repo %s init')", ErrNotRepository, dir, dir)
		}
		return nil, fmt.Errorf("store: open %s: %w", dir, err)
	}
	var m marker
	if err := json.Unmarshal(b, &m); err != nil || m.Format != formatV1 {
		return nil, fmt.Errorf("%w: %s has an unreadable or unknown format marker", ErrNotRepository, dir)
	}
	if opt.ReadOnly {
		return openView(dir, opt)
	}
	return openWriter(dir, opt, false)
}

func pebbleOptions(opt Options, cache *pebble.Cache) *pebble.Options {
	o := &pebble.Options{
		Cache:              cache,
		FormatMajorVersion: pebble.FormatNewest,
		MemTableSize:       64 << 20,
		ReadOnly:           opt.ReadOnly,
		Logger:             logger{opt.Logf},
	}
	if !opt.ReadOnly && !opt.walPrealloc {
		o.FS = newWALFS()
	}
	if opt.ReadOnly {
		// A view's memtable only holds its log, at most viewLogBytes: a
		// smaller arena makes opening one (as readers do every publish) cheaper.
		o.MemTableSize = 4 << 20
	}
	// Bloom filters answer most hash lookups of new content (dedupe misses)
	// without reading a data block: without them each miss cost a pread.
	for i := range o.Levels {
		o.Levels[i].FilterPolicy = bloom.FilterPolicy(10)
	}
	// Publishing flushes the memtable about once a second while a disk is
	// captured, so L0 fills with files of a few MiB. Pebble's default base
	// level (64 MiB, sized for 64 MiB flushes) then made every L0 compaction
	// merge into the bottom level, rewriting the whole index of a young
	// repository each time. A base level of about four such flushes keeps
	// that merge small: 10-35% less CPU per captured 4 KiB write under fio,
	// more when the host is slow (PERFORMANCE.md).
	o.LBaseMaxBytes = 16 << 20
	o.EnsureDefaults()
	return o
}

// lockWait is how long a writer waits for the lock: readers take it for a
// moment to recover a journal whose writer died (see openView).
const lockWait = 3 * time.Second

func openWriter(dir string, opt Options, creating bool) (_ *Repo, err error) {
	return openWriterWait(dir, opt, creating, lockWait)
}

func openWriterWait(dir string, opt Options, creating bool, wait time.Duration) (_ *Repo, err error) {
	lock, err := lockWriter(dir, wait)
	if err != nil {
		return nil, err
	}
	return openWriterLocked(dir, opt, creating, lock)
}

// openWriterLocked opens the writer with the writer lock held (lock).
func openWriterLocked(dir string, opt Options, creating bool, lock *os.File) (_ *Repo, err error) {
	defer func() {
		if err != nil {
			lock.Close()
		}
	}()
	cache := opt.Cache
	if cache == nil {
		cache = pebble.NewCache(256 << 20)
		defer cache.Unref()
	}
	po := pebbleOptions(opt, cache)
	po.ErrorIfNotExists = !creating
	db, err := pebble.Open(filepath.Join(dir, "db"), po)
	if err != nil {
		return nil, indexOpenError(dir, err)
	}
	r := &Repo{dir: dir, db: db, opts: opt, lock: lock, cache: cache,
		unsynced: map[Hash]location{}, durableCh: make(chan struct{}), lastTimes: map[uint32]time.Time{}, versions: map[uint32]uint64{},
		zeroHashes: map[int]Hash{}, known: newKnownHashes(), space: newSpaceGuard(dir, opt)}
	cache.Ref()
	defer func() {
		if err != nil {
			r.Close()
		}
	}()
	head, err := r.getU64(metaHead)
	r.head.Store(head)
	if err != nil {
		return nil, err
	}
	if r.segs, err = openSegments(filepath.Join(dir, "segments")); err != nil {
		return nil, err
	}
	if err := r.checkSegments(); err != nil {
		return nil, err
	}
	if r.recs, err = openRecordLog(dir); err != nil {
		return nil, err
	}
	if err := r.purgeOrphans(); err != nil {
		return nil, err
	}
	if err := r.recoverLog(); err != nil {
		return nil, fmt.Errorf("store: recover the journal of %s: %w", dir, err)
	}
	if err := r.purgeOrphans(); err != nil { // an interrupted import's replayed batches
		return nil, err
	}
	if err := r.ensureRefs(); err != nil {
		return nil, err
	}
	if err := r.loadRetired(); err != nil {
		return nil, err
	}
	if err := r.segs.openWriter(r.committedLength); err != nil {
		return nil, err
	}
	// The log goes on where the appends now start.
	b := r.db.NewBatch()
	err = r.commitSynced(b, r.head.Load())
	b.Close()
	if err != nil {
		return nil, err
	}
	r.removeStaleViews()
	if err := r.publish(); err != nil {
		return nil, err
	}
	r.stopKnown = r.startKnown()
	r.startQueue()
	r.segs.admit = r.space.admit // an import's content, block by block
	r.space.inflight = r.inflight
	return r, nil
}

func lockWriter(dir string, wait time.Duration) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, lockFile), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", dir, err)
	}
	deadline := time.Now().Add(wait)
	for {
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if !errors.Is(err, syscall.EWOULDBLOCK) || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		holder, _ := os.ReadFile(f.Name())
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w: %s is held by process %s; wait for it to finish or stop it",
				ErrLocked, dir, strings.TrimSpace(string(holder)))
		}
		return nil, fmt.Errorf("store: lock %s: %w", dir, err)
	}
	// The pid tells readers that a writer may have died unclean (they then
	// recover the journal): it must outlive a power cut, so it is synced.
	if err := f.Truncate(0); err == nil {
		f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
		f.Sync()
	}
	return f, nil
}

// Dir is the repository's directory.
func (r *Repo) Dir() string { return r.dir }

// Head is the newest committed journal position (a view's: as published).
func (r *Repo) Head() uint64 { return r.head.Load() }

// Generation is the view generation a read-only repository shows.
func (r *Repo) Generation() uint64 { return r.gen }

// Close releases the repository; a writer's content is synced first.
func (r *Repo) Close() error {
	var errs []error
	if r.q != nil {
		errs = append(errs, r.stopQueue())
		r.q = nil
	}
	if r.stopKnown != nil {
		r.stopKnown()
		r.stopKnown = nil
	}
	if r.segs != nil {
		errs = append(errs, r.segs.close())
	}
	if r.inDec != nil {
		r.inDec.Close() // ErrDecoderClosed from then on
	}
	errs = append(errs, r.recs.close())
	if r.db != nil {
		errs = append(errs, r.db.Close())
		r.db = nil
	}
	if r.cache != nil {
		r.cache.Unref()
		r.cache = nil
	}
	if r.private != "" {
		errs = append(errs, os.RemoveAll(r.private))
	}
	if r.lock != nil {
		// No pid: this writer ended in an orderly way, even if it failed, so
		// readers need not recover the journal (see openView).
		errs = append(errs, r.lock.Truncate(0), r.lock.Close())
	}
	return errors.Join(errs...)
}

// uncleanWriter reports whether the last writer of dir died without closing
// the repository: its pid is still in the lock file, and nobody holds the lock.
func uncleanWriter(dir string) bool {
	b, err := os.ReadFile(filepath.Join(dir, lockFile))
	return err == nil && len(bytes.TrimSpace(b)) > 0
}

func (r *Repo) get(key []byte) ([]byte, bool, error) {
	v, closer, err := r.db.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	out := append([]byte(nil), v...)
	return out, true, closer.Close()
}

func (r *Repo) getU64(key []byte) (uint64, error) {
	v, ok, err := r.get(key)
	if err != nil || !ok {
		return 0, err
	}
	if len(v) != 8 {
		return 0, fmt.Errorf("store: meta %q of %d bytes: %w", key, len(v), ErrCorrupt)
	}
	return binary.BigEndian.Uint64(v), nil
}

func (r *Repo) committedLength(seg uint32) (uint64, error) { return r.getU64(segmentKey(seg)) }

// purgeOrphans deletes the versions of a step that was cut off before its
// final, synced batch: they lie above the committed head. Once the writer is
// appending, the purge is committed with a sync of the segments, so that the
// log resumes past the orphaned step's content.
func (r *Repo) purgeOrphans() error {
	start := be64([]byte{kindJournal}, r.head.Load()+1)
	it, err := r.db.NewIter(&pebble.IterOptions{LowerBound: start, UpperBound: []byte{kindJournal + 1}})
	if err != nil {
		return err
	}
	b := r.db.NewBatch()
	defer b.Close()
	n := 0
	for it.First(); it.Valid(); it.Next() {
		k := it.Key()
		seq := binary.BigEndian.Uint64(k[1:])
		disk := binary.BigEndian.Uint32(k[9:])
		block := binary.BigEndian.Uint64(k[13:])
		v, ok, err := r.get(versionKey(disk, block, seq))
		if err != nil {
			it.Close()
			return err
		}
		if ok && versionValueOK(v) && v[len(Hash{})]&flagZero == 0 {
			h := Hash(v[:len(Hash{})])
			b.Delete(refKey(h, disk, block, seq), nil)
			b.Set(candidateKey(h), nil, nil) // its content may be referenced by nothing else
		}
		b.Delete(versionKey(disk, block, seq), nil)
		b.Delete(k, nil)
		n++
	}
	if err := errors.Join(it.Error(), it.Close()); err != nil {
		return fmt.Errorf("store: scan interrupted step: %w", err)
	}
	if n > 0 {
		r.logf("purging %d block versions of an interrupted step above position %d", n, r.head.Load())
	}
	if r.segs.w != nil {
		return r.commitSynced(b, r.head.Load())
	}
	if n == 0 {
		return nil
	}
	return b.Commit(pebble.Sync)
}

func (r *Repo) notef(format string, args ...any) {
	if r.opts.Notef != nil {
		r.opts.Notef(format, args...)
		return
	}
	r.logf(format, args...)
}

func (r *Repo) logf(format string, args ...any) {
	if r.opts.Logf != nil {
		r.opts.Logf(format, args...)
	}
}

func writeFileSync(name string, data []byte) error {
	tmp := name + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := errors.Join(f.Sync(), f.Close()); err != nil {
		return err
	}
	return os.Rename(tmp, name)
}

// logger adapts pebble's logging to Options.Logf.
type logger struct{ logf func(string, ...any) }

func (l logger) Infof(format string, args ...any) {
	if l.logf != nil {
		l.logf(format, args...)
	}
}
func (l logger) Errorf(format string, args ...any) { l.Infof(format, args...) }

// Fatalf ends the process: pebble calls it when it cannot go on (a MANIFEST
// write failed on a full disk, say). The journal is crash-safe, so exiting
// loses nothing acknowledged; a panic's stack trace would only hide the cause.
func (l logger) Fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "hindsight: fatal: %s\nThe repository is crash-safe: fix the cause (free space, say) and run the command again.\n", fmt.Sprintf(format, args...))
	os.Exit(1)
}
