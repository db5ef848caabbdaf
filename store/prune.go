package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// Pruning a timeline keeps a set of positions exact (the points a policy
// keeps, bookmarks, clone bases, the newest point) and removes the rest:
//
//  1. One batch removes the points and bookmarks that go, and records each
//     span (lo, hi] between two kept positions that held a removed point
//     as pending ('m' 'P' timeline | hi → lo). From then on no instant
//     shows a position inside a span: each resolves to lo or earlier.
//  2. For each pending span, every version written inside it that a newer
//     version inside it hides is deleted, with its journal entry and its
//     reference; its content becomes a candidate for Collect ('z'). The
//     image at hi, and at every kept position, is unchanged. The span's
//     pending key goes with its last piece.
//
// Each batch is committed synced and recorded in records.log, and holds the
// writer for a bounded piece of work, so captures go on beside it. A kill
// at any moment leaves every kept instant exact; the next Prune of the
// timeline finishes the pending spans first.

// pruneChunk bounds the journal entries one batch of step 2 examines.
const pruneChunk = 2048

func pruneKey(tl uint32, hi uint64) []byte {
	return be64(be32([]byte{kindMeta, 'P'}, tl), hi)
}

// span is a pending span of a timeline: versions in (lo, hi] collapse.
type span struct{ lo, hi uint64 }

// Prune removes from timeline tl every point whose position opt.Keep does not
// name, and every block version no kept position shows. Every instant at a
// kept position reads as before; an instant that was shown by a removed point
// then resolves to the kept point at or before it. It runs beside live
// writes (in pieces of the writer's time) and is crash-safe at any moment:
// the removed points go first, so no instant ever shows a half-pruned image.
func (r *Repo) Prune(ctx context.Context, tl uint32, opt PruneOptions) (PruneResult, error) {
	if err := r.writable(); err != nil {
		return PruneResult{}, err
	}
	r.mmu.Lock()
	defer r.mmu.Unlock()
	res := PruneResult{Points: []Point{}, Bookmarks: []string{}}
	r.acquire()
	members, spans, err := r.planPrune(tl, opt, &res)
	if err == nil && !opt.DryRun && (len(res.Points) > 0 || len(res.Bookmarks) > 0) {
		err = r.removePoints(tl, res.Points, res.Bookmarks, spans)
	}
	var pending []span
	if err == nil && !opt.DryRun {
		pending, err = r.pendingSpans(tl)
	}
	r.wmu.Unlock()
	if err != nil {
		return PruneResult{}, fmt.Errorf("store: prune timeline %d: %w", tl, err)
	}
	if !opt.DryRun {
		spans = pending
	}
	hashes := map[Hash]int{} // content of collapsed versions: how many of its references went
	if err := r.collapse(ctx, tl, members, spans, opt.DryRun, &res, hashes); err != nil {
		return PruneResult{}, fmt.Errorf("store: prune timeline %d: %w", tl, err)
	}
	if !opt.DryRun && len(spans) > 0 && res.Versions > 0 {
		// The journal's entries of the spans are one key range each: give
		// their space back now rather than when pebble next meets them.
		lo, hi := spans[0].lo, spans[0].hi
		for _, s := range spans {
			lo, hi = min(lo, s.lo), max(hi, s.hi)
		}
		// Bounded as gc's is (compactIndex): only space waits on it.
		cctx, cancel := context.WithTimeout(ctx, compactIndexWait)
		if err := r.db.Compact(cctx, be64([]byte{kindJournal}, lo+1), be64([]byte{kindJournal}, hi+1), false); err != nil {
			r.logf("prune: compacting the journal's pruned range: %v", err)
		}
		cancel()
	}
	for h, gone := range hashes {
		n, err := r.refCount(h)
		if err != nil {
			return PruneResult{}, err
		}
		if opt.DryRun {
			n -= gone
		}
		if n > 0 {
			continue
		}
		if v, ok, err := r.get(hashKey(h)); err != nil {
			return PruneResult{}, err
		} else if ok {
			if loc, err := decodeLocation(v); err == nil {
				res.FreedBytes += int64(loc.n)
			}
		}
	}
	if opt.DryRun {
		return res, nil
	}
	r.acquire()
	defer r.wmu.Unlock()
	return res, r.publish()
}

