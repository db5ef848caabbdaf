package ext4

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"runtime"
	"testing"
	"time"
)

// tinyImage is testdata/tiny.img.gz (made by testdata/mktiny.sh), unpacked.
func tinyImage(t testing.TB) []byte {
	t.Helper()
	gz, err := os.ReadFile("testdata/tiny.img.gz")
	if err != nil {
		t.Error(err)
	}
	zr, err := gzip.NewReader(bytes.NewReader(gz))
	if err != nil {
		t.Error(err)
	}
	b, err := io.ReadAll(zr)
	if err != nil {
		t.Error(err)
	}
	return b
}

// patch applies a fuzz input to a copy of base: a sequence of
// [offset u16 LE][n u8][n bytes], each written at offset. The tiny image
// is 64 KiB, so an offset reaches all of it.
func patch(base, script []byte) []byte {
	img := bytes.Clone(base)
	for len(script) >= 3 {
		off, n := int(binary.LittleEndian.Uint16(script)), int(script[2])
		script = script[3:]
		n = min(n, len(script))
		if off < len(img) {
			copy(img[off:], script[:n])
		}
		script = script[n:]
	}
	return img
}

// op is one patch of a seed script.
func op(off int64, b ...byte) []byte {
	return append([]byte{byte(off), byte(off >> 8), byte(len(b))}, b...)
}

// opsAt is the ops that write b at off.
func opsAt(off int64, b []byte) []byte {
	var out []byte
	for o := 0; o < len(b); o += 255 {
		out = append(out, op(off+int64(o), b[o:min(o+255, len(b))]...)...)
	}
	return out
}

// indexNode is an extent index node of depth with n entries, all child.
func indexNode(depth, n int, child uint64) []byte {
	b := []byte{0x0a, 0xf3, byte(n), 0, byte(n), 0, byte(depth), 0, 0, 0, 0, 0}
	for i := 0; i < n; i++ {
		b = binary.LittleEndian.AppendUint32(b, uint32(i))
		b = binary.LittleEndian.AppendUint32(b, uint32(child))
		b = binary.LittleEndian.AppendUint32(b, 0)
	}
	return b
}

// budgetReader fails reads once more than budget bytes were asked for: a
// corrupt image must not make the reader work without bound.
type budgetReader struct {
	r      io.ReaderAt
	budget int64
	over   bool
}

var errBudget = errors.New("read budget exhausted")

func (b *budgetReader) ReadAt(p []byte, off int64) (int, error) {
	if b.budget -= int64(len(p)); b.budget < 0 {
		b.over = true
		return 0, errBudget
	}
	return b.r.ReadAt(p, off)
}

func (b *budgetReader) Size() int64 { return b.r.(*bytes.Reader).Size() }

var fuzzPaths = []string{"/", "/etc/fstab", "/etc/site/index.html", "/abs", "/slow", "/hard",
	"/srv/frag", "/srv/site/../frag", "/slow/x", "/abs/x", "/etc/site/../../srv/frag"}

