package ext4

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// tree makes the source tree shared by the extent tests.
func tree(t *testing.T) string {
	src := t.TempDir()
	write(t, filepath.Join(src, "small.txt"), "hello, world\n")
	write(t, filepath.Join(src, "empty"), "")
	write(t, filepath.Join(src, "a/b/c/d/e/f/g/h/i/j/deep.txt"), "deep down\n")
	write(t, filepath.Join(src, "big"), strings.Repeat("0123456789abcdef", 3<<16)) // 3 MiB, contiguous
	// 1400 extents: an extent tree of depth 2 with 1 KiB and 4 KiB blocks.
	writeSparse(t, filepath.Join(src, "frag"), 1400, 4096, 8192)
	if err := os.Link(filepath.Join(src, "small.txt"), filepath.Join(src, "hard")); err != nil {
		t.Fatal(err)
	}
	symlink(t, "small.txt", filepath.Join(src, "fast"))
	symlink(t, "/a/b/c/d/e/f/g/h/i/j/"+strings.Repeat("x", 80), filepath.Join(src, "slow"))
	for i := 0; i < 400; i++ {
		write(t, filepath.Join(src, "many", fmt.Sprintf("entry-with-a-long-name-%04d", i)), fmt.Sprint(i))
	}
	return src
}

var treePaths = []string{"/", "/small.txt", "/empty", "/a/b/c/d/e/f/g/h/i/j/deep.txt", "/a/b/c/d/e",
	"/big", "/frag", "/hard", "/fast", "/slow", "/many", "/many/entry-with-a-long-name-0000",
	"/many/entry-with-a-long-name-0199", "/many/entry-with-a-long-name-0399"}

func TestExtentImages(t *testing.T) {
	src := tree(t)
	for _, bs := range []string{"1024", "4096"} {
		t.Run("b"+bs, func(t *testing.T) {
			img := mkfs(t, src, 32, "-b", bs)
			// An htree for /many, as the kernel would build it.
			if out, err := exec.Command("e2fsck", "-fyD", img).CombinedOutput(); err != nil && exitCode(err) > 1 {
				t.Fatalf("e2fsck -D: %v\n%s", err, out)
			}
			if st := debugStat(t, img, "/many"); st.flags&0x1000 == 0 {
				t.Fatalf("/many has no htree index (flags %#x)", st.flags)
			}
			if st := debugStat(t, img, "/frag"); !strings.Contains(st.text, "(ETB1)") {
				t.Fatalf("/frag has no extent tree of depth 2:\n%s", st.text)
			}
			f := openImage(t, img)
			if f.BlockSize != atoi64(bs) {
				t.Fatalf("block size %d, want %s", f.BlockSize, bs)
			}
			for _, p := range treePaths {
				checkPath(t, f, img, src, p)
			}
			hard, _ := f.Resolve("/hard")
			small, _ := f.Resolve("/small.txt")
			if hard.Inode.Ino != small.Inode.Ino {
				t.Fatalf("hard link: inode %d, its original %d", hard.Inode.Ino, small.Inode.Ino)
			}
		})
	}
}

// An ext2/3 block map, with single, double and triple indirect blocks.
func TestBlockMapImage(t *testing.T) {
	src := t.TempDir()
	write(t, filepath.Join(src, "small.txt"), "hello\n")
	write(t, filepath.Join(src, "dense"), strings.Repeat("z", 300<<10)) // double indirect with 1 KiB blocks
	// Data in the direct, single, double and triple indirect ranges, holes between.
	fh, err := os.Create(filepath.Join(src, "sparse"))
	if err != nil {
		t.Fatal(err)
	}
	for _, off := range []int64{0, 20 << 10, 300 << 10, 70 << 20, 70<<20 + 5000, 80<<20 + 3} {
		if _, err := fh.WriteAt([]byte(fmt.Sprintf("at %d\n", off)), off); err != nil {
			t.Fatal(err)
		}
	}
	fh.Close()
	symlink(t, "/"+strings.Repeat("long/", 20)+"target", filepath.Join(src, "slow"))
	symlink(t, "small.txt", filepath.Join(src, "fast"))
	write(t, filepath.Join(src, "d1/d2/d3/f"), "f\n")
	img := mkfs(t, src, 16, "-b", "1024", "-O", "^extent,^64bit,^flex_bg,^metadata_csum")
	if st := debugStat(t, img, "/sparse"); !strings.Contains(st.text, "(TIND)") {
		t.Fatalf("/sparse has no triple indirect block:\n%s", st.text)
	}
	f := openImage(t, img)
	for _, p := range []string{"/", "/small.txt", "/dense", "/sparse", "/slow", "/fast", "/d1/d2/d3/f"} {
		in := checkPath(t, f, img, src, p)
		if in.Flags&flagExtents != 0 {
			t.Fatalf("%s uses extents", p)
		}
	}
}

