package store

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/cockroachdb/pebble/v2"
)

// Garbage collection must know, for one piece of content, whether any
// version still references it, without walking the index: each non-zero
// version has a reference key beside it ('r' hash | disk | block | seq),
// set and deleted in the same batch as the version. To rewrite a segment it
// must know what content lies in it: each content key has a key by
// location ('c' seg | off → hash), set with it (indexHash).
//
// An index written before these keys existed gets them once, when a writer
// opens it (ensureRefs); metaRefs says they are complete. The marker is
// never recorded in records.log: an index rebuilt from the logs lacks it
// and builds the keys again.

// ensureRefs builds the reference and location keys an older index lacks.
func (r *Repo) ensureRefs() error {
	if _, ok, err := r.get(metaRefs); err != nil || ok {
		return err
	}
	b := r.db.NewBatch()
	flush := func(force bool) error {
		if b.Len() < recoverBatchBytes && !force {
			return nil
		}
		err := b.Commit(pebble.NoSync)
		b.Close()
		b = r.db.NewBatch()
		return err
	}
	defer func() { b.Close() }()
	refs, contents := 0, 0
	err := r.scan([]byte{kindVersion}, func(k, v []byte) error {
		disk, block, seq, ok := versionBlock(k)
		if !ok || !versionValueOK(v) || v[len(Hash{})]&flagZero != 0 {
			return nil
		}
		b.Set(refKey(Hash(v[:len(Hash{})]), disk, block, seq), nil, nil)
		refs++
		return flush(false)
	})
	if err != nil {
		return fmt.Errorf("store: build the index's references: %w", err)
	}
	err = r.scan([]byte{kindHash}, func(k, v []byte) error {
		loc, err := decodeLocation(v)
		if len(k) != 1+len(Hash{}) || err != nil {
			return nil // verify reports it
		}
		b.Set(contentAtKey(loc.seg, loc.off), contentAtValue(Hash(k[1:]), loc.n), nil)
		contents++
		return flush(false)
	})
	if err != nil {
		return fmt.Errorf("store: build the index's content locations: %w", err)
	}
	b.Set(metaRefs, be64(nil, 1), nil)
	if err := b.Commit(pebble.Sync); err != nil {
		return err
	}
	if refs+contents > 0 {
		r.logf("index upgraded for garbage collection: %d references, %d content locations", refs, contents)
	}
	return nil
}

// referenced reports whether any version references content h.
func (r *Repo) referenced(h Hash) (bool, error) {
	p := refPrefix(h)
	it, err := r.db.NewIter(&pebble.IterOptions{LowerBound: p, UpperBound: prefixEnd(p)})
	if err != nil {
		return false, err
	}
	ok := it.First()
	return ok, errors.Join(it.Error(), it.Close())
}

// retiredSet is the segments whose content was moved by garbage
// collection: a version that locates its content in one is read where the
// content index ('h') says it lies now. Replaced whole, never changed.
type retiredSet map[uint32]bool

// loadRetired reads the retired segments of the index.
func (r *Repo) loadRetired() error {
	set := retiredSet{}
	err := r.scan([]byte{kindRetired}, func(k, _ []byte) error {
		if len(k) == 5 {
			set[binary.BigEndian.Uint32(k[1:])] = true
		}
		return nil
	})
	r.retired.Store(&set)
	return err
}

func (r *Repo) isRetired(seg uint32) bool {
	p := r.retired.Load()
	return p != nil && (*p)[seg]
}

// addRetired adds seg to the retired set (the writer, under wmu).
func (r *Repo) addRetired(seg uint32) {
	next := retiredSet{seg: true}
	if p := r.retired.Load(); p != nil {
		for s := range *p {
			next[s] = true
		}
	}
	r.retired.Store(&next)
}

// relocated returns where content h lies now, for a version whose location
// names a retired segment (false: the index no longer knows it).
func (r *Repo) relocated(h Hash) (location, bool, error) {
	v, ok, err := r.get(hashKey(h))
	if err != nil || !ok {
		return location{}, false, err
	}
	loc, err := decodeLocation(v)
	return loc, err == nil, err
}