// FuzzExt4 reads corrupted versions of a real tiny image: the reader must
// not panic, must stop within a bounded amount of reading, and must never
// name a block outside the image.
func FuzzExt4(f *testing.F) {
	base := tinyImage(f)
	f.Add([]byte{})
	fs, err := Open(bytes.NewReader(base))
	if err != nil {
		f.Fatal(err)
	}
	inodeAt := func(p string) (*Inode, int64) {
		r, err := fs.Resolve(p)
		if err != nil || r.Inode == nil {
			f.Fatalf("seed image: %s: %v", p, err)
		}
		idx := int64((r.Inode.Ino - 1) % fs.perGroup)
		return r.Inode, int64(r.Inode.Table)*fs.BlockSize + idx*fs.inodeSize%fs.BlockSize
	}
	frag, fragOff := inodeAt("/srv/frag")
	_, meta, _ := fs.Map(frag)
	etb := int64(meta[0]) * fs.BlockSize
	_, slowOff := inodeAt("/slow")
	root, _ := fs.ReadInode(rootIno)
	rootData, _, _ := fs.Map(root)
	rootDir := int64(rootData[0].Physical) * fs.BlockSize
	// Index nodes in free blocks 60-63 of the image (dumpe2fs), each
	// pointing 84 times at the next: a tree of 84^4 paths to frag's leaf.
	dag := opsAt(fragOff+0x28, indexNode(5, 1, 60))
	for b := uint64(60); b < 64; b++ {
		next := b + 1
		if b == 63 {
			next = meta[0]
		}
		dag = append(dag, opsAt(int64(b)*fs.BlockSize, indexNode(int(64-b), 84, next))...)
	}
	for _, seed := range [][]byte{
		op(1024+0x18, 2),                      // block size 4096
		op(1024+0x4, 0xff, 0xff, 0xff, 0xff),  // blocks count
		op(1024+0x28, 1, 0, 0, 0),             // one inode per group
		op(1024+0x58, 0, 4),                   // inode size 1024
		op(fragOff+0x28+6, 7),                 // extent depth 7
		op(fragOff+0x28+2, 5),                 // 5 entries in a root of 4
		op(etb+2, 0xff, 0xff),                 // 65535 entries in a block
		op(etb+6, 1),                          // a leaf that says it is an index
		opsAt(etb, indexNode(1, 84, meta[0])), // an index that points at itself
		dag,                                   // a DAG of index nodes
		op(fragOff+0x20, 0, 0, 0, 0),          // extents read as a block map
		op(fragOff+4, 0xff, 0xff, 0xff, 0x7f), // size 2 GiB
		op(slowOff+4, 59),                     // slow symlink that looks fast
		op(rootDir+4, 0, 0),                   // rec_len 0
		op(rootDir+4, 0xff, 0xff),             // rec_len past the block
		op(rootDir+6, 0xff),                   // name_len past rec_len
		op(1024+0x60, base[1024+0x60]|0x10),   // meta_bg
		op(fragOff+0x20+3, 0x10, 0, 0),        // inline data of 2 KiB
		op(fragOff+0x80, 0xf0, 0),             // i_extra_isize past the inode
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, script []byte) {
		done := make(chan struct{})
		go func() {
			defer close(done)
			checkImage(t, patch(base, script))
		}()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			buf := make([]byte, 1<<20)
			t.Errorf("the reader still runs after 10 s:\n%s", buf[:runtime.Stack(buf, true)])
		}
	})
}

// checkImage reads everything it can of img and checks the bounds.
func checkImage(t *testing.T, img []byte) {
	br := &budgetReader{r: bytes.NewReader(img), budget: 256 << 20}
	defer func() {
		if br.over {
			t.Error("the reader read more than 256 MiB of a 64 KiB image")
		}
	}()
	fs, err := Open(br)
	if err != nil {
		return
	}
	nblocks := uint64(int64(len(img)) / fs.BlockSize)
	inImage := func(what string, b uint64) {
		if b >= nblocks {
			t.Errorf("%s: block %d outside the image of %d blocks", what, b, nblocks)
		}
	}
	checkInode := func(in *Inode) {
		if in.Table != 0 {
			inImage("inode table", in.Table)
		}
		data, meta, err := fs.Map(in)
		if err != nil {
			return
		}
		for _, b := range meta {
			inImage("tree block", b)
		}
		for _, e := range data {
			if e.Len > 0 {
				inImage("extent", e.Physical+e.Len-1)
			}
		}
		fs.ReadFile(in, 1<<20)
	}
	for _, p := range fuzzPaths {
		r, err := fs.Resolve(p)
		if err != nil {
			continue
		}
		for _, b := range r.Watch {
			inImage("watch "+p, b)
		}
		if r.Inode != nil {
			checkInode(r.Inode)
		}
	}
	for ino := uint32(1); ino <= 40; ino++ {
		if in, err := fs.ReadInode(ino); err == nil {
			checkInode(in)
		}
	}
}
