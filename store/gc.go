package store

import (
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// Garbage collection gives back the space of content no version references.
// It has three phases, each in pieces that hold the writer briefly:
//
//  1. Sweep: each candidate ('z', left by Prune and by deleted disks) is
//     freed if no reference key ('r') names it: its content and location
//     keys go, and its bytes count as unused in their segment ('u').
//     The check and the delete happen under the writer, and a write that
//     dedupes against stored content looks it up under the writer too, so
//     content is never freed while a new version takes a reference to it
//     (the race of restic#3126 and kopia#1949 cannot happen here: there is
//     one writer, and GC is part of it).
//  2. Rewrite: a segment whose unused share is at least MaxUnused has its
//     live content copied to the newest segment (checked first: damaged
//     content is never copied, GC stops), the content index pointing at the
//     copies, then is retired ('x' seg → view generation) in the batch that
//     moves its last piece. Versions still name the old segment: readers
//     find retired content through the content index (Image.versions).
//  3. Remove: a retired segment's file is deleted once no reader holds a
//     view older than its retirement (readers' private view directories
//     name their process and generation), so an instant a reader opened
//     before pruning keeps reading what it showed.
//
// The content index and the segment are updated in the same synced batches
// as before (commitSynced), so a kill at any moment leaves an index that
// names only content that exists. Rewriting loses the frames of the old
// segment, so an index can no longer be rebuilt from the logs alone
// afterwards: the marker records that, and RebuildIndex says so.

// gcChunk bounds the candidates one batch of the sweep examines, and
// gcCopyBytes the content one batch of a rewrite copies.
const (
	gcChunk     = 1024
	gcCopyBytes = 4 << 20
)

// DefaultMaxUnused is the unused share of a segment at which gc rewrites it
// (restic's prune rewrites at 5% unused too): what a repository holds
// beyond its live content stays about that small, for copying live content
// about twenty times its size in the worst case.
const DefaultMaxUnused = 0.05

// gcSpareBytes is the free space a rewrite leaves on the filesystem beyond
// the copy itself.
const gcSpareBytes = 8 << 20

// Collect frees content that no block version references any more and gives
// its space back to the filesystem. It runs beside live writes and readers:
// see above for why nothing still needed is freed.
func (r *Repo) Collect(ctx context.Context, opt GCOptions) (GCResult, error) {
	start := time.Now()
	if err := r.writable(); err != nil {
		return GCResult{}, err
	}
	if opt.MaxUnused <= 0 {
		opt.MaxUnused = DefaultMaxUnused
	}
	r.mmu.Lock()
	defer r.mmu.Unlock()
	var res GCResult
	unused := map[uint32]uint64{} // a dry run's sweep, not recorded
	if err := r.sweep(ctx, opt.DryRun, &res, unused); err != nil {
		return res, fmt.Errorf("store: gc: %w", err)
	}
	if err := r.rewriteSegments(ctx, opt, &res, unused); err != nil {
		return res, fmt.Errorf("store: gc: %w", err)
	}
	if !opt.DryRun {
		r.acquire()
		err := r.publish()
		r.wmu.Unlock()
		if err == nil {
			err = r.removeRetired(&res)
		}
		if err != nil {
			return res, fmt.Errorf("store: gc: %w", err)
		}
		r.compactIndex(ctx, res)
	}
	res.Duration = time.Since(start)
	return res, nil
}

// sweep is phase 1.
func (r *Repo) sweep(ctx context.Context, dryRun bool, res *GCResult, unused map[uint32]uint64) error {
	cursor := []byte{kindCandidate}
	for cursor != nil {
		if err := ctx.Err(); err != nil {
			return err
		}
		if !dryRun {
			r.acquire()
		}
		held := time.Now() // the writer's time it takes, not the wait for it
		next, err := r.sweepPiece(cursor, dryRun, res, unused)
		if !dryRun {
			r.wmu.Unlock()
			yield(ctx, time.Since(held))
		}
		if err != nil {
			return err
		}
		cursor = next
	}
	return nil
}

func (r *Repo) sweepPiece(cursor []byte, dryRun bool, res *GCResult, unused map[uint32]uint64) (next []byte, err error) {
	it, err := r.db.NewIter(&pebble.IterOptions{LowerBound: cursor, UpperBound: []byte{kindCandidate + 1}})
	if err != nil {
		return nil, err
	}
	defer func() {
		if cerr := it.Close(); err == nil {
			err = cerr
		}
	}()
	b := r.db.NewBatch()
	defer b.Close()
	freed := map[uint32]uint64{}
	n := 0
	for it.First(); it.Valid(); it.Next() {
		if n == gcChunk {
			next = bytes.Clone(it.Key())
			break
		}
		n++
		k := bytes.Clone(it.Key())
		b.Delete(k, nil)
		if len(k) != 1+len(Hash{}) {
			continue
		}
		h := Hash(k[1:])
		res.Candidates++
		if ref, err := r.referenced(h); err != nil || ref {
			if err != nil {
				return nil, err
			}
			continue
		}
		v, ok, err := r.get(hashKey(h))
		if err != nil {
			return nil, err
		}
		loc, lerr := decodeLocation(v)
		if !ok || lerr != nil {
			continue // nothing stored, or a damaged record verify reports
		}
		res.Freed++
		res.FreedBytes += int64(loc.n)
		freed[loc.seg] += uint64(loc.n)
		b.Delete(hashKey(h), nil)
		b.Delete(contentAtKey(loc.seg, loc.off), nil)
	}
	if err := it.Error(); err != nil {
		return nil, err
	}
	if dryRun {
		for seg, n := range freed {
			unused[seg] += n
		}
		return next, nil
	}
	for seg, n := range freed {
		cur, err := r.getU64(unusedKey(seg))
		if err != nil {
			return nil, err
		}
		b.Set(unusedKey(seg), be64(nil, cur+n), nil)
	}
	if b.Empty() {
		return next, nil
	}
	return next, r.commitSynced(b, r.head.Load())
}

// segmentUse is one segment's length and unused bytes.
type segmentUse struct {
	seg            uint32
	length, unused uint64
}

// rewriteSegments is phase 2.
func (r *Repo) rewriteSegments(ctx context.Context, opt GCOptions, res *GCResult, extra map[uint32]uint64) error {
	r.acquire()
	var segs []segmentUse
	err := r.scan([]byte{kindUnused}, func(k, v []byte) error {
		if len(k) != 5 || len(v) != 8 {
			return nil
		}
		s := segmentUse{seg: binary.BigEndian.Uint32(k[1:]), unused: binary.BigEndian.Uint64(v)}
		segs = append(segs, s)
		return nil
	})
	for seg := range extra {
		if !slices.ContainsFunc(segs, func(s segmentUse) bool { return s.seg == seg }) {
			segs = append(segs, segmentUse{seg: seg})
		}
	}
	var pick []segmentUse
	for _, s := range segs {
		if err != nil {
			break
		}
		if s.length, err = r.committedLength(s.seg); err != nil || s.length == 0 {
			continue
		}
		// Unused is all but the live content: freed content, and the
		// frames' own bytes, which a rewrite drops too.
		var live uint64
		if live, err = r.liveBytes(s.seg); err != nil {
			break
		}
		live -= min(live, extra[s.seg]) // a dry run's freed content is still indexed
		if s.unused = s.length - min(s.length, live); float64(s.unused) >= opt.MaxUnused*float64(s.length) {
			pick = append(pick, s)
		}
	}
	// The writer's own segment is sealed first, so that it can be rewritten.
	if err == nil && !opt.DryRun && slices.ContainsFunc(pick, func(s segmentUse) bool { return s.seg == r.segs.wID }) {
		if err = r.segs.rotate(); err == nil {
			b := r.db.NewBatch()
			err = r.commitSynced(b, r.head.Load())
			b.Close()
		}
	}
	r.wmu.Unlock()
	if err != nil {
		return err
	}
	// The emptiest first: they give back the most for the least copying.
	slices.SortFunc(pick, func(a, b segmentUse) int {
		return cmp.Compare(float64(b.unused)/float64(b.length), float64(a.unused)/float64(a.length))
	})
	var total, done int64
	for _, s := range pick {
		total += int64(s.length)
	}
	for _, s := range pick {
		if err := ctx.Err(); err != nil {
			return err
		}
		live := s.length - min(s.length, s.unused)
		if opt.DryRun {
			res.Rewritten++
			res.Copied += int64(live)
			res.Reclaimed += int64(s.length - live)
			continue
		}
		if free, ok := freeBytes(r.dir); ok && free < live+gcSpareBytes {
			r.logf("gc: segments/%s not rewritten: %d bytes to copy, %d free", segmentName(s.seg), live, free)
			continue
		}
		copied, err := r.rewrite(ctx, s.seg, &res.Moved)
		if err != nil {
			return err
		}
		res.Rewritten++
		res.Copied += copied
		done += int64(s.length)
		if opt.Progress != nil {
			opt.Progress(done, total)
		}
	}
	return nil
}

// rewrite copies the live content of segment seg to the newest segment and
// retires seg; it returns the bytes copied.
func (r *Repo) rewrite(ctx context.Context, seg uint32, moves *int) (int64, error) {
	if err := r.markCollected(); err != nil {
		return 0, err
	}
	var copied int64
	cursor := contentAtKey(seg, 0)
	for {
		if err := ctx.Err(); err != nil {
			return copied, err
		}
		// Reading and checking the piece needs no writer: nothing but gc
		// changes what a sealed segment holds or its location keys.
		piece, next, err := r.readPiece(seg, cursor)
		if err != nil {
			return copied, err
		}
		r.acquire()
		held := time.Now()
		n, m, err := r.movePiece(seg, piece, next == nil)
		r.wmu.Unlock()
		yield(ctx, time.Since(held))
		copied += n
		*moves += m
		if err != nil || next == nil {
			return copied, err
		}
		cursor = next
	}
}

// moved is one content of a segment being rewritten, read and checked.
type moved struct {
	key    []byte // its location key
	hash   Hash
	loc    location
	stored []byte // nil: the key is stale (the content is elsewhere or gone)
}

// readPiece reads and checks about gcCopyBytes of seg's live content from
// the location key cursor on; next is where the following piece starts
// (nil: this is the last).
func (r *Repo) readPiece(seg uint32, cursor []byte) (piece []moved, next []byte, err error) {
	it, err := r.db.NewIter(&pebble.IterOptions{LowerBound: cursor, UpperBound: contentAtKey(seg+1, 0)})
	if err != nil {
		return nil, nil, err
	}
	defer func() {
		if cerr := it.Close(); err == nil {
			err = cerr
		}
	}()
	size := 0
	for it.First(); it.Valid(); it.Next() {
		if size >= gcCopyBytes {
			return piece, bytes.Clone(it.Key()), nil
		}
		m := moved{key: bytes.Clone(it.Key())}
		v := it.Value()
		if len(m.key) != 13 || len(v) != contentAtLen {
			piece = append(piece, m)
			continue
		}
		m.hash = Hash(v[:len(Hash{})])
		off := binary.BigEndian.Uint64(m.key[5:])
		hv, ok, err := r.get(hashKey(m.hash))
		if err != nil {
			return nil, nil, err
		}
		loc, lerr := decodeLocation(hv)
		if !ok || lerr != nil || loc.seg != seg || loc.off != off {
			piece = append(piece, m) // a location the content no longer has
			continue
		}
		m.loc, m.stored = loc, make([]byte, loc.n)
		if err := r.segs.readRaw(m.stored, seg, off); err != nil {
			return nil, nil, fmt.Errorf("%w: %v; garbage collection stops: run 'hindsight verify --full'", ErrCorrupt, err)
		}
		if err := r.checkStored(m.hash, loc, m.stored); err != nil {
			return nil, nil, fmt.Errorf("%w: content at segments/%s offset %d: %v; garbage collection stops: run 'hindsight verify --full'",
				ErrCorrupt, segmentName(seg), off, err)
		}
		piece = append(piece, m)
		size += int(loc.n)
	}
	return piece, nil, it.Error()
}

// movePiece appends the content read by readPiece to the newest segment
// and points the content index at it, in one synced batch that retires seg
// when last is set. The writer is held.
func (r *Repo) movePiece(seg uint32, piece []moved, last bool) (copied int64, moves int, err error) {
	if seg == r.segs.wID {
		return 0, 0, fmt.Errorf("segments/%s is being written", segmentName(seg))
	}
	b := r.db.NewBatch()
	defer b.Close()
	for _, m := range piece {
		b.Delete(m.key, nil)
		if m.stored == nil {
			continue
		}
		nloc, err := r.segs.put(m.stored, m.loc.flags&flagZstd)
		if err != nil {
			return copied, moves, err
		}
		r.indexHash(b, m.hash, nloc.append(nil))
		copied += int64(m.loc.n)
		moves++
	}
	if last {
		gens, err := viewGenerations(r.dir)
		if err != nil {
			return copied, moves, err
		}
		gen := uint64(1)
		if len(gens) > 0 {
			gen = gens[len(gens)-1] + 1
		}
		b.Set(retiredKey(seg), be64(nil, gen), nil)
		b.Delete(segmentKey(seg), nil)
		b.Delete(unusedKey(seg), nil)
	}
	if err := r.commitSynced(b, r.head.Load()); err != nil {
		return copied, moves, err
	}
	if last {
		r.addRetired(seg)
	}
	return copied, moves, nil
}

// yield gives the writer back to captures after a piece of maintenance
// that took held: three times as long, so that prune and gc take at most
// about a quarter of the writer's time.
func yield(ctx context.Context, held time.Duration) {
	t := time.NewTimer(min(3*held, time.Second))
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// indexKeyBytes is about what the index holds per content gc frees or
// moves, with the versions and references that pruning removed with it.
const indexKeyBytes = 256

// compactIndex gives the index's space back after a gc that changed an
// eighth of it or more. A smaller one leaves the deleted keys to pebble's
// own compactions, so that gc costs what it removes: a full compaction
// costs the index's size, and comes once an eighth of it has changed.
func (r *Repo) compactIndex(ctx context.Context, res GCResult) {
	changed := uint64(res.Freed+res.Moved) * indexKeyBytes
	if size := r.db.Metrics().DiskSpaceUsage(); changed == 0 || changed*8 < size {
		return
	}
	// Beside busy captures pebble's own compactions take its compaction
	// slot most of the time: a manual one may wait for minutes. It is not
	// needed for anything but space, so it gets a bounded time.
	ctx, cancel := context.WithTimeout(ctx, compactIndexWait)
	defer cancel()
	if err := r.db.Compact(ctx, []byte{0}, []byte{0xff}, true); err != nil {
		r.logf("gc: the index's compaction did not finish in %v (pebble's own compactions will do it): %v", compactIndexWait, err)
	}
}

// compactIndexWait bounds the index's compaction after a large gc.
const compactIndexWait = 5 * time.Second

// liveBytes is the stored size of the content the index locates in seg.
func (r *Repo) liveBytes(seg uint32) (uint64, error) {
	var n uint64
	err := r.scan(be32([]byte{kindContentAt}, seg), func(_, v []byte) error {
		if len(v) == contentAtLen {
			n += uint64(binary.BigEndian.Uint32(v[len(Hash{}):]))
		}
		return nil
	})
	return n, err
}

// checkStored checks stored bytes of content h at loc before they are copied.
func (r *Repo) checkStored(h Hash, loc location, stored []byte) error {
	if loc.flags&flagSum != 0 {
		if checksum(stored) != loc.sum {
			return errChecksum
		}
		return nil
	}
	plain := stored
	if loc.flags&flagZstd != 0 {
		var err error
		if plain, err = r.segs.dec.DecodeAll(stored, nil); err != nil {
			return fmt.Errorf("compressed content does not decode: %w", err)
		}
	}
	if HashBlock(plain) != h {
		return errHash
	}
	return nil
}

// removeRetired is phase 3: it deletes the files of retired segments that
// no reader may still read.
func (r *Repo) removeRetired(res *GCResult) error {
	oldest, readers := oldestReader(r.dir)
	var gone []uint32
	err := r.scan([]byte{kindRetired}, func(k, v []byte) error {
		if len(k) != 5 || len(v) != 8 {
			return nil
		}
		seg, gen := binary.BigEndian.Uint32(k[1:]), binary.BigEndian.Uint64(v)
		name := filepath.Join(r.segs.dir, segmentName(seg))
		var st syscall.Stat_t
		if err := syscall.Stat(name, &st); err != nil {
			return nil // removed already
		}
		if readers && oldest < gen {
			res.Held++
			return nil
		}
		if err := os.Remove(name); err != nil {
			return fmt.Errorf("remove segments/%s: %w", segmentName(seg), err)
		}
		res.Reclaimed += st.Blocks * 512
		gone = append(gone, seg)
		return nil
	})
	if err != nil || len(gone) == 0 {
		return err
	}
	r.segs.forget(gone)
	return syncDir(r.segs.dir)
}

// oldestReader is the oldest view generation a live reader holds (readers:
// false if none).
func oldestReader(dir string) (oldest uint64, readers bool) {
	ents, err := os.ReadDir(viewsDir(dir))
	if err != nil {
		return 0, false
	}
	for _, e := range ents {
		rest, ok := strings.CutPrefix(e.Name(), privatePrefix)
		if !ok {
			continue
		}
		parts := strings.Split(rest, "-")
		if len(parts) < 2 {
			continue
		}
		if _, err := os.Stat("/proc/" + parts[0]); err != nil {
			continue // its reader died
		}
		gen, err := strconv.ParseUint(parts[1], 16, 64)
		if err != nil {
			continue
		}
		if !readers || gen < oldest {
			oldest, readers = gen, true
		}
	}
	return oldest, readers
}

// freeBytes is the space left to the repository's filesystem.
func freeBytes(dir string) (uint64, bool) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, false
	}
	return st.Bavail * uint64(st.Bsize), true
}

// markCollected records in the marker that segments were rewritten: the
// index can no longer be rebuilt from the logs alone (RebuildIndex).
func (r *Repo) markCollected() error {
	name := filepath.Join(r.dir, markerFile)
	b, err := os.ReadFile(name)
	if err != nil {
		return err
	}
	var m marker
	if err := json.Unmarshal(b, &m); err != nil {
		return fmt.Errorf("%w: %s: %v", ErrNotRepository, markerFile, err)
	}
	if m.Collected != nil {
		return nil
	}
	now := time.Now().UTC()
	m.Collected = &now
	out, _ := json.Marshal(m)
	if err := writeFileSync(name, append(out, '\n')); err != nil {
		return err
	}
	return syncDir(r.dir)
}
