package store

import (
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/cockroachdb/pebble/v2"
)

// Image is disk d as it was at journal position pos: an io.ReaderAt over the
// whole disk. It is safe for concurrent use and never changes, whatever is
// written after pos.
type Image struct {
	r    *Repo
	d    Disk
	pos  uint64
	base *Image // a clone's base, for the blocks it never wrote
}

// Image opens disk d at journal position pos (at most the head).
func (r *Repo) Image(d Disk, pos uint64) (*Image, error) {
	if pos > r.head.Load() {
		return nil, fmt.Errorf("store: position %d is past the head %d", pos, r.head.Load())
	}
	im := &Image{r: r, d: d, pos: pos}
	if d.Base != nil {
		var err error
		if im.base, err = r.baseImage(d); err != nil {
			return nil, err
		}
	}
	return im, nil
}

// Size is the disk's size in bytes.
func (im *Image) Size() int64 { return im.d.Size }

// Pos is the journal position the image shows.
func (im *Image) Pos() uint64 { return im.pos }

// version is what the index says of one block at the image's position.
type version struct {
	found bool
	hash  Hash
	loc   location
	seq   uint64 // the journal position that wrote it
}

// versions looks up blocks [first, first+len(out)) with one seek per written
// block, and one seek per unwritten stretch.
func (im *Image) versions(first uint64, out []version) error {
	n := uint64(len(out))
	it, err := im.r.db.NewIter(&pebble.IterOptions{
		LowerBound: versionKey(im.d.ID, first, ^uint64(0)),
		UpperBound: versionKey(im.d.ID, first+n, ^uint64(0)),
	})
	if err != nil {
		return err
	}
	for i := uint64(0); i < n; {
		b := first + i
		if !it.SeekGE(versionKey(im.d.ID, b, im.pos)) {
			clear(out[i:])
			break
		}
		_, kb, seq, ok := versionBlock(it.Key())
		if !ok {
			it.Close()
			return fmt.Errorf("store: version key %x: %w", it.Key(), ErrCorrupt)
		}
		if kb != b {
			// No version of b at or before pos; blocks up to kb are unwritten.
			clear(out[i : kb-first])
			i = kb - first
			continue
		}
		v := it.Value()
		if !versionValueOK(v) {
			it.Close()
			return fmt.Errorf("store: version of block %d of disk %q: %w", b, im.d.Name, ErrCorrupt)
		}
		out[i].found, out[i].seq = true, seq
		copy(out[i].hash[:], v)
		if out[i].loc, err = decodeLocation(v[len(Hash{}):]); err != nil {
			it.Close()
			return err
		}
		if out[i].loc.flags&flagZero == 0 && im.r.isRetired(out[i].loc.seg) {
			// Garbage collection moved the content: the content index
			// knows where. Without it, the read fails on the old segment.
			if loc, ok, err := im.r.relocated(out[i].hash); err != nil {
				it.Close()
				return err
			} else if ok {
				out[i].loc = loc
			}
		}
		i++
	}
	if err := errors.Join(it.Error(), it.Close()); err != nil || im.base == nil {
		return err
	}
	for i := 0; i < len(out); { // a clone reads what it never wrote from its base
		if out[i].found {
			i++
			continue
		}
		j := i + 1
		for j < len(out) && !out[j].found {
			j++
		}
		if err := im.base.versions(first+uint64(i), out[i:j]); err != nil {
			return err
		}
		i = j
	}
	return nil
}

// Hashes fills out with the content hashes of blocks [first, first+len(out)):
// ZeroHash for blocks never written or written with zeros.
func (im *Image) Hashes(first uint64, out []Hash) error {
	if first+uint64(len(out)) > im.d.Blocks() {
		return fmt.Errorf("%w: blocks %d+%d of disk %q", ErrOutOfRange, first, len(out), im.d.Name)
	}
	vs := make([]version, len(out))
	if err := im.versions(first, vs); err != nil {
		return err
	}
	zero := ZeroHash(im.d.BlockSize)
	for i, v := range vs {
		if v.found {
			out[i] = v.hash
		} else {
			out[i] = zero
		}
	}
	return nil
}

var scratchPool = sync.Pool{New: func() any { b := make([]byte, 0, 1<<20); return &b }}

