package image

import (
	"errors"
	"io"
)

var errNegativeOffset = errors.New("image: negative offset")

// concat is a raw disk followed by a small in-memory tail (the VHD footer),
// read as one io.ReaderAt. Reads that fall inside the raw part go straight to
// it with the caller's buffer: no copy, no allocation.
type concat struct {
	raw     io.ReaderAt
	rawSize int64
	tail    []byte
}

func newConcat(raw io.ReaderAt, rawSize int64, tail []byte) *concat {
	return &concat{raw: raw, rawSize: rawSize, tail: tail}
}

// Size is the total length.
func (c *concat) Size() int64 { return c.rawSize + int64(len(c.tail)) }

// ReadAt follows io.ReaderAt: it returns len(p) bytes, or fewer with io.EOF
// when the read runs past the end, or fewer with the raw reader's error.
func (c *concat) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, errNegativeOffset
	}
	// Hot path: the whole read lies inside raw (an image is read mostly here).
	if off <= c.rawSize-int64(len(p)) {
		n, err := c.raw.ReadAt(p, off)
		return n, rawErr(n, len(p), err)
	}
	if off >= c.Size() {
		return 0, io.EOF
	}
	n := 0
	if off < c.rawSize {
		want := int(c.rawSize - off) // < len(p): the hot path took the rest
		got, err := c.raw.ReadAt(p[:want], off)
		if err = rawErr(got, want, err); err != nil {
			return got, err
		}
		n, off = want, c.rawSize
	}
	n += copy(p[n:], c.tail[off-c.rawSize:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// rawErr turns the raw reader's result for a read that must be complete into
// ours: an EOF at the very end of raw is not the end of the file, and a short
// read means raw is smaller than its declared size.
func rawErr(got, want int, err error) error {
	if got == want {
		return nil
	}
	if err == nil || err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}
