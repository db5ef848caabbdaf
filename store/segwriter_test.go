package store

import (
	"bytes"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
)

// segModel is what the segments should hold: every appended byte, per segment.
type segModel map[uint32][]byte

// TestSegmentWriterModel appends runs of every size (within a chunk, across
// chunk and segment boundaries) with writes and syncs in between, and reads
// random ranges back (from memory, from the file, and across the two)
// against an independent model; then reopens where a writer would and goes
// on. Both with O_DIRECT and through the page cache.
func TestSegmentWriterModel(t *testing.T) {
	for _, direct := range []bool{true, false} {
		name := "direct"
		if !direct {
			name = "buffered"
		}
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			rng := rand.New(rand.NewPCG(7, 11))
			fill := rand.NewChaCha8([32]byte{7})
			model := segModel{}
			committed := map[uint32]uint64{}
			s := openTestWriter(t, dir, direct, committed)
			for round := 0; round < 3; round++ {
				for i := 0; i < 80; i++ {
					n := 1 + rng.IntN(4096)
					if rng.IntN(10) == 0 {
						n = rng.IntN(3 * chunkSize / 2)
					}
					p := make([]byte, n)
					fill.Read(p)
					loc, err := s.add(p, 0)
					if err != nil {
						t.Fatal(err)
					}
					if uint64(len(model[loc.seg])) != loc.off {
						t.Fatalf("content of %d bytes placed at %d of segment %d, which holds %d", n, loc.off, loc.seg, len(model[loc.seg]))
					}
					model[loc.seg] = append(model[loc.seg], p...)
					switch rng.IntN(8) {
					case 0:
						err = s.sync()
					case 1:
						err = s.write()
					}
					if err != nil {
						t.Fatal(err)
					}
					checkSegments(t, s, model, rng, 4)
				}
				// Reopen as a writer does: the newest segment cut to its committed length.
				if err := s.sync(); err != nil {
					t.Fatal(err)
				}
				for _, sl := range s.takeSealed() {
					committed[sl.id] = sl.n
				}
				committed[s.wID] = s.wLen
				if err := s.close(); err != nil {
					t.Fatal(err)
				}
				s = openTestWriter(t, dir, direct, committed)
				checkSegments(t, s, model, rng, 50)
				if s.direct != direct {
					t.Fatalf("writer direct=%v, want %v", s.direct, direct)
				}
			}
			if len(model) < 2 {
				t.Fatalf("the test never crossed a segment boundary (%d segments)", len(model))
			}
			for id, want := range model {
				got, err := os.ReadFile(filepath.Join(dir, segmentName(id)))
				if err != nil {
					t.Fatal(err)
				}
				if len(got) < len(want) || !bytes.Equal(got[:len(want)], want) {
					t.Fatalf("segment %d file holds %d bytes unlike the model's %d", id, len(got), len(want))
				}
			}
		})
	}
}

func openTestWriter(t *testing.T, dir string, direct bool, committed map[uint32]uint64) *segments {
	t.Helper()
	s, err := openSegments(dir)
	if err != nil {
		t.Fatal(err)
	}
	s.limit = 3*chunkSize + 12345 // segments of a few chunks, not aligned
	s.noDirect = !direct
	if err := s.openWriter(func(seg uint32) (uint64, error) { return committed[seg], nil }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.close() })
	return s
}

// checkSegments reads n random ranges of the model through s.
func checkSegments(t *testing.T, s *segments, model segModel, rng *rand.Rand, n int) {
	t.Helper()
	for range n {
		seg := uint32(1 + rng.IntN(len(model)))
		want := model[seg]
		if len(want) == 0 {
			continue
		}
		off := rng.IntN(len(want))
		if rng.IntN(2) == 0 { // near the newest content: memory, or file and memory
			off = max(0, len(want)-1-rng.IntN(2*chunkSize))
		}
		k := 1 + rng.IntN(min(len(want)-off, 256<<10))
		if rng.IntN(16) == 0 {
			k = 1 + rng.IntN(min(len(want)-off, chunkSize+chunkSize/2))
		}
		got := make([]byte, k)
		if err := s.readRaw(got, seg, uint64(off)); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want[off:off+k]) {
			t.Fatalf("segment %d bytes [%d, %d) read back wrong", seg, off, off+k)
		}
	}
}

