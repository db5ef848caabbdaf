package image

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

// eofAtEnd is a ReaderAt that, like many, returns io.EOF together with a full
// read that ends exactly at its end. concat must not pass that EOF on.
type eofAtEnd struct{ b []byte }

func (r eofAtEnd) ReadAt(p []byte, off int64) (int, error) {
	n, err := bytes.NewReader(r.b).ReadAt(p, off)
	if err == nil && off+int64(n) == int64(len(r.b)) {
		err = io.EOF
	}
	return n, err
}

// TestConcatModel compares every read around the boundaries with a
// bytes.Reader over the same bytes.
func TestConcatModel(t *testing.T) {
	raw := make([]byte, 4096+512)
	for i := range raw {
		raw[i] = byte(i*31 + 7)
	}
	tail := make([]byte, 512)
	for i := range tail {
		tail[i] = byte(0xa0 ^ i)
	}
	model := bytes.NewReader(append(append([]byte{}, raw...), tail...))
	size := int64(len(raw) + len(tail))
	readers := map[string]io.ReaderAt{"bytes.Reader": bytes.NewReader(raw), "eofAtEnd": eofAtEnd{raw}}
	offsets := []int64{0, 1, 511, 512, 4095, 4096, size - 1024, size - 513, size - 512, size - 511, size - 1, size, size + 1, size + 4096}
	lengths := []int{0, 1, 2, 511, 512, 513, 1024, 4096, int(size), int(size) + 1}
	for name, r := range readers {
		c := newConcat(r, int64(len(raw)), tail)
		if c.Size() != size {
			t.Fatalf("Size = %d, want %d", c.Size(), size)
		}
		for _, off := range offsets {
			for _, n := range lengths {
				got, want := make([]byte, n), make([]byte, n)
				gn, gerr := c.ReadAt(got, off)
				wn, werr := model.ReadAt(want, off)
				if gn != wn || gerr != werr || !bytes.Equal(got[:gn], want[:wn]) {
					t.Errorf("%s ReadAt(len %d, off %d) = %d, %v; model %d, %v", name, n, off, gn, gerr, wn, werr)
				}
			}
		}
		if _, err := c.ReadAt(make([]byte, 1), -1); err == nil {
			t.Errorf("%s: negative offset accepted", name)
		}
	}
}

type errReader struct{ err error }

func (e errReader) ReadAt(p []byte, off int64) (int, error) { return 0, e.err }

func TestConcatRawErrors(t *testing.T) {
	tail := make([]byte, 512)
	// raw shorter than declared: a read inside it, or across into the tail,
	// is an unexpected EOF, not a silent short read.
	short := newConcat(bytes.NewReader(make([]byte, 1000)), 2048, tail)
	for _, c := range []struct {
		off int64
		n   int
	}{{900, 200}, {1500, 1000}, {0, 2048}} {
		if _, err := short.ReadAt(make([]byte, c.n), c.off); !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("short raw, ReadAt(len %d, off %d): err = %v", c.n, c.off, err)
		}
	}
	boom := errors.New("boom")
	failing := newConcat(errReader{boom}, 2048, tail)
	for _, off := range []int64{0, 2000} {
		if _, err := failing.ReadAt(make([]byte, 100), off); !errors.Is(err, boom) {
			t.Errorf("failing raw at %d: err = %v", off, err)
		}
	}
	// A read wholly in the tail never touches raw.
	if n, err := failing.ReadAt(make([]byte, 512), 2048); n != 512 || err != nil {
		t.Errorf("tail read with failing raw: %d, %v", n, err)
	}
}

func TestConcatHotPathAllocs(t *testing.T) {
	raw := bytes.NewReader(make([]byte, 1<<20))
	c := newConcat(raw, 1<<20, make([]byte, 512))
	var r io.ReaderAt = c
	buf := make([]byte, 64<<10)
	if n := testing.AllocsPerRun(100, func() {
		if _, err := r.ReadAt(buf, 4096); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Errorf("%v allocations per read inside raw, want 0", n)
	}
}

func BenchmarkConcatReadAt(b *testing.B) {
	raw := bytes.NewReader(make([]byte, 64<<20))
	var r io.ReaderAt = newConcat(raw, 64<<20, make([]byte, 512))
	buf := make([]byte, 128<<10)
	b.SetBytes(int64(len(buf)))
	for i := 0; b.Loop(); i++ {
		off := int64(i%500) * int64(len(buf))
		if _, err := r.ReadAt(buf, off); err != nil {
			b.Fatal(err)
		}
	}
}
