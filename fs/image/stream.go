package image

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"runtime"

	"github.com/klauspost/compress/zlib"
	"golang.org/x/sync/errgroup"
)

// Sparse extent constants (Virtual Disk Format 5.0, "Hosted Sparse Extent
// Header" and "Stream-Optimized Compressed Sparse Extents").
const (
	grainSectors  = 128 // 64 KiB grains
	grainBytes    = grainSectors * SectorSize
	gtEntries     = 512
	gtSectors     = gtEntries * 4 / SectorSize
	descSectors   = 20  // room for the embedded descriptor, as VMware and qemu reserve
	firstGrain    = 128 // overHead: grains start at 64 KiB, as in VMware's files
	gdAtEnd       = math.MaxUint64
	flagNewline   = 1 << 0
	flagCompress  = 1 << 16
	flagMarkers   = 1 << 17
	deflateMethod = 1

	markerEOS    = 0
	markerGT     = 1
	markerGD     = 2
	markerFooter = 3

	grainHeader = 12 // lba u64 | compressed size u32
)

// grainSlot holds one grain on its way from raw to the output.
type grainSlot struct {
	raw  []byte
	out  bytes.Buffer // grainHeader | zlib data | padding to a sector
	zw   *zlib.Writer
	zero bool
}

// load reads grain g (n bytes) and compresses it unless it is all zeros.
func (s *grainSlot) load(raw io.ReaderAt, g int64, n int) error {
	buf := s.raw[:n]
	got, err := raw.ReadAt(buf, g*grainBytes)
	if err = rawErr(got, n, err); err != nil {
		return err
	}
	s.zero = bytes.Equal(buf, zeroGrain[:n])
	if s.zero {
		return nil
	}
	s.out.Reset()
	var hdr [grainHeader]byte
	s.out.Write(hdr[:])
	s.zw.Reset(&s.out)
	if _, err := s.zw.Write(buf); err != nil {
		return err
	}
	if err := s.zw.Close(); err != nil {
		return err
	}
	b := s.out.Bytes()
	binary.LittleEndian.PutUint64(b, uint64(g*grainSectors))
	binary.LittleEndian.PutUint32(b[8:], uint32(len(b)-grainHeader))
	s.out.Write(zeroGrain[:pad(len(b))])
	return nil
}

var zeroGrain [grainBytes]byte

// pad is the number of zero bytes that round n up to a sector.
func pad(n int) int { return (SectorSize - n%SectorSize) % SectorSize }

// streamWriter tracks the output position in sectors.
type streamWriter struct {
	w   *bufio.Writer
	off int64 // bytes written
}

func (s *streamWriter) write(b []byte) error {
	n, err := s.w.Write(b)
	s.off += int64(n)
	return err
}

// sector returns the current position in sectors, which the 32-bit grain
// table and directory entries must be able to hold.
func (s *streamWriter) sector() (uint32, error) {
	sec := s.off / SectorSize
	if sec > math.MaxUint32 {
		return 0, fmt.Errorf("image: stream-optimized file passes 2 TiB")
	}
	return uint32(sec), nil
}

// marker writes a metadata marker sector.
func (s *streamWriter) marker(numSectors uint64, typ uint32) error {
	var m [SectorSize]byte
	binary.LittleEndian.PutUint64(m[0:], numSectors)
	binary.LittleEndian.PutUint32(m[12:], typ)
	return s.write(m[:])
}

// sparseHeader renders the extent header (also the footer, with gdOffset set).
func sparseHeader(capacity, gdOffset uint64) []byte {
	h := make([]byte, SectorSize)
	le := binary.LittleEndian
	copy(h, "KDMV")
	le.PutUint32(h[4:], 3)
	le.PutUint32(h[8:], flagNewline|flagCompress|flagMarkers)
	le.PutUint64(h[12:], capacity)
	le.PutUint64(h[20:], grainSectors)
	le.PutUint64(h[28:], 1) // descriptor offset
	le.PutUint64(h[36:], descSectors)
	le.PutUint32(h[44:], gtEntries)
	le.PutUint64(h[48:], 0) // no redundant grain directory
	le.PutUint64(h[56:], gdOffset)
	le.PutUint64(h[64:], firstGrain)
	h[72] = 0 // clean shutdown
	copy(h[73:], "\n \r\n")
	le.PutUint16(h[77:], deflateMethod)
	return h
}

