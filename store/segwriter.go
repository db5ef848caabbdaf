package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/klauspost/compress/zstd"
	"golang.org/x/sys/unix"
)

// Appends to the newest segment go through aligned in-memory chunks that a
// background goroutine writes with O_DIRECT once full: the content reaches
// the device without being copied into the page cache first, which was the
// largest single cost of journaling a write (a page-cache copy costs as much
// as the whole write of a plain file). Content in a chunk not yet written is
// read from memory. Sync writes the partly filled chunk up to the next
// alignment boundary and fdatasyncs; the padding past the committed length
// is overwritten by later appends and cut off on open. Filesystems without
// O_DIRECT get the same chunks through the page cache.

const (
	// maxSegment bounds a segment file (and so one frame) when reading.
	maxSegment = 1 << 30
	// segmentLimit is the size at which the writer starts a new segment:
	// garbage collection rewrites whole segments, so smaller ones give
	// space back in smaller pieces, for less copying.
	segmentLimit = 256 << 20
	// chunkSize is one O_DIRECT write; up to chunksInFlight of them wait for
	// the disk while appends fill the next.
	chunkSize      = 8 << 20
	chunksInFlight = 2
	// directAlign is the alignment O_DIRECT needs of offsets, lengths and
	// memory: 4 KiB suits 512-byte and 4 KiB logical sectors alike.
	directAlign = 4096
)

// segments reads and (for the writer) appends content. Reads are safe from
// any goroutine; appends come from the one writer goroutine that holds Repo.wmu.
type segments struct {
	dir string

	mu    sync.RWMutex
	files map[uint32]*os.File

	dec *zstd.Decoder

	// Writer state, nil/zero for read-only repositories.
	enc     *zstd.Encoder
	scratch sync.Pool // *[]byte for compression attempts
	w       *os.File
	direct  bool // w was opened with O_DIRECT
	// limit is the size at which a new segment starts (maxSegment; tests
	// lower it), noDirect turns O_DIRECT off (tests of the fallback).
	limit    uint64
	noDirect bool
	wID      uint32
	wLen     uint64 // committed content plus appended content
	sealed   []sealed

	// mem holds the content of segment wID from mem[0].base to wLen that may
	// not be in the file yet: full chunks queued for the flusher, then the
	// active chunk (the last). memMu guards the slice against readers;
	// chunk bytes below wLen never change while a chunk is in mem.
	memMu   sync.RWMutex
	memSeg  uint32 // the segment mem belongs to
	mem     []*chunk
	free    []*chunk
	written uint64 // bytes of the active chunk already in the file (Sync)

	flush   chan *chunk // full chunks, in order, to the flusher
	flushed chan error  // one result per chunk written
	queued  int         // chunks sent and not yet acknowledged on flushed
	err     error       // first write error: the writer is unusable after it

	// admit refuses content when the filesystem's reserve is reached
	// (Repo.space; nil: no check), before anything of it is appended.
	admit func(n uint64) error
	// unwritten is how many appended bytes may not have reached the
	// kernel yet (noteUnwritten), for the guard, read from any goroutine.
	unwritten atomic.Int64
}

// noteUnwritten records the appended bytes not yet handed to the kernel:
// the chunks in flight (counted whole) and the active chunk's new bytes.
func (s *segments) noteUnwritten() {
	n := int64(s.queued) * chunkSize
	if k := len(s.mem); k > 0 {
		n += int64(s.mem[k-1].n) - int64(s.written)
	}
	s.unwritten.Store(max(n, 0))
}

// chunk is aligned memory holding the segment's bytes [base, base+n).
type chunk struct {
	base uint64
	data []byte
	n    int
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
	return &segments{dir: dir, files: map[uint32]*os.File{}, dec: dec, limit: segmentLimit}, nil
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
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(runtime.GOMAXPROCS(0)))
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
	flags := os.O_RDWR
	if n == 0 { // a segment with committed content is never made anew
		flags |= os.O_CREATE
	}
	s.flush, s.flushed = make(chan *chunk, chunksInFlight), make(chan error, chunksInFlight)
	go s.flusher(s.flush, s.flushed)
	if err := s.start(id, n, flags); err != nil {
		return err
	}
	if n == 0 { // a segment maybe just created: its name must outlive a power cut
		return syncDir(s.dir)
	}
	return nil
}

