package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/klauspost/compress/zstd"
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

// maxSegment is the size at which the writer starts a new segment file.
const maxSegment = 1 << 30

// segments reads and (for the writer) appends content. Reads are safe from
// any goroutine; appends come from the one writer goroutine that holds Repo.wmu.
type segments struct {
	dir string

	mu    sync.RWMutex
	files map[uint32]*os.File

	dec *zstd.Decoder

	// Writer state, nil/zero for read-only repositories.
	enc     *zstd.Encoder
	w       *os.File
	wID     uint32
	wLen    uint64 // bytes in the file plus pending
	pending []byte // appended, not yet written to w
	sealed  []sealed
}

// sealed is a segment closed by rotation whose final length is not yet recorded.
type sealed struct {
	id uint32
	n  uint64
}

// takeSealed returns and forgets the segments sealed since the last call.
func (s *segments) takeSealed() []sealed {
	out := s.sealed
	s.sealed = nil
	return out
}

func openSegments(dir string) (*segments, error) {
	dec, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(runtime.GOMAXPROCS(0)))
	if err != nil {
		return nil, err
	}
	return &segments{dir: dir, files: map[uint32]*os.File{}, dec: dec}, nil
}

func segmentName(id uint32) string { return fmt.Sprintf("%08x.seg", id) }

// listSegments returns the ids of the segment files, ascending.
func listSegments(dir string) ([]uint32, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var ids []uint32
	for _, e := range ents {
		name, ok := strings.CutSuffix(e.Name(), ".seg")
		if !ok {
			continue
		}
		id, err := strconv.ParseUint(name, 16, 32)
		if err != nil {
			continue
		}
		ids = append(ids, uint32(id))
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	return ids, nil
}

// openWriter prepares appends after the newest segment's committed length;
// bytes past it belong to a step that never committed and are cut off.
func (s *segments) openWriter(committed func(seg uint32) (uint64, error)) error {
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1))
	if err != nil {
		return err
	}
	s.enc = enc
	ids, err := listSegments(s.dir)
	if err != nil {
		return err
	}
	id := uint32(1)
	if len(ids) > 0 {
		id = ids[len(ids)-1]
	}
	n, err := committed(id)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(filepath.Join(s.dir, segmentName(id)), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	if err := f.Truncate(int64(n)); err != nil {
		f.Close()
		return fmt.Errorf("store: cut uncommitted tail of segment %d: %w", id, err)
	}
	s.w, s.wID, s.wLen = f, id, n
	return nil
}

// add stores one block's content (not all zero) and returns where it lies.
func (s *segments) add(data []byte) (location, error) {
	c := s.enc.EncodeAll(data, make([]byte, 0, len(data)))
	loc := location{}
	if len(c) <= len(data)-len(data)/8 {
		loc.flags = flagZstd
	} else {
		c = data
	}
	if s.wLen+uint64(len(c)) > maxSegment && s.wLen > 0 {
		if err := s.rotate(); err != nil {
			return location{}, err
		}
	}
	loc.seg, loc.off, loc.n = s.wID, s.wLen, uint32(len(c))
	s.pending = append(s.pending, c...)
	s.wLen += uint64(len(c))
	if len(s.pending) >= 8<<20 {
		if err := s.write(); err != nil {
			return location{}, err
		}
	}
	return loc, nil
}

// write hands pending content to the kernel.
func (s *segments) write() error {
	if len(s.pending) == 0 {
		return nil
	}
	off := int64(s.wLen) - int64(len(s.pending))
	if _, err := s.w.WriteAt(s.pending, off); err != nil {
		return fmt.Errorf("store: write segment %d: %w", s.wID, err)
	}
	s.pending = s.pending[:0]
	return nil
}

// sync makes every appended byte durable; it must precede the commit of any
// batch that references them.
func (s *segments) sync() error {
	if err := s.write(); err != nil {
		return err
	}
	if err := s.w.Sync(); err != nil {
		return fmt.Errorf("store: sync segment %d: %w", s.wID, err)
	}
	return nil
}

// rotate seals the current segment and starts the next. The sealed segment's
// length is recorded by the next batch through committedSegments.
func (s *segments) rotate() error {
	if err := s.sync(); err != nil {
		return err
	}
	if err := s.w.Close(); err != nil {
		return err
	}
	s.sealed = append(s.sealed, sealed{s.wID, s.wLen})
	id := s.wID + 1
	f, err := os.OpenFile(filepath.Join(s.dir, segmentName(id)), os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if err := syncDir(s.dir); err != nil {
		f.Close()
		return err
	}
	s.w, s.wID, s.wLen = f, id, 0
	return nil
}

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

// readRaw reads n stored bytes at off of segment seg into p.
func (s *segments) readRaw(p []byte, seg uint32, off uint64) error {
	f, err := s.file(seg)
	if err != nil {
		return err
	}
	if _, err := f.ReadAt(p, int64(off)); err != nil {
		return fmt.Errorf("store: read segment %d at %d (%d bytes): %v: %w", seg, off, len(p), err, ErrCorrupt)
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
		errs = append(errs, s.sync(), s.w.Close())
	}
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