// planPrune finds what pruning tl with opt removes and the spans that then
// collapse; the writer is held.
func (r *Repo) planPrune(tl uint32, opt PruneOptions, res *PruneResult) (map[uint32]bool, []span, error) {
	disks, err := r.Disks()
	if err != nil {
		return nil, nil, err
	}
	members := map[uint32]bool{}
	for _, d := range disks {
		if d.Timeline == tl {
			members[d.ID] = true
		}
	}
	if len(members) == 0 {
		return nil, nil, fmt.Errorf("%w: no disk or group has timeline %d", ErrUnknownDisk, tl)
	}
	var pts []Point
	if err := r.scan(pointPrefix(tl), func(k, v []byte) error {
		p, err := decodePoint(k, v)
		if err != nil {
			return err
		}
		pts = append(pts, p)
		return nil
	}); err != nil {
		return nil, nil, err
	}
	if len(pts) == 0 {
		return members, nil, nil
	}
	keep := map[uint64]bool{pts[len(pts)-1].Seq: true}
	for _, s := range opt.Keep {
		keep[s] = true
	}
	if after, ok := r.streamHold(tl); ok {
		for _, p := range pts { // a stream has yet to send them as they are
			if p.Seq > after {
				keep[p.Seq] = true
			}
		}
	}
	for _, d := range disks {
		if d.Base != nil && members[d.Base.ID] {
			keep[d.Base.Seq] = true
		}
	}
	drop := map[string]bool{}
	for _, n := range opt.DropBookmarks {
		drop[n] = true
	}
	bms, err := r.Bookmarks(Disk{Timeline: tl})
	if err != nil {
		return nil, nil, err
	}
	for _, bm := range bms {
		switch {
		case drop[bm.Name] && bm.Pinned:
			return nil, nil, fmt.Errorf("bookmark %q is pinned: no policy removes it", bm.Name)
		case drop[bm.Name]:
			res.Bookmarks = append(res.Bookmarks, bm.Name)
			delete(drop, bm.Name)
		default:
			keep[bm.Seq] = true
		}
	}
	for n := range drop {
		return nil, nil, fmt.Errorf("%w: %q", ErrUnknownBookmark, n)
	}
	kept := make([]uint64, 0, len(keep))
	for s := range keep {
		kept = append(kept, s)
	}
	slices.Sort(kept)
	var spans []span
	for _, p := range pts {
		if keep[p.Seq] {
			continue
		}
		res.Points = append(res.Points, p)
		i := sort.Search(len(kept), func(i int) bool { return kept[i] >= p.Seq })
		s := span{hi: kept[i]} // the newest point is kept: i is in range
		if i > 0 {
			s.lo = kept[i-1]
		}
		if len(spans) == 0 || spans[len(spans)-1] != s {
			spans = append(spans, s)
		}
	}
	res.Kept = len(pts) - len(res.Points)
	return members, spans, nil
}

// removePoints removes the points and bookmarks that go and records the
// spans to collapse, in one synced batch; the writer is held.
func (r *Repo) removePoints(tl uint32, pts []Point, bms []string, spans []span) error {
	b := r.db.NewBatch()
	defer b.Close()
	for _, p := range pts {
		b.Delete(pointKey(tl, p.Time), nil)
	}
	for _, n := range bms {
		b.Delete(bookmarkKey(tl, n), nil)
	}
	for _, s := range spans {
		k := pruneKey(tl, s.hi)
		if v, ok, err := r.get(k); err != nil {
			return err
		} else if ok && len(v) == 8 {
			s.lo = min(s.lo, binary.BigEndian.Uint64(v)) // an earlier prune's span, not yet done
		}
		b.Set(k, be64(nil, s.lo), nil)
	}
	if err := r.commitSynced(b, r.head.Load()); err != nil {
		return err
	}
	delete(r.lastTimes, tl)
	return nil
}

// pendingSpans lists the spans of tl still to collapse.
func (r *Repo) pendingSpans(tl uint32) ([]span, error) {
	var out []span
	p := be32([]byte{kindMeta, 'P'}, tl)
	err := r.scan(p, func(k, v []byte) error {
		if len(k) != len(p)+8 || len(v) != 8 {
			return fmt.Errorf("%w: pending prune record %x", ErrCorrupt, k)
		}
		out = append(out, span{lo: binary.BigEndian.Uint64(v), hi: binary.BigEndian.Uint64(k[len(p):])})
		return nil
	})
	return out, err
}

// collapse deletes the versions written in the spans by the disks of
// members that a newer version in the same span hides, a batch of at most
// pruneChunk journal entries at a time, each committed with the pending
// keys of the spans it finished. With dryRun it only counts.
func (r *Repo) collapse(ctx context.Context, tl uint32, members map[uint32]bool, spans []span, dryRun bool, res *PruneResult, hashes map[Hash]int) error {
	var cursor []byte // within spans[0]: where the next batch starts
	for len(spans) > 0 {
		if err := ctx.Err(); err != nil {
			return err
		}
		if !dryRun {
			r.acquire()
		}
		held := time.Now() // the writer's time it takes, not the wait for it
		rest, next, err := r.collapseBatch(tl, members, spans, cursor, dryRun, res, hashes)
		if !dryRun {
			r.wmu.Unlock()
			yield(ctx, time.Since(held))
		}
		if err != nil {
			return err
		}
		spans, cursor = rest, next
	}
	return nil
}