// start makes segment id, cut to n committed bytes, the one appended to.
func (s *segments) start(id uint32, n uint64, flags int) error {
	name := filepath.Join(s.dir, segmentName(id))
	f, direct, err := openDirect(name, flags, !s.noDirect)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			err = fmt.Errorf("%w: segments/%s is missing (%d bytes committed); run 'hindsight verify'", ErrCorrupt, segmentName(id), n)
		}
		return fmt.Errorf("store: open segment %d: %w", id, err)
	}
	if fi, err := f.Stat(); err != nil || uint64(fi.Size()) < n {
		f.Close()
		if err == nil {
			err = fmt.Errorf("%w: segments/%s holds %d bytes, less than the %d committed; run 'hindsight verify'", ErrCorrupt, segmentName(id), fi.Size(), n)
		}
		return err
	}
	if err := f.Truncate(int64(n)); err != nil {
		f.Close()
		return fmt.Errorf("store: cut uncommitted tail of segment %d: %w", id, err)
	}
	c, err := s.newChunk()
	if err != nil {
		f.Close()
		return err
	}
	// The active chunk starts at the aligned offset at or below n, holding
	// the committed bytes between (read through a buffered descriptor).
	c.base = n &^ (directAlign - 1)
	c.n = int(n - c.base)
	if c.n > 0 {
		rf, err := os.Open(name)
		if err == nil {
			_, err = rf.ReadAt(c.data[:c.n], int64(c.base))
			rf.Close()
		}
		if err != nil {
			f.Close()
			s.free = append(s.free, c)
			return fmt.Errorf("store: read tail of segment %d: %w", id, err)
		}
	}
	s.memMu.Lock()
	s.mem, s.memSeg = []*chunk{c}, id
	s.memMu.Unlock()
	s.w, s.direct, s.wID, s.wLen, s.written = f, direct, id, n, uint64(c.n)
	s.noteUnwritten()
	return nil
}

// openDirect opens name for writing with O_DIRECT where the filesystem
// takes direct writes aligned as ours are (some refuse the flag, some
// accept it but want larger alignment), else without.
func openDirect(name string, flags int, try bool) (*os.File, bool, error) {
	if try {
		f, err := os.OpenFile(name, flags|syscall.O_DIRECT, 0o600)
		if err == nil && directAligned(f) {
			return f, true, nil
		}
		if err == nil {
			f.Close()
		} else if !errors.Is(err, syscall.EINVAL) {
			return nil, false, err
		}
	}
	f, err := os.OpenFile(name, flags, 0o600)
	return f, false, err
}

// directAligned reports whether f takes direct I/O at directAlign: the
// kernel says so through statx (Linux 6.1 and later).
func directAligned(f *os.File) bool {
	var st unix.Statx_t
	if unix.Statx(int(f.Fd()), "", unix.AT_EMPTY_PATH, unix.STATX_DIOALIGN, &st) != nil || st.Mask&unix.STATX_DIOALIGN == 0 {
		return false
	}
	return st.Dio_offset_align != 0 && directAlign%st.Dio_offset_align == 0 && directAlign%st.Dio_mem_align == 0
}

func (s *segments) newChunk() (*chunk, error) {
	if n := len(s.free); n > 0 {
		c := s.free[n-1]
		s.free = s.free[:n-1]
		c.n = 0
		return c, nil
	}
	// Anonymous mappings are page-aligned, as O_DIRECT wants.
	data, err := unix.Mmap(-1, 0, chunkSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANON)
	if err != nil {
		return nil, fmt.Errorf("store: segment buffer: %w", err)
	}
	return &chunk{data: data}, nil
}

// compress returns data's stored form: a zstd frame when that saves at
// least an eighth, else data itself. Safe for concurrent use.
func (s *segments) compress(data []byte) ([]byte, uint8) {
	if !mayCompress(data) {
		return data, flagTried
	}
	scratch, _ := s.scratch.Get().(*[]byte)
	if scratch == nil {
		scratch = new([]byte)
	}
	defer s.scratch.Put(scratch)
	c := s.enc.EncodeAll(data, (*scratch)[:0])
	*scratch = c[:0]
	if len(c) <= len(data)-len(data)/8 {
		return bytes.Clone(c), flagTried | flagZstd
	}
	return data, flagTried // most captured data: nothing allocated
}

// reserve returns where n bytes appended next will lie, starting a new
// segment first if they would not fit in this one.
func (s *segments) reserve(n uint64) (uint32, uint64, error) {
	if s.wLen+n > s.limit && s.wLen > 0 {
		if err := s.rotate(); err != nil {
			return 0, 0, err
		}
	}
	return s.wID, s.wLen, s.err
}

