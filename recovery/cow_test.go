package recovery

import (
	"bytes"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
)

// The clone reads the base until written, at any offset and length, takes
// writes of sectors (WriteAt) and of any bytes (WriteFileAt), and never
// writes the base.
func TestCOW(t *testing.T) {
	dir := t.TempDir()
	base := make([]byte, 64<<10)
	rng := rand.New(rand.NewPCG(5, 6))
	for i := range base {
		base[i] = byte(rng.Uint32())
	}
	flat := filepath.Join(dir, "flat")
	if err := os.WriteFile(flat, base, 0o600); err != nil {
		t.Fatal(err)
	}
	const off, size = 4096, 32 << 10 // the partition within the flat image
	c, err := newCOW(flat, off, size, filepath.Join(dir, "scratch"))
	if err != nil {
		t.Fatal(err)
	}
	model := bytes.Clone(base[off : off+size])
	for k := 0; k < 200; k++ {
		switch rng.IntN(3) {
		case 0: // sectors
			n := int64(1+rng.IntN(8)) * sector
			at := int64(rng.IntN(int(size-n)/sector)) * sector
			data := make([]byte, n)
			for i := range data {
				data[i] = byte(rng.Uint32())
			}
			if _, err := c.WriteAt(data, at); err != nil {
				t.Fatal(err)
			}
			copy(model[at:], data)
		case 1: // any bytes, as the tap writes (WriteFileAt)
			n := 1 + rng.Int64N(3*sector)
			at := rng.Int64N(size - n + 1)
			data := make([]byte, n)
			for i := range data {
				data[i] = byte(rng.Uint32())
			}
			if _, err := c.WriteFileAt(data, at); err != nil {
				t.Fatal(err)
			}
			copy(model[at:], data)
		}
		at := rng.Int64N(size)
		n := rng.Int64N(size - at + 1)
		got := make([]byte, n)
		if _, err := c.ReadAt(got, at); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, model[at:at+n]) {
			t.Fatalf("read of %d at %d differs from the model", n, at)
		}
	}
	if err := c.Zero(0, size); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, size)
	c.ReadAt(got, 0)
	if !bytes.Equal(got, make([]byte, size)) {
		t.Fatal("Zero left data")
	}
	if _, err := c.WriteAt(make([]byte, 100), 0); err == nil {
		t.Fatal("a misaligned write was taken")
	}
	if err := c.close(); err != nil {
		t.Fatal(err)
	}
	if now, _ := os.ReadFile(flat); !bytes.Equal(now, base) {
		t.Fatal("the clone wrote its base")
	}
}
