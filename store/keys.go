package store

import (
	"encoding/binary"
	"time"
)

const (
	kindMeta     = 'm'
	kindDisk     = 'd'
	kindVersion  = 'v'
	kindJournal  = 'j'
	kindPoint    = 't'
	kindBookmark = 'b'
	kindHash     = 'h'
	kindSegment  = 's'
	kindGroup    = 'g'
	kindPolicy   = 'p'

	// Retention and garbage collection (prune.go, gc.go).
	kindRef       = 'r' // a version's reference to its content
	kindContentAt = 'c' // content by location, for rewriting a segment
	kindCandidate = 'z' // content a removed version referenced
	kindUnused    = 'u' // unreferenced bytes of a segment
	kindRetired   = 'x' // a rewritten segment: its content is found through 'h'
)

var (
	metaHead     = []byte{kindMeta, 'h', 'e', 'a', 'd'}
	metaNextDisk = []byte{kindMeta, 'n', 'd', 'i', 's', 'k'}
	// metaSynced is the newest position known durable with all its content;
	// captured steps above it are verified against their hashes on open.
	metaSynced = []byte{kindMeta, 's', 'y', 'n', 'c', 'e', 'd'}
	// metaRefs says every non-zero version has its 'r' key and every
	// content its 'c' key (refs.go builds them for an older index).
	metaRefs = []byte{kindMeta, 'r', 'e', 'f', 's'}
)

func be32(b []byte, v uint32) []byte { return binary.BigEndian.AppendUint32(b, v) }
func be64(b []byte, v uint64) []byte { return binary.BigEndian.AppendUint64(b, v) }

// diskVersionsKey counts the non-zero block versions journaled for a disk.
func diskVersionsKey(disk uint32) []byte { return be32([]byte{kindMeta, 'v'}, disk) }

func diskKey(name string) []byte { return append([]byte{kindDisk}, name...) }

func versionPrefix(disk uint32) []byte { return be32([]byte{kindVersion}, disk) }

func versionKey(disk uint32, block, seq uint64) []byte {
	k := make([]byte, 0, 21)
	k = be32(append(k, kindVersion), disk)
	k = be64(k, block)
	return be64(k, ^seq)
}

// versionBlock decodes the block of a version key of any disk.
func versionBlock(k []byte) (disk uint32, block, seq uint64, ok bool) {
	if len(k) != 21 || k[0] != kindVersion {
		return 0, 0, 0, false
	}
	return binary.BigEndian.Uint32(k[1:]), binary.BigEndian.Uint64(k[5:]), ^binary.BigEndian.Uint64(k[13:]), true
}

func journalKey(seq uint64, disk uint32, block uint64) []byte {
	k := make([]byte, 0, 21)
	k = be64(append(k, kindJournal), seq)
	k = be32(k, disk)
	return be64(k, block)
}

func encodeTime(t time.Time) uint64 { return uint64(t.UnixNano()) ^ (1 << 63) }
func decodeTime(v uint64) time.Time { return time.Unix(0, int64(v^(1<<63))).UTC() }

func pointPrefix(tl uint32) []byte { return be32([]byte{kindPoint}, tl) }

func pointKey(tl uint32, t time.Time) []byte { return be64(pointPrefix(tl), encodeTime(t)) }

func bookmarkPrefix(tl uint32) []byte { return be32([]byte{kindBookmark}, tl) }

func bookmarkKey(tl uint32, name string) []byte { return append(bookmarkPrefix(tl), name...) }

func groupKey(name string) []byte { return append([]byte{kindGroup}, name...) }

func policyKey(tl uint32) []byte { return be32([]byte{kindPolicy}, tl) }

func hashKey(h Hash) []byte { return append([]byte{kindHash}, h[:]...) }

func segmentKey(seg uint32) []byte { return be32([]byte{kindSegment}, seg) }

func refPrefix(h Hash) []byte { return append([]byte{kindRef}, h[:]...) }

func refKey(h Hash, disk uint32, block, seq uint64) []byte {
	k := make([]byte, 0, 1+len(h)+20)
	k = append(append(k, kindRef), h[:]...)
	return be64(be64(be32(k, disk), block), seq)
}

func contentAtKey(seg uint32, off uint64) []byte {
	return be64(be32([]byte{kindContentAt}, seg), off)
}

// contentAtValue is what a location key holds: the content's hash and its
// stored length, so that a segment's live bytes are one scan.
func contentAtValue(h Hash, n uint32) []byte { return be32(append(make([]byte, 0, 36), h[:]...), n) }

const contentAtLen = 32 + 4

func candidateKey(h Hash) []byte { return append([]byte{kindCandidate}, h[:]...) }

func unusedKey(seg uint32) []byte { return be32([]byte{kindUnused}, seg) }

func retiredKey(seg uint32) []byte { return be32([]byte{kindRetired}, seg) }

// prefixEnd is the smallest key greater than every key with prefix p.
func prefixEnd(p []byte) []byte {
	end := append([]byte(nil), p...)
	for i := len(end) - 1; i >= 0; i-- {
		end[i]++
		if end[i] != 0 {
			return end[:i+1]
		}
	}
	return nil
}