// ReadAt reads the image at off. Content that lies contiguously in a segment
// (an image imported in order) is read with one pread per run.
func (im *Image) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("store: read at negative offset %d", off)
	}
	size := im.d.Size
	if off >= size {
		return 0, io.EOF
	}
	var eof error
	if int64(len(p)) > size-off {
		p, eof = p[:size-off], io.EOF
	}
	if len(p) == 0 {
		return 0, eof
	}
	bs := int64(im.d.BlockSize)
	first := off / bs
	last := (off + int64(len(p)) - 1) / bs
	vs := make([]version, last-first+1)
	if err := im.versions(uint64(first), vs); err != nil {
		return 0, err
	}
	rd := reader{im: im, p: p, off: off, first: first}
	for i := 0; i < len(vs); {
		if !vs[i].found || vs[i].loc.flags&flagZero != 0 {
			clear(rd.dst(i))
			i++
			continue
		}
		j := i + 1 // extend the run while content is adjacent in one segment
		total := vs[i].loc.n
		for j < len(vs) && vs[j].found && vs[j].loc.flags&flagZero == 0 &&
			vs[j].loc.seg == vs[i].loc.seg && vs[j].loc.off == vs[i].loc.off+uint64(total) && total < 8<<20 {
			total += vs[j].loc.n
			j++
		}
		if err := rd.run(vs[i:j], i); err != nil {
			return 0, err
		}
		i = j
	}
	return len(p), eof
}

// reader is the state of one ReadAt.
type reader struct {
	im    *Image
	p     []byte
	off   int64
	first int64
}

// dst is the part of p that block i of the request covers.
func (rd *reader) dst(i int) []byte {
	bs := int64(rd.im.d.BlockSize)
	start := (rd.first+int64(i))*bs - rd.off
	end := start + bs
	start = max(start, 0)
	end = min(end, int64(len(rd.p)))
	return rd.p[start:end]
}

func (rd *reader) whole(i int) bool { return len(rd.dst(i)) == rd.im.d.BlockSize }

// run reads blocks [i, i+len(vs)) whose content lies back to back in one
// segment, and checks each block against its location's checksum (content
// stored before checksums, against its hash) before the caller sees it.
func (rd *reader) run(vs []version, i int) error {
	segs := rd.im.r.segs
	bs := rd.im.d.BlockSize
	direct := true
	for k, v := range vs {
		if v.loc.flags&flagZstd != 0 || !rd.whole(i+k) {
			direct = false
			break
		}
	}
	if direct { // raw content straight into the caller's buffer
		// In pieces that stay in the CPU's cache between the read and the
		// check: one pread of the whole run, then a check, read it all
		// from memory twice (measured: the check cost 15% instead of ~5%).
		per := max(1, checkPiece/bs)
		for k0 := 0; k0 < len(vs); k0 += per {
			part := vs[k0:min(k0+per, len(vs))]
			start := (rd.first+int64(i+k0))*int64(bs) - rd.off
			buf := rd.p[start : start+int64(len(part)*bs)]
			if err := segs.readRaw(buf, part[0].loc.seg, part[0].loc.off); err != nil {
				return rd.damage(i+k0, part[0], err)
			}
			for k, v := range part {
				if rd.im.r.uncheckedReads {
					break
				}
				if err := check(v, buf[k*bs:(k+1)*bs], buf[k*bs:(k+1)*bs], nil); err != nil {
					return rd.damage(i+k0+k, v, err)
				}
			}
		}
		return nil
	}
	total := 0
	for _, v := range vs {
		total += int(v.loc.n)
	}
	bufp := scratchPool.Get().(*[]byte)
	defer scratchPool.Put(bufp)
	need := total + bs
	if cap(*bufp) < need {
		*bufp = make([]byte, need)
	}
	buf := (*bufp)[:need]
	stored, block := buf[:total], buf[total:]
	if err := segs.readRaw(stored, vs[0].loc.seg, vs[0].loc.off); err != nil {
		return rd.damage(i, vs[0], err)
	}
	for k, v := range vs {
		src := stored[:v.loc.n]
		stored = stored[v.loc.n:]
		dst := block
		if rd.whole(i + k) {
			dst = rd.dst(i + k)
		}
		decode := func() error { return segs.decode(dst, src, v.loc.flags) }
		if rd.im.r.uncheckedReads {
			if err := decode(); err != nil {
				return rd.damage(i+k, v, err)
			}
		} else if err := check(v, src, dst, decode); err != nil {
			return rd.damage(i+k, v, err)
		}
		if !rd.whole(i + k) {
			within := max(rd.off-(rd.first+int64(i+k))*int64(bs), 0)
			copy(rd.dst(i+k), block[within:])
		}
	}
	return nil
}

// checkPiece is how much raw content one pread brings in before it is
// checked: well within a core's L2 cache.
const checkPiece = 128 << 10

// damage describes a failed read of block i of the request.
func (rd *reader) damage(i int, v version, err error) error {
	return damage(rd.im.d, uint64(rd.first)+uint64(i), v, err)
}

// check verifies the stored bytes of v against their checksum, then (if
// decode is not nil) decodes them into plain; content stored without a
// checksum (before checksums came in) is checked against its BLAKE3 hash
// once decoded.
func check(v version, stored, plain []byte, decode func() error) error {
	if v.loc.flags&flagSum != 0 && checksum(stored) != v.loc.sum {
		return errChecksum
	}
	if decode != nil {
		if err := decode(); err != nil {
			return err
		}
	}
	if v.loc.flags&flagSum == 0 && HashBlock(plain) != v.hash {
		return errHash
	}
	return nil
}
