package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/zeebo/blake3"
	"github.com/zeebo/xxh3"
)

// Hash is the BLAKE3-256 digest of a block's content.
type Hash [32]byte

// HashBlock returns the content address of data.
func HashBlock(data []byte) Hash { return blake3.Sum256(data) }

// Location flags.
const (
	flagZero = 1 << iota // all-zero block: no content stored
	flagZstd             // content is a zstd frame
	flagSum              // sum holds the checksum of the stored bytes

	// flagTried is never stored: prepared content whose compression was
	// already tried.
	flagTried = 1 << 7
)

// location says where one block's content lies in the segment files, and
// the checksum every read of it is verified against.
type location struct {
	flags uint8
	seg   uint32
	off   uint64
	n     uint32 // stored length
	sum   uint32 // checksum of the n stored bytes, with flagSum
}

// maxStored bounds one block's stored content: blocks are at most
// MaxBlockSize, and compressed content is kept only when it is smaller.
const maxStored = MaxBlockSize

// locationLen is a location as written since read checks came in;
// locationLenV1 one written before, without its checksum (still read:
// such content is checked against its BLAKE3 hash instead).
const (
	locationLen   = 1 + 4 + 8 + 4 + 4
	locationLenV1 = 1 + 4 + 8 + 4
)

func (l location) append(b []byte) []byte {
	b = append(b, l.flags)
	b = be32(b, l.seg)
	b = be64(b, l.off)
	b = be32(b, l.n)
	return be32(b, l.sum)
}

func decodeLocation(b []byte) (location, error) {
	if len(b) != locationLen && len(b) != locationLenV1 {
		return location{}, fmt.Errorf("store: location of %d bytes: %w", len(b), ErrCorrupt)
	}
	l := location{
		flags: b[0],
		seg:   binary.BigEndian.Uint32(b[1:]),
		off:   binary.BigEndian.Uint64(b[5:]),
		n:     binary.BigEndian.Uint32(b[13:]),
	}
	if len(b) == locationLen {
		l.sum = binary.BigEndian.Uint32(b[17:])
	} else if l.flags&flagSum != 0 {
		return location{}, fmt.Errorf("store: location of %d bytes claims a checksum: %w", len(b), ErrCorrupt)
	}
	if l.n > maxStored { // a damaged length must not become an allocation
		return location{}, fmt.Errorf("store: location claims %d stored bytes for one block: %w", l.n, ErrCorrupt)
	}
	return l, nil
}

// versionValueOK reports whether v has the length of a version's value
// (hash | location), of either location format.
func versionValueOK(v []byte) bool {
	return len(v) == len(Hash{})+locationLen || len(v) == len(Hash{})+locationLenV1
}

// checksum is what a location records of stored content: the low 32 bits
// of its XXH3 hash, which this CPU computes at ~30 GB/s over 4 KiB blocks,
// against ~16-19 GB/s for CRC32C and 0.5-1.5 GB/s for BLAKE3, so that every
// read can afford to check it (docs/PERFORMANCE.md). It detects damage
// (a flipped byte goes unseen with odds of 2^-32); the BLAKE3 hash remains
// the content's identity, which verify --full checks.
func checksum(stored []byte) uint32 { return uint32(xxh3.Hash(stored)) }

// ErrCorrupt: a record or content file does not hold what the index says.
var ErrCorrupt = errors.New("store: repository is corrupt")

func (s *segments) file(id uint32) (*os.File, error) {
	s.mu.RLock()
	f := s.files[id]
	s.mu.RUnlock()
	if f != nil {
		return f, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if f = s.files[id]; f != nil {
		return f, nil
	}
	f, err := os.Open(filepath.Join(s.dir, segmentName(id)))
	if err != nil {
		return nil, fmt.Errorf("open segment %s: %w", segmentName(id), err)
	}
	s.files[id] = f
	return f, nil
}

// readRaw reads n stored bytes at off of segment seg into p: from the
// writer's memory where they are not in the file yet.
func (s *segments) readRaw(p []byte, seg uint32, off uint64) error {
	n := s.readMem(p, seg, off)
	if n == 0 {
		return nil
	}
	f, err := s.file(seg)
	if err != nil {
		return err
	}
	if _, err := f.ReadAt(p[:n], int64(off)); err != nil {
		return fmt.Errorf("read %d bytes of segment %s at %d: %w", n, segmentName(seg), off, err)
	}
	return nil
}

// decode turns stored bytes into the block in dst (len(dst) == block size).
func (s *segments) decode(dst, stored []byte, flags uint8) error {
	if flags&flagZstd == 0 {
		if len(stored) != len(dst) {
			return fmt.Errorf("raw content of %d bytes for a %d-byte block: %w", len(stored), len(dst), ErrCorrupt)
		}
		copy(dst, stored)
		return nil
	}
	out, err := s.dec.DecodeAll(stored, dst[:0:len(dst)])
	if err != nil || len(out) != len(dst) || &out[0] != &dst[0] {
		return fmt.Errorf("compressed content does not decode to a block (%v): %w", err, ErrCorrupt)
	}
	return nil
}

// forget closes the files of segments that were removed. A read that took
// one of them just before may still be under way: they are closed a little
// later, not now.
func (s *segments) forget(ids []uint32) {
	s.mu.Lock()
	var fs []*os.File
	for _, id := range ids {
		if f := s.files[id]; f != nil {
			fs = append(fs, f)
			delete(s.files, id)
		}
	}
	s.mu.Unlock()
	if len(fs) > 0 {
		time.AfterFunc(forgetDelay, func() {
			for _, f := range fs {
				f.Close()
			}
		})
	}
}

// forgetDelay is how long a removed segment's file stays open for reads
// already under way.
const forgetDelay = 5 * time.Second

func (s *segments) close() error {
	var errs []error
	if s.w != nil {
		errs = append(errs, s.sync(), s.w.Truncate(int64(s.wLen)), s.w.Close())
		s.w = nil
	}
	errs = append(errs, s.stopWriter())
	s.mu.Lock()
	for _, f := range s.files {
		errs = append(errs, f.Close())
	}
	s.files = nil
	s.mu.Unlock()
	if s.enc != nil {
		errs = append(errs, s.enc.Close())
	}
	s.dec.Close()
	return errors.Join(errs...)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// LogicalBytes is what the non-zero block versions ever journaled for d
// would take uncompressed and without dedupe: against ContentBytes, the
// reduction the journal achieves.
func (r *Repo) LogicalBytes(d Disk) (int64, error) {
	n, err := r.getU64(diskVersionsKey(d.ID))
	return int64(n) * int64(d.BlockSize), err
}

// ContentBytes is the size of all stored content: what the repository costs
// beyond its index.
func (r *Repo) ContentBytes() (int64, error) {
	ids, err := listSegments(filepath.Join(r.dir, "segments"))
	if err != nil {
		return 0, err
	}
	var n int64
	for _, id := range ids {
		fi, err := os.Stat(filepath.Join(r.dir, "segments", segmentName(id)))
		if err != nil {
			return 0, err
		}
		n += fi.Size()
	}
	return n, nil
}
