package cutfs

import (
	"fmt"
	"math"
	"sort"

	"golang.org/x/sys/unix"
)

// pending is what a file's durable backing content does not hold yet:
// writes, truncates and fallocates since its last sync.
type pending struct {
	size int64 // the size readers see
	// keep is where the backing content stops counting: a truncate below
	// it since the last sync made the bytes past it zeros (or gone).
	keep int64
	ext  []extent // sorted by off, never overlapping
}

// extent is written data not yet in the backing file. Its data's spare
// capacity belongs to it alone, so appending to it is safe.
type extent struct {
	off  int64
	data []byte
}

func (e extent) end() int64 { return e.off + int64(len(e.data)) }

func newPending(backingSize int64) *pending {
	return &pending{size: backingSize, keep: backingSize}
}

// clean reports whether nothing is pending beyond what backingSize says.
func (p *pending) clean(backingSize int64) bool {
	return len(p.ext) == 0 && p.size == backingSize && p.keep == backingSize
}

// cutOut removes [from, to) from the extents.
func (p *pending) cutOut(from, to int64) {
	out := p.ext[:0:0]
	for _, e := range p.ext {
		if e.end() <= from || e.off >= to {
			out = append(out, e)
			continue
		}
		if e.off < from {
			k := from - e.off
			out = append(out, extent{e.off, e.data[:k:k]})
		}
		if e.end() > to {
			out = append(out, extent{to, e.data[to-e.off:]})
		}
	}
	p.ext = out
}

// write records b written at off.
func (p *pending) write(off int64, b []byte) {
	if len(b) == 0 {
		return
	}
	end := off + int64(len(b))
	p.cutOut(off, end)
	i := sort.Search(len(p.ext), func(i int) bool { return p.ext[i].off >= off })
	if i > 0 && p.ext[i-1].end() == off {
		// Sequential writes grow one extent instead of piling up many.
		p.ext[i-1].data = append(p.ext[i-1].data, b...)
	} else {
		p.ext = append(p.ext, extent{})
		copy(p.ext[i+1:], p.ext[i:])
		p.ext[i] = extent{off, append(make([]byte, 0, len(b)), b...)}
	}
	p.size = max(p.size, end)
}

// truncate records the file cut or extended to size n.
func (p *pending) truncate(n int64) {
	p.cutOut(n, math.MaxInt64)
	p.keep = min(p.keep, n)
	p.size = n
}

// zero records [off, off+n) made zeros (a hole punched); the size is kept.
func (p *pending) zero(off, n int64) {
	end := min(off+n, p.size)
	if end <= off {
		return
	}
	p.write(off, make([]byte, end-off))
}

// read fills b from off as readers see the file: the backing content
// below keep, the extents over it, zeros elsewhere, up to size.
func (p *pending) read(fd int, b []byte, off int64) (int, error) {
	if off >= p.size {
		return 0, nil
	}
	b = b[:min(int64(len(b)), p.size-off)]
	clear(b)
	if off < p.keep {
		part := b[:min(int64(len(b)), p.keep-off)]
		for done := 0; done < len(part); {
			n, err := unix.Pread(fd, part[done:], off+int64(done))
			if err != nil {
				return 0, fmt.Errorf("read backing at %d: %w", off+int64(done), err)
			}
			if n == 0 {
				break // past the backing file's end: zeros
			}
			done += n
		}
	}
	end := off + int64(len(b))
	for _, e := range p.ext {
		if e.end() <= off || e.off >= end {
			continue
		}
		from := max(e.off, off)
		copy(b[from-off:], e.data[from-e.off:min(e.end(), end)-e.off])
	}
	return len(b), nil
}

// apply writes everything pending into the backing file and syncs it.
func (p *pending) apply(fd int) error {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return err
	}
	if p.keep < st.Size {
		if err := unix.Ftruncate(fd, p.keep); err != nil {
			return fmt.Errorf("truncate backing to %d: %w", p.keep, err)
		}
	}
	for _, e := range p.ext {
		for done := 0; done < len(e.data); {
			n, err := unix.Pwrite(fd, e.data[done:], e.off+int64(done))
			if err != nil {
				return fmt.Errorf("write backing at %d: %w", e.off+int64(done), err)
			}
			done += n
		}
	}
	if err := unix.Ftruncate(fd, p.size); err != nil {
		return fmt.Errorf("size backing to %d: %w", p.size, err)
	}
	if err := unix.Fdatasync(fd); err != nil {
		return fmt.Errorf("sync backing: %w", err)
	}
	p.ext, p.keep = nil, p.size
	return nil
}
