package image

import (
	"bytes"
	"compress/zlib"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
)

// TestStreamOptimizedQemu writes stream-optimized VMDKs and has qemu-img
// check them and compare them with the raw image.
func TestStreamOptimizedQemu(t *testing.T) {
	cases := []struct {
		name    string
		size    int64
		data    [][2]int64
		maxFile int64 // 0: no limit
	}{
		{"1MiB-random", mib, [][2]int64{{0, mib}}, 0},
		{"10MiB+4096-holes", 10*mib + 4096, [][2]int64{{0, 3 * mib}, {5*mib + 100, 4096}}, 0},
		// Data only in the second grain table's range: the first is left out.
		{"96MiB-mostly-zero", 96 * mib, [][2]int64{{40 * mib, 3 * grainBytes}}, 512 * kib},
		{"all-zero-but-last-sector", 64 * mib, nil, 128 * kib},
		{"partial-last-grain", 3*mib + 3*SectorSize, [][2]int64{{3*mib - 100, 200}}, 0},
		{"one-sector", SectorSize, nil, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			raw := newRaw(t, dir, "raw.img", c.size, c.data...)
			path := filepath.Join(dir, "disk.vmdk")
			writeStream(t, path, testMeta("disk", c.size), raw.f)

			i := info(t, path, "")
			if i.Format != "vmdk" || i.VirtualSize != c.size || i.Specific.Data.CreateType != "streamOptimized" {
				t.Errorf("qemu-img info: %+v, want streamOptimized vmdk of %d", i, c.size)
			}
			if out := mustQemu(t, "qemu-img", "check", path); !bytes.Contains([]byte(out), []byte("No errors")) {
				t.Errorf("qemu-img check:\n%s", out)
			}
			mustIdentical(t, raw.path, path, "vmdk")

			st, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			if c.maxFile > 0 && st.Size() > c.maxFile {
				t.Errorf("file is %d bytes for a mostly-zero %d-byte disk, want <= %d", st.Size(), c.size, c.maxFile)
			}
			walkStream(t, path, raw)

			// Must be able to fail: qemu sees a changed last byte.
			if _, err := raw.f.WriteAt([]byte{0x5a ^ lastByte(t, raw)}, c.size-1); err != nil {
				t.Fatal(err)
			}
			if rc, out := compare(t, raw.path, path, "vmdk"); rc != 1 {
				t.Errorf("compare after changing the last byte: exit %d, want 1\n%s", rc, out)
			}
		})
	}
}

