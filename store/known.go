package store

import (
	"context"
	"encoding/binary"
	"errors"
	"math/bits"
	"sync"

	"github.com/cockroachdb/pebble/v2"
)

// The writer asks the index whether it holds a block's content already
// (dedupe) for every new block it journals. For live writes the answer is
// nearly always no, and pebble finds that out by a seek in its memtables, a
// skiplist of every key written lately: about a quarter of the CPU of a
// captured 4 KiB write (docs/PERFORMANCE.md). knownHashes is a Bloom
// filter of every content hash in the index, so that a miss costs a cache
// line or two instead, and the index is asked only when the filter says it
// may hold the hash.
//
// A goroutine builds it from the index when the writer opens; until that is
// done every lookup asks the index. From the start the writer adds each
// hash it indexes (indexHash), so nothing indexed while the scan runs is
// missed. A hash whose key is ever deleted keeps its bits: a false "may",
// which only costs the lookup the filter was there to save.

// knownHashes is a growing Bloom filter of content hashes. Safe for
// concurrent use.
type knownHashes struct {
	mu    sync.Mutex
	parts []*hashBloom  // all full but the last, which takes new hashes
	built chan struct{} // closed once the index's hashes are in: a "no" is certain
}

// hashBloom is a blocked Bloom filter: each hash sets bloomProbes bits within
// one 512-bit block (one cache line). BLAKE3 hashes are uniform, so their
// own bytes choose the block and the bits.
type hashBloom struct {
	words    []uint64
	n, limit int // hashes added, and how many it takes at bloomBits each
}

const (
	bloomBits   = 12 // bits per hash: under 1% false "may" (TestKnownHashes)
	bloomProbes = 7  // bits set per hash, 9 bits of the hash each
	bloomFirst  = 1 << 16
)

func newBloom(limit int) *hashBloom {
	blocks := max((limit*bloomBits+511)/512, 1)
	return &hashBloom{words: make([]uint64, blocks*8), limit: limit}
}

// block returns the 8 words of h's block and the bits to test or set in it.
func (b *hashBloom) block(h *Hash) ([]uint64, uint64) {
	hi, _ := bits.Mul64(binary.LittleEndian.Uint64(h[0:]), uint64(len(b.words)/8))
	return b.words[hi*8 : hi*8+8], binary.LittleEndian.Uint64(h[8:])
}

func (b *hashBloom) add(h *Hash) {
	w, sel := b.block(h)
	for range bloomProbes {
		w[sel>>6&7] |= 1 << (sel & 63)
		sel >>= 9
	}
	b.n++
}

func (b *hashBloom) has(h *Hash) bool {
	w, sel := b.block(h)
	for range bloomProbes {
		if w[sel>>6&7]&(1<<(sel&63)) == 0 {
			return false
		}
		sel >>= 9
	}
	return true
}

func newKnownHashes() *knownHashes {
	return &knownHashes{parts: []*hashBloom{newBloom(bloomFirst)}, built: make(chan struct{})}
}

// add records that the index holds (or is about to hold) h.
func (k *knownHashes) add(h Hash) {
	k.mu.Lock()
	k.parts = addTo(k.parts, &h)
	k.mu.Unlock()
}

// addTo adds h to the last of parts, first appending a new part as big as
// all before it if the last is full.
func addTo(parts []*hashBloom, h *Hash) []*hashBloom {
	if last := parts[len(parts)-1]; last.n >= last.limit {
		parts = append(parts, newBloom(2*last.limit))
	}
	parts[len(parts)-1].add(h)
	return parts
}

// mayHold reports whether the index may hold h: false only if it surely
// does not. A nil filter (a reader's repository) knows nothing.
func (k *knownHashes) mayHold(h Hash) bool {
	if k == nil {
		return true
	}
	select {
	case <-k.built:
	default:
		return true
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, p := range k.parts {
		if p.has(&h) {
			return true
		}
	}
	return false
}

// adopt takes the parts a scan of the index built and makes "no" certain.
func (k *knownHashes) adopt(parts []*hashBloom) {
	k.mu.Lock()
	k.parts = append(parts, k.parts...)
	k.mu.Unlock()
	close(k.built) // after the parts: whoever sees it closed sees them
}

// indexHash records in b that content h lies at loc (encoded), and adds h
// to the writer's filter.
func (r *Repo) indexHash(b *pebble.Batch, h Hash, loc []byte) {
	b.Set(hashKey(h), loc, nil)
	if len(loc) >= 17 {
		b.Set(contentAtKey(binary.BigEndian.Uint32(loc[1:]), binary.BigEndian.Uint64(loc[5:])), contentAtValue(h, binary.BigEndian.Uint32(loc[13:])), nil)
	}
	r.known.add(h)
}

// startKnown scans the index's content hashes into r.known in the
// background; the returned function stops the scan and waits for it.
func (r *Repo) startKnown() (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		parts, err := r.scanHashes(ctx)
		if err != nil {
			if !errors.Is(err, context.Canceled) {
				r.logf("dedupe filter not built (every new block is looked up in the index instead): %v", err)
			}
			return
		}
		r.known.adopt(parts)
	}()
	return func() { cancel(); <-done }
}

// scanHashes builds filter parts holding every content hash of the index.
// The first part is sized for as many hashes as the index can hold: no more
// than its non-zero versions (content is stored once), nor than its tables
// have room for at 32 incompressible bytes a hash; a long history of few
// distinct blocks would otherwise size it by its versions. Hashes beyond
// that (in the memtable, or of steps cut off) go to parts added on the way.
func (r *Repo) scanHashes(ctx context.Context) ([]*hashBloom, error) {
	versions := 0
	it, err := r.db.NewIter(&pebble.IterOptions{LowerBound: []byte{kindMeta, 'v'}, UpperBound: []byte{kindMeta, 'v' + 1}})
	if err != nil {
		return nil, err
	}
	for it.First(); it.Valid(); it.Next() {
		if len(it.Value()) == 8 {
			versions += int(binary.BigEndian.Uint64(it.Value()))
		}
	}
	if err := errors.Join(it.Error(), it.Close()); err != nil {
		return nil, err
	}
	tables, err := r.db.EstimateDiskUsage([]byte{kindHash}, []byte{kindHash + 1})
	if err != nil {
		return nil, err
	}
	parts := []*hashBloom{newBloom(bloomFirst + min(versions, int(tables/32)))}
	if it, err = r.db.NewIter(&pebble.IterOptions{LowerBound: []byte{kindHash}, UpperBound: []byte{kindHash + 1}}); err != nil {
		return nil, err
	}
	defer it.Close()
	n := 0
	for it.First(); it.Valid(); it.Next() {
		if n++; n%4096 == 0 && ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if len(it.Key()) != 1+len(Hash{}) {
			continue
		}
		parts = addTo(parts, (*Hash)(it.Key()[1:]))
	}
	return parts, it.Error()
}