// mayCompress looks at a sample of b (32 runs of 16 bytes spread over it)
// and reports whether compressing it could pay: not when the sample's bytes
// are spread like random data (encrypted or compressed content, much of
// what a busy disk writes) and no run repeats. A zstd attempt that fails
// costs about as much as hashing the block; this a small part of that. It
// can miss a random pattern repeated at a period the runs do not meet: a
// compression lost, nothing else.
func mayCompress(b []byte) bool {
	const runs, run = 32, 16
	if len(b) < 2*runs*run {
		return true
	}
	// Stores to a byte table and word arithmetic, not a bit set updated in
	// place per byte, which chained every byte on the one before.
	var present [256]byte
	var seen [runs]uint64
	stride := len(b) / runs
	pairs := 0
	for i := range runs {
		r := b[i*stride : i*stride+run]
		lo, hi := binary.LittleEndian.Uint64(r), binary.LittleEndian.Uint64(r[8:])
		seen[i] = lo ^ hi*0x9e3779b97f4a7c15
		for _, c := range r {
			present[c] = 1
		}
		// Neighbours alike: zero bytes of each word xor itself shifted by
		// one byte (7 pairs a word), and the pair across the two words.
		pairs += zeroBytes(lo^lo>>8, 7) + zeroBytes(hi^hi>>8, 7)
		if byte(lo>>56) == byte(hi) {
			pairs++
		}
	}
	distinct := 0
	for i := 0; i < len(present); i += 8 {
		distinct += int(binary.LittleEndian.Uint64(present[i:]) * 0x0101010101010101 >> 56)
	}
	// 512 random bytes show about 221 distinct values and about 2 pairs of
	// neighbours alike; text, zeros, runs and sparse data fall far short. A
	// value common but scattered (fio's "random" buffers fix a byte of some
	// words) passes: zstd's fastest level gains nothing from it.
	if distinct < 190 || pairs >= 8 {
		return true
	}
	return repeats(&seen) // a repeated run: a pattern zstd may find
}

// repeats reports whether two of the runs' signatures are equal, through a
// 64-slot table probed from each signature's top bits (a sort took a third
// of mayCompress's time).
func repeats(sigs *[32]uint64) bool {
	var table [64]uint64
	var used uint64
	for _, v := range sigs {
		for i := v >> 58; ; i = (i + 1) & 63 {
			if used&(1<<i) == 0 {
				table[i], used = v, used|1<<i
				break
			}
			if table[i] == v {
				return true
			}
		}
	}
	return false
}

// zeroBytes counts the zero bytes among the low n bytes of x, exactly.
func zeroBytes(x uint64, n int) int {
	const low7 = 0x7f7f7f7f7f7f7f7f
	z := ^((x&low7 + low7) | x | low7) // the high bit of each zero byte
	return bits.OnesCount64(z & (1<<(8*n) - 1))
}

// add appends one block's stored content (flags: flagZstd or 0) and returns
// where it lies.
func (s *segments) add(stored []byte, flags uint8) (location, error) {
	if s.admit != nil {
		if err := s.admit(uint64(len(stored))); err != nil {
			return location{}, err
		}
	}
	return s.put(stored, flags)
}

// put is add without the reserve's check, for garbage collection: it
// copies content to give space back, and checks the room for it itself.
func (s *segments) put(stored []byte, flags uint8) (location, error) {
	seg, off, err := s.reserve(uint64(len(stored)))
	if err != nil {
		return location{}, err
	}
	loc := location{flags: flags | flagSum, seg: seg, off: off, n: uint32(len(stored)), sum: checksum(stored)}
	if err := s.append(stored); err != nil {
		return location{}, err
	}
	return loc, nil
}

// append copies p after the segment's content, handing full chunks to the
// flusher.
func (s *segments) append(p []byte) error {
	if s.err != nil {
		return s.err
	}
	for len(p) > 0 {
		a := s.mem[len(s.mem)-1]
		k := copy(a.data[a.n:], p)
		a.n += k
		s.wLen += uint64(k)
		p = p[k:]
		if a.n < len(a.data) {
			continue
		}
		next, err := s.newChunk()
		if err != nil {
			return err
		}
		next.base = a.base + uint64(len(a.data))
		s.memMu.Lock()
		s.mem = append(s.mem, next)
		s.memMu.Unlock()
		if s.queued == chunksInFlight {
			if err := s.reap(); err != nil {
				return err
			}
		}
		s.flush <- a
		s.queued++
		s.written = 0
	}
	s.noteUnwritten()
	return nil
}

