package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/zeebo/blake3"
)

// Hash is the BLAKE3-256 digest of a block's content.
type Hash [32]byte

// HashBlock returns the content address of data.
func HashBlock(data []byte) Hash { return blake3.Sum256(data) }

// Location flags.
const (
	flagZero = 1 << iota // all-zero block: no content stored
	flagZstd             // content is a zstd frame

	// flagTried is never stored: prepared content whose compression was
	// already tried.
	flagTried = 1 << 7
)

// location says where one block's content lies in the segment files.
type location struct {
	flags uint8
	seg   uint32
	off   uint64
	n     uint32 // stored length
}

const locationLen = 1 + 4 + 8 + 4

func (l location) append(b []byte) []byte {
	b = append(b, l.flags)
	b = be32(b, l.seg)
	b = be64(b, l.off)
	return be32(b, l.n)
}

func decodeLocation(b []byte) (location, error) {
	if len(b) < locationLen {
		return location{}, fmt.Errorf("store: location of %d bytes: %w", len(b), ErrCorrupt)
	}
	return location{
		flags: b[0],
		seg:   binary.BigEndian.Uint32(b[1:]),
		off:   binary.BigEndian.Uint64(b[5:]),
		n:     binary.BigEndian.Uint32(b[13:]),
	}, nil
}

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
		return nil, fmt.Errorf("store: open segment %d: %w", id, err)
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
		return fmt.Errorf("store: read segment %d at %d (%d bytes): %v: %w", seg, off, n, err, ErrCorrupt)
	}
	return nil
}

// decode turns stored bytes into the block in dst (len(dst) == block size).
func (s *segments) decode(dst, stored []byte, flags uint8) error {
	if flags&flagZstd == 0 {
		if len(stored) != len(dst) {
			return fmt.Errorf("store: raw content of %d bytes for a %d-byte block: %w", len(stored), len(dst), ErrCorrupt)
		}
		copy(dst, stored)
		return nil
	}
	out, err := s.dec.DecodeAll(stored, dst[:0:len(dst)])
	if err != nil || len(out) != len(dst) || &out[0] != &dst[0] {
		return fmt.Errorf("store: decompress block: %v: %w", err, ErrCorrupt)
	}
	return nil
}

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