func writeStream(t *testing.T, path string, m Meta, raw io.ReaderAt) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var last int64
	err = WriteStreamOptimized(context.Background(), f, m, raw, func(done int64) {
		if done < last || done > m.Size {
			t.Errorf("progress %d after %d (size %d)", done, last, m.Size)
		}
		last = done
	})
	if err != nil {
		t.Fatal(err)
	}
	if last != m.Size {
		t.Errorf("last progress %d, want %d", last, m.Size)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// walkStream checks the layout independently of qemu: header and footer
// fields, the trailing footer marker/footer/EOS sectors, a front-to-back walk
// of markers as a streaming importer reads them, and every grain reached
// through the grain directory decompressing to the raw content.
func walkStream(t *testing.T, path string, raw *testRaw) {
	t.Helper()
	file, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	le := binary.LittleEndian
	sector := func(s uint64) []byte {
		if (s+1)*SectorSize > uint64(len(file)) {
			t.Fatalf("sector %d past the end of a %d-byte file", s, len(file))
		}
		return file[s*SectorSize : (s+1)*SectorSize]
	}
	capacity := uint64(raw.size / SectorSize)
	checkHeader := func(h []byte, gd uint64) {
		t.Helper()
		got := []uint64{uint64(le.Uint32(h[0:])), uint64(le.Uint32(h[4:])), uint64(le.Uint32(h[8:])),
			le.Uint64(h[12:]), le.Uint64(h[20:]), le.Uint64(h[28:]), le.Uint64(h[36:]),
			uint64(le.Uint32(h[44:])), le.Uint64(h[48:]), le.Uint64(h[56:]), le.Uint64(h[64:]),
			uint64(h[72]), uint64(le.Uint32(h[73:])), uint64(le.Uint16(h[77:]))}
		want := []uint64{0x564d444b, 3, 0x30001, capacity, 128, 1, 20, 512, 0, gd, 128, 0, 0x0a0d200a, 1}
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("header field %d = %#x, want %#x", i, got[i], want[i])
			}
		}
	}
	checkHeader(sector(0), math.MaxUint64)

	n := uint64(len(file)) / SectorSize
	if uint64(len(file))%SectorSize != 0 || n < firstGrain+3 {
		t.Fatalf("file of %d bytes", len(file))
	}
	fm := sector(n - 3)
	if le.Uint64(fm) != 1 || le.Uint32(fm[8:]) != 0 || le.Uint32(fm[12:]) != markerFooter {
		t.Fatalf("footer marker % x", fm[:16])
	}
	gdSec := le.Uint64(sector(n - 2)[56:])
	checkHeader(sector(n-2), gdSec)
	if !bytes.Equal(sector(n-1), make([]byte, SectorSize)) {
		t.Fatal("last sector is not an end-of-stream marker")
	}

	// Front to back: grains in increasing LBA order, then markers, to EOS.
	var lastLBA int64 = -1
	var grainsSeen, tablesSeen int
	for s := uint64(firstGrain); ; {
		m := sector(s)
		val, size, typ := le.Uint64(m), le.Uint32(m[8:]), le.Uint32(m[12:])
		if size != 0 { // a grain
			if int64(val) <= lastLBA || val%grainSectors != 0 {
				t.Fatalf("sector %d: grain LBA %d after %d", s, val, lastLBA)
			}
			lastLBA = int64(val)
			grainsSeen++
			s += uint64(grainHeader+int(size)+SectorSize-1) / SectorSize
			continue
		}
		if typ == markerEOS {
			if s != n-1 || val != 0 {
				t.Fatalf("EOS at sector %d (val %d), file has %d", s, val, n)
			}
			break
		}
		if typ == markerGT {
			tablesSeen++
		}
		s += 1 + val
	}

	// Through the directory.
	if gm := sector(gdSec - 1); le.Uint32(gm[12:]) != markerGD || le.Uint32(gm[8:]) != 0 {
		t.Fatalf("no GD marker before the grain directory: % x", gm[:16])
	}
	grains := (raw.size + grainBytes - 1) / grainBytes
	tables := (grains + gtEntries - 1) / gtEntries
	var grainsMapped, tablesMapped int
	buf := make([]byte, grainBytes)
	for i := range tables {
		gtSec := uint64(le.Uint32(file[gdSec*SectorSize+uint64(4*i):]))
		for j := range min(int64(gtEntries), grains-i*gtEntries) {
			g := i*gtEntries + j
			want := buf[:min(grainBytes, raw.size-g*grainBytes)]
			if _, err := raw.f.ReadAt(want, g*grainBytes); err != nil && err != io.EOF {
				t.Fatal(err)
			}
			var gte uint64
			if gtSec != 0 {
				if j == 0 {
					tablesMapped++
					if gm := sector(gtSec - 1); le.Uint32(gm[12:]) != markerGT || le.Uint64(gm) != gtSectors {
						t.Fatalf("no GT marker before grain table %d: % x", i, gm[:16])
					}
				}
				gte = uint64(le.Uint32(file[gtSec*SectorSize+uint64(4*j):]))
			}
			if gte == 0 {
				if !bytes.Equal(want, make([]byte, len(want))) {
					t.Fatalf("grain %d holds data but is not mapped", g)
				}
				continue
			}
			grainsMapped++
			gm := sector(gte)
			if lba := le.Uint64(gm); lba != uint64(g*grainSectors) {
				t.Fatalf("grain %d: marker LBA %d", g, lba)
			}
			size := le.Uint32(gm[8:])
			zr, err := zlib.NewReader(bytes.NewReader(file[gte*SectorSize+grainHeader : gte*SectorSize+grainHeader+uint64(size)]))
			if err != nil {
				t.Fatalf("grain %d: %v", g, err)
			}
			got, err := io.ReadAll(zr)
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("grain %d: %d bytes (%v), differ from raw", g, len(got), err)
			}
		}
	}
	if grainsSeen != grainsMapped || tablesSeen != tablesMapped {
		t.Fatalf("stream holds %d grains / %d tables, directory maps %d / %d", grainsSeen, tablesSeen, grainsMapped, tablesMapped)
	}
}