// Inline data: small files and directories live in the inode.
func TestInlineImage(t *testing.T) {
	src := t.TempDir()
	write(t, filepath.Join(src, "tiny"), "inline content\n")
	write(t, filepath.Join(src, "sixty"), strings.Repeat("6", 60))
	write(t, filepath.Join(src, "dir/x"), "x")
	write(t, filepath.Join(src, "big"), strings.Repeat("b", 10000))
	write(t, filepath.Join(src, "hundred"), strings.Repeat("h", 100)) // 40 bytes in system.data
	// An inline directory (mke2fs moves one that outgrows i_block to a
	// block; the kernel would go on in system.data).
	for i := 0; i < 4; i++ {
		write(t, filepath.Join(src, "names", fmt.Sprintf("n%d", i)), "n")
	}
	img := mkfs(t, src, 8, "-O", "inline_data")
	f := openImage(t, img)
	for _, p := range []string{"/tiny", "/sixty", "/hundred", "/dir/x", "/big", "/names", "/names/n3"} {
		in := checkPath(t, f, img, src, p)
		if p != "/big" && in.Flags&flagInline == 0 {
			t.Fatalf("%s is not inline (flags %#x)", p, in.Flags)
		}
	}
	if in := checkPath(t, f, img, src, "/hundred"); in.Size <= 60 {
		t.Fatalf("/hundred: size %d: not inline past i_block", in.Size)
	}
}

// Symlinks on the way are followed inside the filesystem, the last is not.
func TestResolveSymlinks(t *testing.T) {
	src := t.TempDir()
	write(t, filepath.Join(src, "small.txt"), "root's\n")
	write(t, filepath.Join(src, "a/b/c/file"), "c's\n")
	symlink(t, "a/b/c", filepath.Join(src, "rel"))
	symlink(t, "/a/b", filepath.Join(src, "a/abs"))
	symlink(t, "../../../../..", filepath.Join(src, "a/b/up"))
	symlink(t, "/../../a", filepath.Join(src, "out"))
	symlink(t, "loop2", filepath.Join(src, "loop1"))
	symlink(t, "loop1", filepath.Join(src, "loop2"))
	symlink(t, "c/", filepath.Join(src, "a/b/slash"))
	// A chain of 30 links, each to the next.
	for i := 0; i < 30; i++ {
		symlink(t, fmt.Sprintf("chain%d", i+1), filepath.Join(src, fmt.Sprintf("chain%d", i)))
	}
	symlink(t, "a", filepath.Join(src, "chain30"))
	img := mkfs(t, src, 8)
	f := openImage(t, img)
	ino := func(p string) uint32 { return debugStat(t, img, p).ino }
	for _, c := range []struct{ path, real string }{
		{"/rel/file", "/a/b/c/file"},
		{"/a/abs/c/file", "/a/b/c/file"},
		{"/a/b/up/small.txt", "/small.txt"},
		{"/out/b/c/file", "/a/b/c/file"},
		{"/../../small.txt", "/small.txt"},
		{"/a/b/slash/file", "/a/b/c/file"},
		{"/a/abs/slash/file", "/a/b/c/file"},
		{"/chain0/b/c/file", "/a/b/c/file"},
		{"/rel", "/rel"}, // the last component is not followed
		{"/a/b/up", "/a/b/up"},
		{"/rel/.", "/rel"}, // lexically clean: "/rel/." is "/rel"
	} {
		r, err := f.Resolve(c.path)
		if err != nil || r.Inode == nil {
			t.Fatalf("Resolve %s: %v, %+v", c.path, err, r)
		}
		if want := ino(c.real); r.Inode.Ino != want {
			t.Errorf("Resolve %s: inode %d, want %d (%s)", c.path, r.Inode.Ino, want, c.real)
		}
	}
	for _, p := range []string{"/loop1/x", "/nothing", "/a/nothing/x", "/small.txt/x", "/a/b/c/file/"} {
		r, err := f.Resolve(p)
		if err != nil {
			t.Fatalf("Resolve %s: %v", p, err)
		}
		if p == "/a/b/c/file/" { // Clean drops the slash: the file itself
			if r.Inode == nil || !r.Inode.IsRegular() {
				t.Errorf("Resolve %s: %+v", p, r.Inode)
			}
			continue
		}
		if r.Inode != nil {
			t.Errorf("Resolve %s: inode %d, want none", p, r.Inode.Ino)
		}
		if len(r.Watch) == 0 {
			t.Errorf("Resolve %s: the directories read are not watched", p)
		}
	}
}