// TestMayCompress: the sample test skips random data, and never content
// zstd could shrink by an eighth, as compress decides it.
func TestMayCompress(t *testing.T) {
	src := rand.NewChaCha8([32]byte{3})
	rng := rand.New(src)
	random := func(n int) []byte { b := make([]byte, n); src.Read(b); return b }
	hex := make([]byte, 4096)
	for i := range hex {
		hex[i] = "0123456789abcdef"[rng.IntN(16)]
	}
	pattern := bytes.Repeat(random(1024), 4)
	half := append(random(2048), make([]byte, 2048)...)
	stamped := random(4096) // fio's refilled buffers: a byte of some words fixed
	for i := 0; i < len(stamped); i += 8 {
		if rng.IntN(4) == 0 {
			stamped[i] = 0x20
		}
	}
	padded := random(4096) // 104-byte records, 24 zero bytes between
	for i := 0; i < len(padded); i += 128 {
		clear(padded[i+13 : i+37])
	}
	sparse := random(4096)
	for i := range sparse {
		if i%64 != 0 {
			sparse[i] = 0
		}
	}
	s, err := openSegments(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if err := s.openWriter(func(uint32) (uint64, error) { return 0, nil }); err != nil {
		t.Fatal(err)
	}
	defer s.close()
	for _, c := range []struct {
		name string
		b    []byte
		want bool
	}{
		{"random", random(4096), false},
		{"random 64 KiB", random(64 << 10), false},
		{"stamped words", stamped, false},
		{"zeros", make([]byte, 4096), true},
		{"hex text", hex, true},
		{"half zeros", half, true},
		{"sparse", sparse, true},
		{"padded records", padded, true},
		{"repeated 1 KiB", pattern, true},
		{"small", random(512), true},
	} {
		if got := mayCompress(c.b); got != c.want {
			t.Errorf("%s: mayCompress %v, want %v", c.name, got, c.want)
		}
		_, flags := s.compress(c.b)
		if flags&flagZstd != 0 && !c.want {
			t.Errorf("%s: skipped, yet zstd shrinks it", c.name)
		}
	}
	if c := s.enc.EncodeAll(padded, nil); len(c) > len(padded)-len(padded)/8 {
		t.Fatalf("padded records: zstd makes %d bytes of them, not an eighth less: the case proves nothing", len(c))
	}
	// Whatever zstd shrinks by an eighth, the sample lets through: blocks of
	// random bytes from alphabets of 2 to 256 symbols, with runs of zeros,
	// repeating a random pattern of 16 to 2048 bytes, a power of two
	// (sectors or structures filled alike), or with one value in some of
	// its words. A random pattern of any other period can
	// escape the sample: a compression missed, no harm.
	shrunk := 0
	for i := range 800 {
		b := make([]byte, 4096)
		switch i % 4 {
		case 0:
			alphabet := 2 + rng.IntN(255)
			for j := range b {
				b[j] = byte(rng.IntN(alphabet))
			}
		case 1:
			src.Read(b)
			for z := rng.IntN(64); z > 0; z-- {
				off := rng.IntN(4096)
				clear(b[off:min(off+rng.IntN(256), 4096)])
			}
		case 2:
			p := random(16 << rng.IntN(8))
			for j := range b {
				b[j] = p[j%len(p)]
			}
		case 3:
			src.Read(b) // one value in some words of 2 to 8 bytes
			k, p := 2+rng.IntN(7), 1+rng.IntN(4)
			for j := 0; j < len(b); j += k {
				if rng.IntN(p) == 0 {
					b[j] = 0x55
				}
			}
		}
		if c := s.enc.EncodeAll(b, nil); len(c) <= len(b)-len(b)/8 {
			shrunk++
			if !mayCompress(b) {
				t.Fatalf("block %d (kind %d) shrinks to %d bytes, yet the sample says no", i, i%4, len(c))
			}
		}
	}
	if shrunk < 200 {
		t.Fatalf("only %d of 600 generated blocks compress: the test proves little", shrunk)
	}
}

// TestMayCompressParts checks the word tricks of mayCompress against plain
// loops: zero bytes counted in words with zeros planted, and repeated
// signatures among 32, with and without a repeat.
func TestMayCompressParts(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for range 100000 {
		x := rng.Uint64()
		for z := rng.IntN(9); z > 0; z-- {
			x &^= 0xff << (8 * rng.IntN(8))
		}
		if rng.IntN(4) == 0 {
			x |= 0x80 << (8 * rng.IntN(8)) // a byte of just its high bit
		}
		n := 1 + rng.IntN(8)
		want := 0
		for i := range n {
			if byte(x>>(8*i)) == 0 {
				want++
			}
		}
		if got := zeroBytes(x, n); got != want {
			t.Fatalf("zeroBytes(%#x, %d) = %d, want %d", x, n, got, want)
		}
	}
	for range 10000 {
		var sigs [32]uint64
		for i := range sigs {
			sigs[i] = rng.Uint64() >> rng.IntN(64) // small values crowd the low slots
		}
		want := false
		if rng.IntN(2) == 0 {
			sigs[rng.IntN(32)] = sigs[rng.IntN(32)]
		}
		for i := range sigs {
			for j := range i {
				want = want || sigs[i] == sigs[j]
			}
		}
		if got := repeats(&sigs); got != want {
			t.Fatalf("repeats(%x) = %v, want %v", sigs, got, want)
		}
	}
}

// BenchmarkMayCompress is the sample test's cost on a random block, next to
// hashing it: it is only worth running if it costs a small part of that.
func BenchmarkMayCompress(b *testing.B) {
	buf := make([]byte, 4096)
	rand.NewChaCha8([32]byte{9}).Read(buf)
	b.Run("sample", func(b *testing.B) {
		for i := 0; b.Loop(); i++ {
			buf[0] = byte(i)
			if mayCompress(buf) {
				b.Fatal("a random block passed the sample")
			}
		}
	})
	b.Run("blake3", func(b *testing.B) {
		for i := 0; b.Loop(); i++ {
			buf[0] = byte(i)
			HashBlock(buf)
		}
	})
}
