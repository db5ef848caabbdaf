package store

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// fuzzRepo is a repository with one disk and a few captured steps, whose
// first segment seeds the fuzzers.
func fuzzRepo(f *testing.F) (*Repo, Disk, []byte) {
	dir := f.TempDir()
	if err := Init(dir); err != nil {
		f.Fatal(err)
	}
	r, err := Open(dir, Options{})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { r.Close() })
	d, err := r.CreateDisk("f", 64*4096, 4096)
	if err != nil {
		f.Fatal(err)
	}
	for i := range 3 {
		ws := []BlockWrite{{Disk: d, Block: uint64(i), Data: block(byte(i + 1))}, {Disk: d, Block: 9, Data: make([]byte, 4096)}}
		if _, err := r.CaptureAt(d.Timeline, time.Unix(int64(1e9+i), 0), ws); err != nil {
			f.Fatal(err)
		}
	}
	if err := r.Sync(); err != nil {
		f.Fatal(err)
	}
	seg, err := os.ReadFile(filepath.Join(dir, "segments", segmentName(1)))
	if err != nil {
		f.Fatal(err)
	}
	return r, d, seg
}

// FuzzReplayFrames: replaying arbitrary bytes as the log never panics and
// only ever takes whole frames whose checks hold.
func FuzzReplayFrames(f *testing.F) {
	r, d, seg := fuzzRepo(f)
	f.Add(seg)
	f.Add(seg[:len(seg)/2])
	if len(seg) > 100 {
		bad := bytes.Clone(seg)
		bad[90] ^= 1
		f.Add(bad)
	}
	known := map[uint32]bool{d.ID: true}
	f.Fuzz(func(t *testing.T, data []byte) {
		head := r.head.Load()
		defer r.head.Store(head)
		r.head.Store(0)
		b := r.db.NewBatch()
		defer b.Close()
		rd := bytes.NewReader(data)
		added := map[uint32]uint64{}
		for off := uint64(0); ; {
			frame, ok := readFrame(rd, off)
			if !ok || !r.replayFrame(b, frame, added, known) {
				break
			}
			off += uint64(len(frame))
		}
	})
}

// FuzzReadContent: any stored bytes under any location decode to a block
// or an error, never a panic, and pass only when their checksum (or, for
// content stored without one, their hash) holds.
func FuzzReadContent(f *testing.F) {
	r, _, _ := fuzzRepo(f)
	good := block(7)
	loc := location{flags: flagSum, n: 4096, sum: checksum(good)}
	f.Add(loc.append(nil), good)
	z, _ := r.segs.compress(bytes.Repeat([]byte("ab"), 2048))
	f.Add(location{flags: flagZstd, n: uint32(len(z))}.append(nil), z)
	f.Add(location{}.append(nil)[:locationLenV1], good)
	f.Fuzz(func(t *testing.T, enc, stored []byte) {
		l, err := decodeLocation(enc)
		if err != nil {
			return
		}
		v := version{found: true, hash: HashBlock(good), loc: l}
		dst := make([]byte, 4096)
		err = check(v, stored, dst, func() error { return r.segs.decode(dst, stored, l.flags) })
		switch {
		case err == nil && l.flags&flagSum != 0 && checksum(stored) != l.sum:
			t.Fatal("stored bytes passed with a checksum that differs")
		case err == nil && l.flags&flagSum == 0 && !bytes.Equal(dst, good):
			t.Fatalf("content other than the block hashed passed its check (flags %#x)", l.flags)
		}
	})
}

// FuzzReadRecord: any bytes read as records.log give whole records whose
// checksum holds, or stop; never a panic or an allocation their length
// alone asks for.
func FuzzReadRecord(f *testing.F) {
	r, _, _ := fuzzRepo(f)
	recs, err := os.ReadFile(filepath.Join(r.dir, recordsFile))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(recs)
	f.Add(recs[:len(recs)/2])
	f.Fuzz(func(t *testing.T, data []byte) {
		rd := bytes.NewReader(data)
		for off := uint64(0); ; {
			rec, ok := readRecord(rd, off)
			if !ok {
				break
			}
			if rec.size == 0 || off+rec.size > uint64(len(data)) {
				t.Fatalf("record of %d bytes at %d in %d", rec.size, off, len(data))
			}
			b := r.db.NewBatch()
			b.SetRepr(rec.batch) // a damaged batch is refused, never applied blindly
			b.Close()
			off += rec.size
		}
	})
}