// flusher writes full chunks in order, for the writer's lifetime.
func (s *segments) flusher(in <-chan *chunk, out chan<- error) {
	for c := range in {
		out <- s.writeChunk(c, 0, len(c.data))
	}
}

// writeChunk writes bytes [from, to) of c (both aligned) at their place in
// the file.
func (s *segments) writeChunk(c *chunk, from, to int) error {
	_, err := s.w.WriteAt(c.data[from:to], int64(c.base)+int64(from))
	if err != nil {
		return fmt.Errorf("store: write segment %d at %d: %w", s.wID, c.base+uint64(from), err)
	}
	return nil
}

// reap waits for the oldest chunk in flight and lets its memory go.
func (s *segments) reap() error {
	err := <-s.flushed
	s.queued--
	if err != nil {
		s.err = err
		return err
	}
	s.memMu.Lock()
	c := s.mem[0]
	s.mem = s.mem[1:]
	s.memMu.Unlock()
	s.free = append(s.free, c)
	s.noteUnwritten()
	return nil
}

// write hands every appended byte to the kernel, so that other processes
// (readers of a published view) can read it.
func (s *segments) write() error {
	if s.err != nil {
		return s.err
	}
	for s.queued > 0 {
		if err := s.reap(); err != nil {
			return err
		}
	}
	a := s.mem[len(s.mem)-1]
	if uint64(a.n) == s.written {
		return nil
	}
	// From the aligned start of what is new to the alignment boundary past
	// it: the padding is overwritten later.
	from := int(s.written) &^ (directAlign - 1)
	to := (a.n + directAlign - 1) &^ (directAlign - 1)
	clear(a.data[a.n:to])
	if err := s.writeChunk(a, from, to); err != nil {
		s.err = err
		return err
	}
	s.written = uint64(a.n)
	s.noteUnwritten()
	return nil
}

// sync makes every appended byte durable; it must precede the commit of any
// batch that references them.
func (s *segments) sync() error {
	if err := s.write(); err != nil {
		return err
	}
	if err := s.w.Sync(); err != nil {
		s.err = fmt.Errorf("store: sync segment %d: %w", s.wID, err)
		return s.err
	}
	return nil
}

// rotate seals the current segment and starts the next. The sealed segment's
// length is recorded by the next batch through committedSegments.
func (s *segments) rotate() error {
	if err := s.sync(); err != nil {
		return err
	}
	// The file carries padding past the content: cut it, so that its size
	// is its length.
	if err := s.w.Truncate(int64(s.wLen)); err != nil {
		return err
	}
	if err := s.w.Close(); err != nil {
		return err
	}
	s.sealed = append(s.sealed, sealed{s.wID, s.wLen})
	s.memMu.Lock()
	s.free = append(s.free, s.mem...)
	s.mem = nil
	s.memMu.Unlock()
	if err := s.start(s.wID+1, 0, os.O_RDWR|os.O_CREATE|os.O_TRUNC); err != nil {
		return err
	}
	return syncDir(s.dir)
}

// readMem copies the part of [off, off+len(p)) of segment seg that is held
// in memory and returns how many leading bytes of p remain to be read from
// the file (all of them when nothing is in memory).
func (s *segments) readMem(p []byte, seg uint32, off uint64) int {
	s.memMu.RLock()
	defer s.memMu.RUnlock()
	if len(s.mem) == 0 || seg != s.memSeg {
		return len(p)
	}
	start := s.mem[0].base
	end := off + uint64(len(p))
	if end <= start {
		return len(p)
	}
	// Whatever a reader asks for is content appended already: the chunks'
	// fill counts (the writer's) need not be consulted.
	from := max(off, start)
	for _, c := range s.mem {
		if from >= end {
			break
		}
		cend := c.base + uint64(len(c.data))
		if from >= cend {
			continue
		}
		k := copy(p[from-off:end-off], c.data[from-c.base:])
		from += uint64(k)
	}
	return int(max(off, start) - off)
}

// stopWriter ends the flusher and releases the chunks; content not yet
// written is dropped (close syncs first).
func (s *segments) stopWriter() error {
	if s.flush == nil {
		return nil
	}
	close(s.flush)
	for s.queued > 0 {
		<-s.flushed
		s.queued--
	}
	s.flush = nil
	s.memMu.Lock()
	all := append(s.free, s.mem...)
	s.mem, s.free = nil, nil
	s.memMu.Unlock()
	var errs []error
	for _, c := range all {
		errs = append(errs, unix.Munmap(c.data))
	}
	return errors.Join(errs...)
}