func TestOpenRejects(t *testing.T) {
	if _, err := Open(bytes.NewReader(make([]byte, 1<<16))); !errors.Is(err, ErrNotExt4) {
		t.Fatalf("zeros: %v", err)
	}
	if _, err := Open(bytes.NewReader(nil)); !errors.Is(err, ErrNotExt4) {
		t.Fatalf("empty: %v", err)
	}
	img := tinyImage(t)
	img[1024+0x18] = 9 // block size 1024<<9
	if _, err := Open(bytes.NewReader(img)); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("block size: %v", err)
	}
}

// A file too large for ReadFile's limit is refused, not read.
func TestReadFileLimit(t *testing.T) {
	f, err := Open(bytes.NewReader(tinyImage(t)))
	if err != nil {
		t.Fatal(err)
	}
	r, err := f.Resolve("/srv/frag")
	if err != nil || r.Inode == nil {
		t.Fatal(r, err)
	}
	if _, err := f.ReadFile(r.Inode, 10); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("ReadFile past its limit: %v", err)
	}
}

func exitCode(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	return -1
}

func atoi64(s string) int64 { return int64(atou(s)) }

// With 64 KiB blocks, a directory entry that spans a whole block has
// rec_len 65536, which is stored as 65535 (e2fsprogs) or 0 (the kernel).
func TestBigBlockDirectory(t *testing.T) {
	src := t.TempDir()
	name := func(i int) string { return fmt.Sprintf("%0250d", i) }
	for i := 100; i < 800; i++ { // three blocks of 250-byte names
		write(t, filepath.Join(src, "d", name(i)), "")
	}
	img := mkfs(t, src, 64, "-b", "65536", "-O", "^has_journal,^metadata_csum") // no dirent tail
	// Empty the middle block: its first entry then spans all of it.
	var search strings.Builder
	for i := 100; i < 800; i++ {
		fmt.Fprintf(&search, "dirsearch /d %s\n", name(i))
	}
	out := debugfsScript(t, img, search.String(), false)
	var unlink strings.Builder
	cur := ""
	for _, line := range strings.Split(out, "\n") { // debugfs -f echoes each request
		if n, ok := strings.CutPrefix(line, "debugfs: dirsearch /d "); ok {
			cur = n
		} else if strings.HasPrefix(line, "Entry found at logical block 1,") {
			fmt.Fprintf(&unlink, "unlink /d/%s\n", cur)
		}
	}
	if unlink.Len() == 0 {
		t.Fatalf("no entry in the second block:\n%.2000s", out)
	}
	debugfsScript(t, img, unlink.String(), true)
	f := openImage(t, img)
	checkPath(t, f, img, src, "/d/"+name(799))
	if r, err := f.Resolve("/d/" + name(700)); err != nil || r.Inode == nil {
		t.Fatalf("an entry after the empty block: %+v, %v", r, err)
	}
}

