package ext4

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// The tests compare the reader with e2fsprogs on images that mkfs.ext4 -d
// builds from a directory tree in t.TempDir().

// mkfs builds a sparse image of sizeMiB from the tree src with extra mkfs
// options and returns its path.
func mkfs(t *testing.T, src string, sizeMiB int64, opts ...string) string {
	t.Helper()
	if _, err := exec.LookPath("mkfs.ext4"); err != nil {
		t.Skip("mkfs.ext4 (e2fsprogs) is not installed")
	}
	img := filepath.Join(t.TempDir(), "fs.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, sizeMiB<<20); err != nil {
		t.Fatal(err)
	}
	args := append([]string{"-q", "-F", "-E", "root_owner=0:0"}, opts...)
	args = append(args, "-d", src, img)
	if out, err := exec.Command("mkfs.ext4", args...).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4 %v: %v\n%s", args, err, out)
	}
	return img
}

// debugfs runs one read-only debugfs request on img.
func debugfs(t *testing.T, img, req string) string {
	t.Helper()
	out, err := exec.Command("debugfs", "-R", req, img).Output()
	if err != nil {
		t.Fatalf("debugfs -R %q: %v", req, err)
	}
	return string(out)
}

// stat is what debugfs says of one inode.
type stat struct {
	ino   uint32
	size  int64
	flags uint32
	data  map[uint64]uint64 // file block → filesystem block
	meta  []uint64          // extent tree or indirect blocks, sorted
	table uint64            // the inode table block that holds the inode (imap)
	text  string
}

var (
	statHead = regexp.MustCompile(`Inode: (\d+)\s+Type: \S+\s+Mode:\s+\d+\s+Flags: 0x([0-9a-f]+)`)
	statSize = regexp.MustCompile(`Size: (\d+)\n`)
	statMap  = regexp.MustCompile(`\(([^)]+)\):(\d+)(?:-(\d+))?`)
	imapBlk  = regexp.MustCompile(`located at block (\d+)`)
)

func debugStat(t *testing.T, img, p string) stat {
	t.Helper()
	out := debugfs(t, img, "stat "+quote(p))
	h := statHead.FindStringSubmatch(out)
	sz := statSize.FindStringSubmatch(out)
	if h == nil || sz == nil {
		t.Fatalf("debugfs stat %s:\n%s", p, out)
	}
	s := stat{data: map[uint64]uint64{}, text: out}
	ino, _ := strconv.ParseUint(h[1], 10, 32)
	fl, _ := strconv.ParseUint(h[2], 16, 32)
	s.ino, s.flags = uint32(ino), uint32(fl)
	s.size, _ = strconv.ParseInt(sz[1], 10, 64)
	if i := strings.Index(out, "\nEXTENTS:\n"); i >= 0 {
		out = out[i:]
	} else if i := strings.Index(out, "\nBLOCKS:\n"); i >= 0 {
		out = out[i:]
	} else {
		out = ""
	}
	for _, m := range statMap.FindAllStringSubmatch(out, -1) {
		label, first := m[1], atou(m[2])
		last := first
		if m[3] != "" {
			last = atou(m[3])
		}
		if strings.HasPrefix(label, "ETB") || strings.HasSuffix(label, "IND") {
			s.meta = append(s.meta, first)
			continue
		}
		lo, hi, _ := strings.Cut(label, "-")
		l := atou(lo)
		if hi != "" && atou(hi)-l != last-first {
			t.Fatalf("debugfs stat %s: odd range %q", p, m[0])
		}
		for k := uint64(0); k <= last-first; k++ {
			s.data[l+k] = first + k
		}
	}
	slices.Sort(s.meta)
	im := imapBlk.FindStringSubmatch(debugfs(t, img, "imap "+quote(p)))
	if im == nil {
		t.Fatalf("debugfs imap %s: no block", p)
	}
	s.table = atou(im[1])
	return s
}

// quote makes a path one debugfs argument.
func quote(p string) string { return `"` + p + `"` }

func atou(s string) uint64 {
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		panic(s)
	}
	return n
}

// openImage opens img with the reader.
func openImage(t *testing.T, img string) *FS {
	t.Helper()
	fh, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fh.Close() })
	f, err := Open(fh)
	if err != nil {
		t.Fatalf("Open %s: %v", img, err)
	}
	return f
}

