package store

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// damageCase is a repository with two points of one disk: point 1 writes
// every block, point 2 rewrites the first half. Odd blocks hold random
// (raw) content, even blocks compressible (zstd) content.
type damageCase struct {
	dir      string
	d        Disk
	p1, p2   Point
	img1     []byte
	img2     []byte
	captured bool
}

const damageBlocks = 16

func newDamageCase(t *testing.T, captured bool) *damageCase {
	t.Helper()
	dir, r := newRepo(t)
	d, err := r.CreateDisk("web", damageBlocks*4096, 4096)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(7, uint64(len(dir))))
	c := &damageCase{dir: dir, d: d, captured: captured}
	content := func(b int, gen byte) []byte {
		out := make([]byte, 4096)
		if b%2 == 1 {
			for i := range out {
				out[i] = byte(rng.Uint32())
			}
		} else {
			copy(out, bytes.Repeat([]byte{gen, byte(b), 'x', 'y'}, 1024))
		}
		return out
	}
	write := func(blocks int, gen byte, at time.Time) (Point, []byte) {
		var ws []BlockWrite
		for b := range blocks {
			ws = append(ws, BlockWrite{Disk: d, Block: uint64(b), Data: content(b, gen)})
		}
		var p Point
		if captured {
			p, err = r.CaptureAt(d.Timeline, at, ws)
			if err == nil {
				err = r.Sync()
			}
			if err == nil {
				err = r.Publish()
			}
		} else {
			var s *Step
			if s, err = r.Begin(d.Timeline, at); err == nil {
				for _, w := range ws {
					if err = s.Put(d, w.Block, w.Data); err != nil {
						break
					}
				}
				if err == nil {
					p, err = s.Commit()
				}
			}
		}
		if err != nil {
			t.Fatal(err)
		}
		return p, readAll(t, r, d, p.Seq)
	}
	t0 := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	c.p1, c.img1 = write(damageBlocks, 1, t0)
	c.p2, c.img2 = write(damageBlocks/2, 2, t0.Add(time.Minute))
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	return c
}

// loc is where the content of block b at point seq lies.
func (c *damageCase) loc(t *testing.T, b uint64, seq uint64) version {
	t.Helper()
	r := c.view(t)
	im, err := r.Image(c.d, seq)
	if err != nil {
		t.Fatal(err)
	}
	vs := make([]version, 1)
	if err := im.versions(b, vs); err != nil || !vs[0].found {
		t.Fatalf("version of block %d: %v", b, err)
	}
	return vs[0]
}