// WriteStreamOptimized writes the image of raw (m.Size bytes) to w as a
// streamOptimized VMDK. Grains are compressed in parallel and written in
// order; all-zero grains are left out. progress, if not nil, is called with
// the number of raw bytes done. It stops with ctx's error when ctx ends.
func WriteStreamOptimized(ctx context.Context, w io.Writer, m Meta, raw io.ReaderAt, progress func(done int64)) error {
	if err := m.Validate(); err != nil {
		return err
	}
	capacity := uint64(m.Size / SectorSize)
	grains := (m.Size + grainBytes - 1) / grainBytes
	tables := (grains + gtEntries - 1) / gtEntries // ≤ 2 Mi for MaxSize

	out := &streamWriter{w: bufio.NewWriterSize(w, 1<<20)}
	desc := descriptor(m, "streamOptimized", fmt.Sprintf("RW %d SPARSE \"%s.vmdk\"", capacity, m.Name))
	if len(desc) > descSectors*SectorSize {
		return fmt.Errorf("%w: descriptor of %d bytes", ErrInvalidMeta, len(desc))
	}
	head := make([]byte, firstGrain*SectorSize)
	copy(head, sparseHeader(capacity, gdAtEnd))
	copy(head[SectorSize:], desc)
	if err := out.write(head); err != nil {
		return fmt.Errorf("image: write %s.vmdk header: %w", m.Name, err)
	}

	// Deflate is the bottleneck (~400 MB/s per core); beyond 8 cores the
	// point-in-time reader or the destination is the limit.
	workers := min(runtime.GOMAXPROCS(0), 8)
	slots := make([]grainSlot, 4*workers)
	for i := range slots {
		slots[i].raw = make([]byte, grainBytes)
		slots[i].zw = zlib.NewWriter(nil)
	}
	enc := &streamEncoder{out: out, name: m.Name, grains: grains,
		gd: make([]uint32, tables), gt: make([]uint32, gtEntries)}

	for first := int64(0); first < grains; first += int64(len(slots)) {
		if err := ctx.Err(); err != nil {
			return err
		}
		n := int(min(int64(len(slots)), grains-first))
		eg, ectx := errgroup.WithContext(ctx)
		eg.SetLimit(workers)
		for i := range n {
			g := first + int64(i)
			size := int(min(grainBytes, m.Size-g*grainBytes))
			eg.Go(func() error {
				if err := ectx.Err(); err != nil {
					return err
				}
				if err := slots[i].load(raw, g, size); err != nil {
					return fmt.Errorf("image: read %s grain %d: %w", m.Name, g, err)
				}
				return nil
			})
		}
		if err := eg.Wait(); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return err
		}
		for i := range n {
			if err := enc.emit(first+int64(i), &slots[i]); err != nil {
				return err
			}
		}
		if progress != nil {
			progress(min((first+int64(n))*grainBytes, m.Size))
		}
	}

	gdSec, err := writeTable(out, markerGD, enc.gd)
	if err != nil {
		return fmt.Errorf("image: write %s.vmdk grain directory: %w", m.Name, err)
	}
	err = out.marker(1, markerFooter)
	if err == nil {
		err = out.write(sparseHeader(capacity, uint64(gdSec)))
	}
	if err == nil {
		err = out.marker(0, markerEOS)
	}
	if err == nil {
		err = out.w.Flush()
	}
	if err != nil {
		return fmt.Errorf("image: write %s.vmdk footer: %w", m.Name, err)
	}
	return nil
}

// streamEncoder places grains and grain tables in the output.
type streamEncoder struct {
	out    *streamWriter
	name   string
	grains int64
	gd, gt []uint32 // the whole directory; the grain table being filled
	gtUsed bool
}

// emit writes grain g unless it is zero, and the grain table after the last
// grain it maps, unless that table is empty.
func (e *streamEncoder) emit(g int64, s *grainSlot) error {
	if !s.zero {
		sec, err := e.out.sector()
		if err != nil {
			return err
		}
		if err := e.out.write(s.out.Bytes()); err != nil {
			return fmt.Errorf("image: write %s.vmdk grain %d: %w", e.name, g, err)
		}
		e.gt[g%gtEntries] = sec
		e.gtUsed = true
	}
	if (g+1)%gtEntries != 0 && g+1 != e.grains {
		return nil
	}
	if e.gtUsed {
		sec, err := writeTable(e.out, markerGT, e.gt)
		if err != nil {
			return fmt.Errorf("image: write %s.vmdk grain table %d: %w", e.name, g/gtEntries, err)
		}
		e.gd[g/gtEntries] = sec
		clear(e.gt)
		e.gtUsed = false
	}
	return nil
}

// writeTable writes a metadata marker and a grain table or directory, padded
// to whole sectors, and returns the sector where the table starts.
func writeTable(out *streamWriter, typ uint32, entries []uint32) (uint32, error) {
	n := len(entries) * 4
	b := make([]byte, n+pad(n))
	for i, e := range entries {
		binary.LittleEndian.PutUint32(b[4*i:], e)
	}
	if err := out.marker(uint64(len(b)/SectorSize), typ); err != nil {
		return 0, err
	}
	sec, err := out.sector()
	if err != nil {
		return 0, err
	}
	return sec, out.write(b)
}
