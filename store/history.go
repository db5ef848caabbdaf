package store

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// BlockVersions returns, oldest first and without repeats, the journal
// positions in (after, upto] at which any of blocks of disk d was written. It
// reads only the version records of those blocks (one seek per block, then
// one step per version found), so its cost grows with how often the blocks
// changed, not with the size of the journal.
func (r *Repo) BlockVersions(d Disk, blocks []uint64, after, upto uint64) ([]uint64, error) {
	if upto <= after || len(blocks) == 0 {
		return nil, nil
	}
	p := versionPrefix(d.ID)
	it, err := r.db.NewIter(&pebble.IterOptions{LowerBound: p, UpperBound: prefixEnd(p)})
	if err != nil {
		return nil, err
	}
	var out []uint64
	for _, b := range blocks {
		if b >= d.Blocks() {
			it.Close()
			return nil, fmt.Errorf("%w: block %d of disk %q", ErrOutOfRange, b, d.Name)
		}
		// ^seq orders a block's versions newest first: from upto down to after+1.
		for ok := it.SeekGE(versionKey(d.ID, b, upto)); ok; ok = it.Next() {
			_, kb, seq, valid := versionBlock(it.Key())
			if !valid {
				it.Close()
				return nil, fmt.Errorf("store: version key %x: %w", it.Key(), ErrCorrupt)
			}
			if kb != b || seq <= after {
				break
			}
			out = append(out, seq)
		}
	}
	if err := errors.Join(it.Error(), it.Close()); err != nil {
		return nil, err
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// PointOf returns the point of timeline tl committed at journal position
// seq, found by bisecting the timeline's times (time order is seq order), or
// ErrNoPoint if no point of tl has that position.
func (r *Repo) PointOf(tl uint32, seq uint64) (Point, error) {
	first, err := r.FirstPoint(tl)
	if err != nil {
		return Point{}, err
	}
	last, err := r.LastPoint(tl)
	if err != nil {
		return Point{}, err
	}
	switch {
	case seq == first.Seq:
		return first, nil
	case seq == last.Seq:
		return last, nil
	case seq < first.Seq || seq > last.Seq:
		return Point{}, fmt.Errorf("%w: position %d", ErrNoPoint, seq)
	}
	// Invariant: the point at lo has Seq < seq, the point at hi has Seq >= seq.
	lo, hi := first.Time.UnixNano(), last.Time.UnixNano()
	for hi-lo > 1 {
		mid := lo + (hi-lo)/2
		p, err := r.PointAt(tl, time.Unix(0, mid))
		if err != nil {
			return Point{}, err
		}
		if p.Seq < seq {
			lo = mid
		} else {
			hi = mid
		}
	}
	p, err := r.PointAt(tl, time.Unix(0, hi))
	if err != nil {
		return Point{}, err
	}
	if p.Seq != seq {
		return Point{}, fmt.Errorf("%w: position %d", ErrNoPoint, seq)
	}
	return p, nil
}