func (c *damageCase) view(t *testing.T) *Repo {
	t.Helper()
	r, err := Open(c.dir, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func (c *damageCase) segPath(seg uint32) string {
	return filepath.Join(c.dir, "segments", segmentName(seg))
}

// flip changes one byte of the content of block b as point seq has it.
func (c *damageCase) flip(t *testing.T, b uint64, seq uint64) version {
	t.Helper()
	v := c.loc(t, b, seq)
	f, err := os.OpenFile(c.segPath(v.loc.seg), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	one := make([]byte, 1)
	off := int64(v.loc.off) + int64(v.loc.n)/2
	f.ReadAt(one, off)
	one[0] ^= 0x40
	if _, err := f.WriteAt(one, off); err != nil {
		t.Fatal(err)
	}
	return v
}

// readBlocks reads each block of the disk at seq on its own, and returns
// the error of each (nil: it read back as want).
func readBlocks(t *testing.T, r *Repo, d Disk, seq uint64, want []byte) []error {
	t.Helper()
	im, err := r.Image(d, seq)
	if err != nil {
		t.Fatal(err)
	}
	errs := make([]error, damageBlocks)
	for b := range damageBlocks {
		got := make([]byte, 4096)
		if _, err := im.ReadAt(got, int64(b)*4096); err != nil {
			errs[b] = err
		} else if !bytes.Equal(got, want[b*4096:(b+1)*4096]) {
			t.Fatalf("block %d at %d read back different data with no error", b, seq)
		}
	}
	// A whole-image read (one request) fails too when any block does.
	all := make([]byte, len(want))
	_, err = im.ReadAt(all, 0)
	if errors.Join(errs...) == nil && (err != nil || !bytes.Equal(all, want)) {
		t.Fatalf("whole read at %d: %v", seq, err)
	}
	if errors.Join(errs...) != nil && err == nil {
		t.Fatalf("whole read at %d served damaged content", seq)
	}
	return errs
}

// TestFlippedByteIsAnError: a flipped byte in raw and in compressed
// content, stored by an import and by a captured write, is an error naming
// the disk, block, position and segment, never data; every other block and
// the point that does not reference the content read back exactly.
func TestFlippedByteIsAnError(t *testing.T) {
	for _, captured := range []bool{false, true} {
		for _, b := range []uint64{11, 12} { // 11 raw, 12 compressed: both only in point 1
			name := map[bool]string{false: "import", true: "capture"}[captured] + map[uint64]string{11: "/raw", 12: "/zstd"}[b]
			t.Run(name, func(t *testing.T) {
				c := newDamageCase(t, captured)
				v := c.flip(t, b, c.p1.Seq)
				if wantZstd := b%2 == 0; (v.loc.flags&flagZstd != 0) != wantZstd {
					t.Fatalf("block %d stored with flags %#x; the case wants zstd=%v", b, v.loc.flags, wantZstd)
				}
				r := c.view(t)
				for _, p := range []struct {
					seq uint64
					img []byte
				}{{c.p1.Seq, c.img1}, {c.p2.Seq, c.img2}} {
					errs := readBlocks(t, r, c.d, p.seq, p.img)
					for i, err := range errs {
						if uint64(i) != b {
							if err != nil {
								t.Errorf("block %d at %d: %v", i, p.seq, err)
							}
							continue
						}
						var dm *Damage
						if !errors.Is(err, ErrCorrupt) || !errors.As(err, &dm) {
							t.Fatalf("damaged block %d at %d: %v, want a Damage", i, p.seq, err)
						}
						if dm.Disk != "web" || dm.Block != b || dm.Seq != c.p1.Seq || dm.Segment != "segments/"+segmentName(v.loc.seg) {
							t.Errorf("damage names %+v", dm)
						}
					}
				}
				// The writer opens (the files are whole); its reads fail alike.
				w, err := Open(c.dir, Options{})
				if err != nil {
					t.Fatal(err)
				}
				defer w.Close()
				got := make([]byte, 4096)
				if _, err := w.ReadNewest(c.d, got, int64(b)*4096); !errors.Is(err, ErrCorrupt) {
					t.Fatalf("ReadNewest of the damaged block: %v", err)
				}
			})
		}
	}
}

// TestMissingOrShortSegment: a segment deleted or cut short stops every
// writer (ErrCorrupt naming the file), is never re-created or extended, and
// readers fail exactly the blocks that lie in the damage.
func TestMissingOrShortSegment(t *testing.T) {
	for _, how := range []string{"deleted", "truncated"} {
		t.Run(how, func(t *testing.T) {
			c := newDamageCase(t, false)
			v := c.loc(t, damageBlocks-1, c.p1.Seq) // the last block of point 1, only there
			path := c.segPath(v.loc.seg)
			fi, _ := os.Stat(path)
			if how == "deleted" {
				os.Remove(path)
			} else if err := os.Truncate(path, int64(v.loc.off)); err != nil {
				t.Fatal(err)
			}
			_, err := Open(c.dir, Options{})
			if !errors.Is(err, ErrCorrupt) || !bytes.Contains([]byte(err.Error()), []byte(segmentName(v.loc.seg))) ||
				!bytes.Contains([]byte(err.Error()), []byte("verify")) {
				t.Fatalf("writer open of a repository with a %s segment: %v", how, err)
			}
			after, err := os.Stat(path)
			if how == "deleted" && err == nil {
				t.Fatal("the writer re-created the deleted segment")
			}
			if how == "truncated" && (err != nil || after.Size() != int64(v.loc.off) || after.Size() >= fi.Size()) {
				t.Fatalf("the truncated segment changed: %v %v", after, err)
			}
			r := c.view(t)
			errs := readBlocks(t, r, c.d, c.p1.Seq, c.img1)
			for i, err := range errs {
				if uint64(i) == damageBlocks-1 || how == "deleted" {
					if !errors.Is(err, ErrCorrupt) {
						t.Errorf("block %d at %d of a %s segment: %v", i, c.p1.Seq, how, err)
					}
				} else if err != nil {
					t.Errorf("block %d at %d: %v", i, c.p1.Seq, err)
				}
			}
		})
	}
}

// TestCheckWithoutChecksum: content stored before locations carried a
// checksum is checked against its BLAKE3 hash.
func TestCheckWithoutChecksum(t *testing.T) {
	data := bytes.Repeat([]byte("hindsight"), 456)[:4096]
	v := version{found: true, hash: HashBlock(data), loc: location{n: 4096}}
	if err := check(v, data, data, nil); err != nil {
		t.Fatal(err)
	}
	bad := bytes.Clone(data)
	bad[100] ^= 1
	if err := check(v, bad, bad, nil); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("damaged content without a checksum: %v", err)
	}
	v.loc.flags, v.loc.sum = flagSum, checksum(data)
	if err := check(v, bad, bad, nil); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("damaged content with a checksum: %v", err)
	}
	// A location of the old length decodes without a checksum.
	enc := v.loc.append(nil)
	if l, err := decodeLocation(enc[:locationLenV1]); err == nil {
		t.Fatalf("an old-length location with the checksum flag decoded: %+v", l)
	}
	v.loc.flags = 0
	if l, err := decodeLocation(v.loc.append(nil)[:locationLenV1]); err != nil || l.flags&flagSum != 0 {
		t.Fatalf("old-length location: %+v %v", l, err)
	}
}

// TestVerifyNamesDamage: Verify finds each kind of damage and names what it
// affects; --full is needed for flipped bytes; an intact repository passes.
func TestVerifyNamesDamage(t *testing.T) {
	ctx := t.Context()
	c := newDamageCase(t, false)
	rep, err := c.view(t).Verify(ctx, VerifyOptions{Full: true})
	if err != nil || len(rep.Problems) != 0 || rep.Versions != damageBlocks+damageBlocks/2 || rep.ContentBytes == 0 {
		t.Fatalf("intact repository: %+v %v", rep, err)
	}
	const b = 13 // raw, in point 1 only
	v := c.flip(t, b, c.p1.Seq)
	if rep, _ := c.view(t).Verify(ctx, VerifyOptions{}); len(rep.Problems) != 0 {
		t.Fatalf("a structure check found content damage it cannot see: %+v", rep.Problems)
	}
	rep, err = c.view(t).Verify(ctx, VerifyOptions{Full: true})
	if err != nil || len(rep.Problems) != 1 {
		t.Fatalf("flipped byte: %+v %v", rep, err)
	}
	p := rep.Problems[0]
	if p.Kind != "content" || p.Disk != "web" || len(p.Blocks) != 1 || p.Blocks[0] != (Range{b, b}) ||
		p.FromSeq != c.p1.Seq || p.ToSeq != 0 || p.From == nil || !p.From.Equal(c.p1.Time) || p.Segment != "segments/"+segmentName(v.loc.seg) {
		t.Fatalf("flipped byte reported as %+v", p)
	}

	// Truncating the segment short of point 2's content damages both points.
	os.Truncate(c.segPath(v.loc.seg), int64(v.loc.off))
	rep, err = c.view(t).Verify(ctx, VerifyOptions{})
	if err != nil || len(rep.Problems) < 2 || rep.Problems[0].Kind != "segment" {
		t.Fatalf("truncated segment: %+v %v", rep, err)
	}

	// An index whose two orders disagree.
	c2 := newDamageCase(t, false)
	w, err := Open(c2.dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.db.Delete(journalKey(c2.p2.Seq, c2.d.ID, 0), nil); err != nil {
		t.Fatal(err)
	}
	rep, err = w.Verify(ctx, VerifyOptions{})
	w.Close()
	if err != nil || len(rep.Problems) != 1 || rep.Problems[0].Kind != "index" {
		t.Fatalf("a journal entry deleted: %+v %v", rep, err)
	}
}

// TestTruncatedIndexTable: a writer refuses an index whose table file is
// cut short, naming it; Verify reports it.
func TestTruncatedIndexTable(t *testing.T) {
	c := newDamageCase(t, false)
	w, err := Open(c.dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.db.Flush(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	ssts, _ := filepath.Glob(filepath.Join(c.dir, "db", "*.sst"))
	if len(ssts) == 0 {
		t.Fatal("no index table to damage")
	}
	fi, _ := os.Stat(ssts[0])
	os.Truncate(ssts[0], fi.Size()/2)
	_, err = Open(c.dir, Options{})
	if !errors.Is(err, ErrCorrupt) || !bytes.Contains([]byte(err.Error()), []byte(filepath.Base(ssts[0]))) {
		t.Fatalf("writer open over a truncated index table: %v", err)
	}
}
