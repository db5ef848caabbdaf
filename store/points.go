package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

func decodePoint(k, v []byte) (Point, error) {
	if len(k) != 13 || len(v) != 16 {
		return Point{}, fmt.Errorf("store: point record %x: %w", k, ErrCorrupt)
	}
	return Point{Time: decodeTime(binary.BigEndian.Uint64(k[5:])), Seq: u64(v), Blocks: u64(v[8:])}, nil
}

// pointIter iterates the points of timeline tl.
func (r *Repo) pointIter(tl uint32) (*pebble.Iterator, error) {
	p := pointPrefix(tl)
	return r.db.NewIter(&pebble.IterOptions{LowerBound: p, UpperBound: prefixEnd(p)})
}

// one positions a point iterator with pos and decodes where it lands.
func (r *Repo) one(tl uint32, pos func(*pebble.Iterator) bool) (Point, error) {
	it, err := r.pointIter(tl)
	if err != nil {
		return Point{}, err
	}
	defer it.Close()
	if !pos(it) {
		if err := it.Error(); err != nil {
			return Point{}, err
		}
		return Point{}, ErrNoPoint
	}
	return decodePoint(it.Key(), it.Value())
}

// FirstPoint is the oldest point of timeline tl, or ErrNoPoint.
func (r *Repo) FirstPoint(tl uint32) (Point, error) {
	return r.one(tl, (*pebble.Iterator).First)
}

// LastPoint is the newest point of timeline tl, or ErrNoPoint.
func (r *Repo) LastPoint(tl uint32) (Point, error) {
	return r.one(tl, (*pebble.Iterator).Last)
}

// PointAt is the newest point of timeline tl at or before t, or ErrNoPoint.
func (r *Repo) PointAt(tl uint32, t time.Time) (Point, error) {
	key := append(pointKey(tl, t), 0) // just above t's own key
	p, err := r.one(tl, func(it *pebble.Iterator) bool { return it.SeekLT(key) })
	if errors.Is(err, ErrNoPoint) {
		return Point{}, fmt.Errorf("%w: %s", ErrNoPoint, t.UTC().Format(time.RFC3339Nano))
	}
	return p, err
}

// Points returns up to limit points of timeline tl in [since, until], oldest
// first; with limit > 0 the newest ones in the range are kept.
func (r *Repo) Points(tl uint32, since, until time.Time, limit int) ([]Point, error) {
	it, err := r.db.NewIter(&pebble.IterOptions{
		LowerBound: pointKey(tl, since),
		UpperBound: append(pointKey(tl, until), 0), // until inclusive
	})
	if err != nil {
		return nil, err
	}
	defer it.Close()
	var out []Point
	for ok := it.Last(); ok && (limit <= 0 || len(out) < limit); ok = it.Prev() {
		p, err := decodePoint(it.Key(), it.Value())
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	if err := it.Error(); err != nil {
		return nil, err
	}
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out, nil
}

// Skim returns points of timeline tl in [from, to) with one seek each: the
// first point at or after from, then the first at or after next(t) of the
// previous one's time t, and so on, at most limit (0: no limit). With next
// the start of the following minute, it lists the minutes that hold points at
// the cost of one seek per minute, however many points each holds.
func (r *Repo) Skim(tl uint32, from, to time.Time, next func(time.Time) time.Time, limit int) ([]Point, error) {
	it, err := r.db.NewIter(&pebble.IterOptions{LowerBound: pointKey(tl, from), UpperBound: pointKey(tl, to)})
	if err != nil {
		return nil, err
	}
	defer it.Close()
	var out []Point
	for ok := it.First(); ok && (limit <= 0 || len(out) < limit); {
		p, err := decodePoint(it.Key(), it.Value())
		if err != nil {
			return nil, err
		}
		out = append(out, p)
		n := next(p.Time)
		if !n.After(p.Time) {
			return nil, fmt.Errorf("store: skim: next(%s) is not later", p.Time)
		}
		ok = it.SeekGE(pointKey(tl, n))
	}
	return out, it.Error()
}