// blocksOf is what the reader maps for in: file block → filesystem block,
// and its sorted tree blocks.
func blocksOf(t *testing.T, f *FS, in *Inode) (map[uint64]uint64, []uint64) {
	t.Helper()
	data, meta, err := f.Map(in)
	if err != nil {
		t.Fatalf("Map inode %d: %v", in.Ino, err)
	}
	m := map[uint64]uint64{}
	for _, e := range data {
		for k := uint64(0); k < e.Len; k++ {
			if _, dup := m[e.Logical+k]; dup {
				t.Fatalf("inode %d: file block %d mapped twice", in.Ino, e.Logical+k)
			}
			m[e.Logical+k] = e.Physical + k
		}
	}
	meta = slices.Clone(meta)
	slices.Sort(meta)
	return m, meta
}

// checkPath resolves p (a path without symlinks on the way) in img built
// from src and compares everything the reader says with debugfs and with
// the file in src.
func checkPath(t *testing.T, f *FS, img, src, p string) *Inode {
	t.Helper()
	r, err := f.Resolve(p)
	if err != nil {
		t.Fatalf("Resolve %s: %v", p, err)
	}
	if r.Inode == nil {
		t.Fatalf("Resolve %s: missing", p)
	}
	want := debugStat(t, img, p)
	in := r.Inode
	if in.Ino != want.ino || in.Size != want.size || in.Flags != want.flags || in.Table != want.table {
		t.Fatalf("%s: reader ino %d size %d flags %#x table %d; debugfs ino %d size %d flags %#x table %d",
			p, in.Ino, in.Size, in.Flags, in.Table, want.ino, want.size, want.flags, want.table)
	}
	data, meta := blocksOf(t, f, in)
	if !mapsEqual(data, want.data) || !slices.Equal(meta, want.meta) {
		t.Fatalf("%s: reader data %v meta %v\ndebugfs data %v meta %v\n%s", p, data, meta, want.data, want.meta, want.text)
	}
	// The watch list: every directory from the root down, then the file.
	var watch []uint64
	dirs := []string{"/"}
	if p != "/" {
		parts := strings.Split(strings.Trim(p, "/"), "/")
		for i := range parts {
			dirs = append(dirs, "/"+strings.Join(parts[:i+1], "/"))
		}
	}
	for _, d := range dirs {
		st := debugStat(t, img, d)
		watch = append(watch, st.table)
		watch = append(watch, st.meta...)
		for _, b := range st.data {
			watch = append(watch, b)
		}
	}
	got := slices.Clone(r.Watch)
	slices.Sort(got)
	slices.Sort(watch)
	if !slices.Equal(slices.Compact(got), slices.Compact(watch)) {
		t.Fatalf("%s: watch %v, want %v", p, got, watch)
	}
	// The content, as the file in src.
	fi, err := os.Lstat(filepath.Join(src, p))
	if err != nil {
		t.Fatal(err)
	}
	switch {
	case fi.Mode().IsRegular():
		wantB, err := os.ReadFile(filepath.Join(src, p))
		if err != nil {
			t.Fatal(err)
		}
		b, err := f.ReadFile(in, 1<<30)
		if err != nil {
			t.Fatalf("ReadFile %s: %v", p, err)
		}
		if string(b) != string(wantB) {
			t.Fatalf("ReadFile %s: %d bytes differ from the %d of the source", p, len(b), len(wantB))
		}
	case fi.Mode()&os.ModeSymlink != 0:
		target, _ := os.Readlink(filepath.Join(src, p))
		b, err := f.ReadFile(in, 4096)
		if err != nil || string(b) != target {
			t.Fatalf("ReadFile of symlink %s = %q, %v; want %q", p, b, err, target)
		}
	}
	if in.IsDir() != fi.IsDir() || in.IsSymlink() != (fi.Mode()&os.ModeSymlink != 0) || in.IsRegular() != fi.Mode().IsRegular() {
		t.Fatalf("%s: type differs from the source's %v", p, fi.Mode())
	}
	return in
}

func mapsEqual(a, b map[uint64]uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// writeSparse writes n chunks of chunk bytes every stride bytes: a file of
// n extents (or n runs of mapped blocks) separated by holes.
func writeSparse(t *testing.T, name string, n int, chunk, stride int64) {
	t.Helper()
	fh, err := os.Create(name)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	buf := make([]byte, chunk)
	for i := 0; i < n; i++ {
		for j := range buf {
			buf[j] = byte(i*7 + j)
		}
		if _, err := fh.WriteAt(buf, int64(i)*stride); err != nil {
			t.Fatal(err)
		}
	}
}

func write(t *testing.T, name, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(name, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func symlink(t *testing.T, target, name string) {
	t.Helper()
	if err := os.Symlink(target, name); err != nil {
		t.Fatal(err)
	}
}