// debugfsScript runs the requests of script (one a line) on img.
func debugfsScript(t *testing.T, img, script string, write bool) string {
	t.Helper()
	cmds := filepath.Join(t.TempDir(), "cmds")
	if err := os.WriteFile(cmds, []byte(script), 0o600); err != nil {
		t.Fatal(err)
	}
	args := []string{"-f", cmds, img}
	if write {
		args = append([]string{"-w"}, args...)
	}
	out, err := exec.Command("debugfs", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("debugfs %v: %v\n%s", args, err, out)
	}
	return string(out)
}

// meta_bg: past the first meta group, the descriptors of each meta group
// sit in its first group, after the superblock copy if it has one.
func TestMetaBGImage(t *testing.T) {
	src := t.TempDir()
	// 56 inodes per group: 2100 files fill the groups past the first meta
	// group (16 descriptors of 64 bytes per 1 KiB block).
	for i := 1; i <= 2100; i++ {
		write(t, filepath.Join(src, "d", fmt.Sprintf("f%d", i)), fmt.Sprintln(i))
	}
	for _, features := range []string{"meta_bg,^resize_inode", "meta_bg,^resize_inode,sparse_super2",
		"meta_bg,^resize_inode,^sparse_super", "meta_bg,^resize_inode,^64bit"} {
		t.Run(features, func(t *testing.T) {
			img := mkfs(t, src, 300, "-b", "1024", "-N", "2200", "-O", features)
			f := openImage(t, img)
			for _, p := range []string{"/d/f1", "/d/f1000", "/d/f1500", "/d/f2100"} {
				checkPath(t, f, img, src, p)
			}
			var ino, group int
			fmt.Sscanf(debugfs(t, img, "imap /d/f2100"), "Inode %d is part of block group %d", &ino, &group)
			if per := int(f.BlockSize / f.descSize); group < per && f.descSize == 64 {
				t.Fatalf("/d/f2100 is in group %d, not past the first meta group", group)
			}
		})
	}
}

// An inline directory that goes on in system.data, as the kernel writes
// one (mke2fs moves such a directory to a block): its entries are read
// from both parts.
func TestInlineDirectoryXattr(t *testing.T) {
	le := binary.LittleEndian
	dirent := func(ino uint32, recLen int, name string) []byte {
		b := le.AppendUint32(nil, ino)
		b = le.AppendUint16(b, uint16(recLen))
		b = append(b, byte(len(name)), 1)
		b = append(b, name...)
		return append(b, make([]byte, recLen-8-len(name))...)
	}
	in := &Inode{Ino: 12, Mode: modeDir, Flags: flagInline}
	body := le.AppendUint32(nil, 2) // the parent
	body = append(body, dirent(20, 12, "a")...)
	body = append(body, dirent(21, 44, "b")...) // to the end of i_block
	copy(in.block[:], body)
	value := append(dirent(22, 16, "in-xattr"), dirent(23, 24, "last")...)
	in.Size = 60 + int64(len(value))
	// 32 bytes of extra fields, the xattr header, one entry, the value.
	extra := le.AppendUint16(make([]byte, 0, 128), 32)
	extra = append(extra, make([]byte, 30)...)
	extra = le.AppendUint32(extra, 0xea020000)
	entry := []byte{4, 7}
	entry = le.AppendUint16(entry, 24) // value at 24 from the first entry
	entry = le.AppendUint32(entry, 0)
	entry = le.AppendUint32(entry, uint32(len(value)))
	entry = le.AppendUint32(entry, 0)
	entry = append(entry, "data"...)
	extra = append(extra, entry...)
	extra = append(extra, 0, 0, 0, 0) // end of the entries
	extra = append(extra, value...)
	in.extra = extra
	f := &FS{BlockSize: 1024, blocks: 1}
	for name, want := range map[string]uint32{"a": 20, "b": 21, "in-xattr": 22, "last": 23} {
		if got, err := f.Lookup(in, name); err != nil || got != want {
			t.Errorf("Lookup %q = %d, %v; want %d", name, got, err, want)
		}
	}
	if _, err := f.Lookup(in, "none"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Lookup of a missing name: %v", err)
	}
	in.Size += 100 // more than system.data holds
	if _, err := f.ReadFile(in, 1<<20); !errors.Is(err, ErrCorrupt) {
		t.Errorf("inline data past system.data: %v", err)
	}
}