// countingReader counts ReadAt calls and can cancel a context after some.
type countingReader struct {
	r      io.ReaderAt
	n      atomic.Int64
	after  int64
	cancel context.CancelFunc
}

func (c *countingReader) ReadAt(p []byte, off int64) (int, error) {
	if c.n.Add(1) == c.after {
		c.cancel()
	}
	return c.r.ReadAt(p, off)
}

func TestStreamOptimizedCancel(t *testing.T) {
	dir := t.TempDir()
	size := 256 * mib
	raw := newRaw(t, dir, "raw.img", size)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cr := &countingReader{r: raw.f, after: 10, cancel: cancel}
	var progressed atomic.Int64
	err := WriteStreamOptimized(ctx, io.Discard, testMeta("disk", size), cr, func(done int64) { progressed.Store(done) })
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	grains := size / grainBytes
	if got := cr.n.Load(); got >= grains/4 {
		t.Errorf("%d of %d grains read after cancelling at the 10th", got, grains)
	}
	if progressed.Load() >= size {
		t.Errorf("progress reached %d after cancel", progressed.Load())
	}
}

type failWriter struct{ after int }

func (f *failWriter) Write(p []byte) (int, error) {
	if f.after -= len(p); f.after < 0 {
		return 0, errors.New("disk full")
	}
	return len(p), nil
}

type failReader struct{}

func (failReader) ReadAt(p []byte, off int64) (int, error) { return 0, errors.New("device gone") }

func TestStreamOptimizedErrors(t *testing.T) {
	data := make([]byte, 4*mib)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	raw := bytes.NewReader(data)
	m := testMeta("disk", 4*mib)
	for _, after := range []int{100, 2 << 20} { // in the footer's flush, among the grains
		err := WriteStreamOptimized(context.Background(), &failWriter{after: after}, m, raw, nil)
		if err == nil || !bytes.Contains([]byte(err.Error()), []byte("disk full")) {
			t.Errorf("writer failing after %d bytes: err = %v", after, err)
		}
	}
	if err := WriteStreamOptimized(context.Background(), io.Discard, m, failReader{}, nil); err == nil || !bytes.Contains([]byte(err.Error()), []byte("device gone")) {
		t.Errorf("failing reader: err = %v", err)
	}
	short := bytes.NewReader(make([]byte, 3*mib))
	if err := WriteStreamOptimized(context.Background(), io.Discard, m, short, nil); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("raw shorter than Size: err = %v, want io.ErrUnexpectedEOF", err)
	}
	bad := m
	bad.Name = "a/b"
	if err := WriteStreamOptimized(context.Background(), io.Discard, bad, raw, nil); !errors.Is(err, ErrInvalidMeta) {
		t.Errorf("bad name: err = %v, want ErrInvalidMeta", err)
	}
}

// BenchmarkStreamOptimized: 64 MiB of half random, half repetitive text.
func BenchmarkStreamOptimized(b *testing.B) {
	size := 64 * mib
	data := make([]byte, size)
	rng := rand.New(rand.NewPCG(3, 4))
	words := []string{"hindsight ", "journal ", "block ", "0000 ", "ext4 ", "inode "}
	for off := 0; off < len(data); {
		if off/(1<<20)%2 == 0 {
			data[off] = byte(rng.Uint32())
			off++
			continue
		}
		off += copy(data[off:], words[rng.IntN(len(words))])
	}
	raw := bytes.NewReader(data)
	m := testMeta("bench", size)
	b.SetBytes(size)
	for b.Loop() {
		if err := WriteStreamOptimized(context.Background(), io.Discard, m, raw, nil); err != nil {
			b.Fatal(err)
		}
	}
}