// collapseBatch is one batch of collapse, starting in spans[0] at the
// journal key cursor (nil: its start); it returns the spans left and where
// the first of them resumes. The writer is held unless dryRun.
func (r *Repo) collapseBatch(tl uint32, members map[uint32]bool, spans []span, cursor []byte, dryRun bool, res *PruneResult, hashes map[Hash]int) ([]span, []byte, error) {
	vit, err := r.db.NewIter(&pebble.IterOptions{LowerBound: []byte{kindVersion}, UpperBound: []byte{kindVersion + 1}})
	if err != nil {
		return nil, nil, err
	}
	defer vit.Close()
	b := r.db.NewBatch()
	defer b.Close()
	gone := map[uint32]uint64{}
	n := 0
	for len(spans) > 0 && n < pruneChunk {
		s := spans[0]
		if cursor == nil {
			cursor = be64([]byte{kindJournal}, s.lo+1)
		}
		next, err := r.collapseSpan(b, vit, members, s, cursor, &n, res, hashes, gone)
		if err != nil {
			return nil, nil, err
		}
		if cursor = next; next == nil {
			b.Delete(pruneKey(tl, s.hi), nil)
			spans = spans[1:]
		}
	}
	if dryRun || b.Empty() {
		return spans, cursor, nil
	}
	counts := map[uint32]uint64{}
	for id, g := range gone {
		total, err := r.versionCount(id)
		if err != nil {
			return nil, nil, err
		}
		counts[id] = total - min(total, g)
		b.Set(diskVersionsKey(id), be64(nil, counts[id]), nil)
	}
	if err := r.commitSynced(b, r.head.Load()); err != nil {
		return nil, nil, err
	}
	for id, c := range counts {
		r.versions[id] = c
	}
	return spans, cursor, nil
}

// collapseSpan adds to b the deletions of span s from the journal key
// cursor on, until *n reaches pruneChunk; it returns where to resume (nil:
// the span is done).
func (r *Repo) collapseSpan(b *pebble.Batch, vit *pebble.Iterator, members map[uint32]bool, s span, cursor []byte, n *int, res *PruneResult, hashes map[Hash]int, gone map[uint32]uint64) (next []byte, err error) {
	it, err := r.db.NewIter(&pebble.IterOptions{LowerBound: cursor, UpperBound: be64([]byte{kindJournal}, s.hi+1)})
	if err != nil {
		return nil, err
	}
	defer func() {
		if cerr := it.Close(); err == nil {
			err = cerr
		}
	}()
	for it.First(); it.Valid(); it.Next() {
		if *n == pruneChunk {
			return bytes.Clone(it.Key()), nil
		}
		*n++
		k := it.Key()
		if len(k) != 21 {
			return nil, fmt.Errorf("%w: journal key %x", ErrCorrupt, k)
		}
		seq, disk, block := binary.BigEndian.Uint64(k[1:]), binary.BigEndian.Uint32(k[9:]), binary.BigEndian.Uint64(k[13:])
		if !members[disk] {
			continue
		}
		// The newest version of the block at hi: if it is not this one, a
		// newer one inside the span hides this one from every kept instant.
		if !vit.SeekGE(versionKey(disk, block, s.hi)) {
			continue // no version at all: verify reports the orders disagree
		}
		if vd, vb, vs, ok := versionBlock(vit.Key()); !ok || vd != disk || vb != block || vs <= seq {
			continue
		}
		vk := versionKey(disk, block, seq)
		if !vit.SeekGE(vk) || !bytes.Equal(vit.Key(), vk) || !versionValueOK(vit.Value()) {
			continue
		}
		if v := vit.Value(); v[len(Hash{})]&flagZero == 0 {
			h := Hash(v[:len(Hash{})])
			hashes[h]++
			gone[disk]++
			b.Delete(refKey(h, disk, block, seq), nil)
			b.Set(candidateKey(h), nil, nil)
		}
		b.Delete(vk, nil)
		b.Delete(bytes.Clone(k), nil)
		res.Versions++
	}
	return nil, it.Error()
}

// refCount counts the versions that reference content h.
func (r *Repo) refCount(h Hash) (int, error) {
	n := 0
	err := r.scan(refPrefix(h), func(_, _ []byte) error { n++; return nil })
	return n, err
}
