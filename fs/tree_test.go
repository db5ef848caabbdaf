package fs

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hindsight-cdp/hindsight/cdp/timespec"
	"github.com/hindsight-cdp/hindsight/store"
)

// t0 is the fixture's first point; the fixture's clock stands at t0+1h.
var t0 = time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)

// fixture is what newFixture put in the fake source.
type fixture struct {
	p   []store.Point // vm1's points p[0..5]
	vm2 []store.Point
	now *atomic.Int64 // Unix nanoseconds of the fake clock
}

func (f fixture) clock() func() time.Time {
	return func() time.Time { return time.Unix(0, f.now.Load()).UTC() }
}

// newFixture: vm1 (1 MiB) with six points ten minutes apart, some with
// fractional seconds, and bookmarks on p[1] and p[3]; vm2 (64 KiB) with
// points at 10:05 and 10:35; "empty" with no point at all.
func newFixture() (*fakeSource, fixture) {
	src := newFakeSource()
	src.addDisk("vm1", 1<<20, t0.Add(-time.Hour))
	src.addDisk("vm2", 64<<10, t0)
	src.addDisk("empty", 1<<20, t0)
	f := fixture{now: new(atomic.Int64)}
	f.now.Store(t0.Add(time.Hour).UnixNano())
	offsets := []time.Duration{
		0,
		10*time.Minute + 500*time.Millisecond,
		20*time.Minute + 123456789*time.Nanosecond,
		30 * time.Minute,
		40 * time.Minute,
		50 * time.Minute,
	}
	for i, off := range offsets {
		f.p = append(f.p, src.addPoint("vm1", t0.Add(off)))
		if i == 0 || i == 3 {
			f.vm2 = append(f.vm2, src.addPoint("vm2", t0.Add(off+5*time.Minute)))
		}
	}
	src.addBookmark("vm1", "before-upgrade", f.p[1], "user")
	src.addBookmark("vm1", "app", f.p[3], "application")
	return src, f
}

// readInfo reads and decodes an info.json.
func readInfo(t *testing.T, path string) info {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var in info
	if err := jsonUnmarshal(data, &in); err != nil {
		t.Fatalf("%s: %v\n%s", path, err, data)
	}
	return in
}

// jsonUnmarshal decodes strictly: info.json has no field the test does not know.
func jsonUnmarshal(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}

func names(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		out = append(out, e.Name())
	}
	return out
}

func sorted(s ...string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

func TestListing(t *testing.T) {
	src, f := newFixture()
	mnt := testMount(t, src, Options{Now: f.clock()})

	if got, want := names(t, mnt), sorted("empty", "vm1", "vm2"); !slices.Equal(got, want) {
		t.Errorf("root: %q, want %q", got, want)
	}
	want := []string{"latest", "bookmarks", "by-time"}
	for _, p := range f.p {
		want = append(want, timespec.Format(p.Time))
	}
	if got := names(t, filepath.Join(mnt, "vm1")); !slices.Equal(got, sorted(want...)) {
		t.Errorf("vm1: %q, want %q", got, sorted(want...))
	}
	if got, want := names(t, filepath.Join(mnt, "vm1", "bookmarks")), sorted("app", "before-upgrade"); !slices.Equal(got, want) {
		t.Errorf("vm1/bookmarks: %q, want %q", got, want)
	}
	// No point: nothing to show but the (empty) bookmarks.
	if got, want := names(t, filepath.Join(mnt, "empty")), []string{"bookmarks", "by-time"}; !slices.Equal(got, want) {
		t.Errorf("empty: %q, want %q", got, want)
	}
	for _, dir := range []string{"latest", timespec.Format(f.p[2].Time), "bookmarks/app", "20261125T101500Z"} {
		got := names(t, filepath.Join(mnt, "vm1", dir))
		if want := sorted("info.json", "vm1.vmdk", "vm1-flat.vmdk", "vm1.vhd", "vm1.vmx"); !slices.Equal(got, want) {
			t.Errorf("vm1/%s: %q, want %q", dir, got, want)
		}
	}
	// Listed names resolve to the points they are named after.
	for _, p := range f.p {
		in := readInfo(t, filepath.Join(mnt, "vm1", timespec.Format(p.Time), "info.json"))
		if in.Seq != p.Seq || !in.Time.Equal(p.Time) {
			t.Errorf("%s: seq %d time %s, want %d %s", timespec.Format(p.Time), in.Seq, in.Time, p.Seq, p.Time)
		}
	}
}

// ListPoints limits the points listed; bookmarks' instants are listed anyway.
func TestListPoints(t *testing.T) {
	src, f := newFixture()
	mnt := testMount(t, src, Options{Now: f.clock(), ListPoints: 2})
	want := sorted("latest", "bookmarks", "by-time",
		timespec.Format(f.p[4].Time), timespec.Format(f.p[5].Time), // newest two
		timespec.Format(f.p[1].Time), timespec.Format(f.p[3].Time)) // bookmarked
	if got := names(t, filepath.Join(mnt, "vm1")); !slices.Equal(got, want) {
		t.Errorf("vm1: %q, want %q", got, want)
	}
	// Unlisted instants still resolve.
	in := readInfo(t, filepath.Join(mnt, "vm1", timespec.Format(f.p[0].Time), "info.json"))
	if in.Seq != f.p[0].Seq {
		t.Errorf("unlisted p0: seq %d, want %d", in.Seq, f.p[0].Seq)
	}
}

// Every accepted form of time resolves to the newest point at or before it,
// and the instant's files hold the model's image at that point.
func TestResolve(t *testing.T) {
	src, f := newFixture()
	mnt := testMount(t, src, Options{Now: f.clock()})
	now := t0.Add(time.Hour)
	p := f.p
	before := func(i int) *bookmarkRef {
		if i < 1 {
			return nil
		}
		if i < 3 {
			return &bookmarkRef{Name: "before-upgrade", Time: p[1].Time, Seq: p[1].Seq, Kind: "user"}
		}
		return &bookmarkRef{Name: "app", Time: p[3].Time, Seq: p[3].Seq, Kind: "application"}
	}
	after := func(i int) *bookmarkRef {
		switch {
		case i < 1:
			return &bookmarkRef{Name: "before-upgrade", Time: p[1].Time, Seq: p[1].Seq, Kind: "user"}
		case i < 3:
			return &bookmarkRef{Name: "app", Time: p[3].Time, Seq: p[3].Seq, Kind: "application"}
		}
		return nil
	}
	tests := []struct {
		name      string // under vm1/
		point     int    // index into p
		requested time.Time
	}{
		{timespec.Format(p[1].Time), 1, p[1].Time},                               // listed, with fraction
		{timespec.Format(p[2].Time), 2, p[2].Time},                               // listed, nanoseconds
		{"20261125T100000Z", 0, t0},                                              // listed, whole second
		{"20261125T101500Z", 1, t0.Add(15 * time.Minute)},                        // ISO basic, unlisted
		{"20261125T102000.2Z", 2, t0.Add(20*time.Minute + 200*time.Millisecond)}, // ISO basic, fraction
		{"20261125T102000.1Z", 1, t0.Add(20*time.Minute + 100*time.Millisecond)}, // just before p[2]
		{"2026-11-25T10:35:00Z", 3, t0.Add(35 * time.Minute)},                    // RFC 3339
		{"2026-11-25T11:45:00.5+01:00", 4, t0.Add(45*time.Minute + 500*time.Millisecond)},
		{fmt.Sprintf("@%d", t0.Add(25*time.Minute).Unix()), 2, t0.Add(25 * time.Minute)},
		{"-15m", 4, now.Add(-15 * time.Minute)},
		{"-1h", 0, t0},
		{"now", 5, now},
		{"latest", 5, p[5].Time},
		{"bookmarks/before-upgrade", 1, p[1].Time},
		{"bookmarks/app", 3, p[3].Time},
	}
	for _, tc := range tests {
		t.Run(strings.ReplaceAll(tc.name, "/", "_"), func(t *testing.T) {
			dir := filepath.Join(mnt, "vm1", tc.name)
			pt := p[tc.point]
			in := readInfo(t, filepath.Join(dir, "info.json"))
			want := info{
				Disk:           "vm1",
				Requested:      tc.requested,
				Seq:            pt.Seq,
				Time:           pt.Time,
				Resolved:       pointRef{Time: pt.Time, Seq: pt.Seq},
				BookmarkBefore: before(tc.point),
				BookmarkAfter:  after(tc.point),
				Size:           1 << 20,
				BlockSize:      4096,
			}
			if !infoEqual(in, want) {
				t.Errorf("info.json:\n got %+v\nwant %+v", fmtInfo(in), fmtInfo(want))
			}
			checkImages(t, dir, "vm1", src.image("vm1", pt.Seq))
		})
	}
}

// After pruning removes a point, the instants it showed resolve to the kept
// point before it: info.json says what was asked and what is shown, and the
// files are the kept point's.
func TestResolveThinned(t *testing.T) {
	src, f := newFixture()
	mnt := testMount(t, src, Options{Now: f.clock()})
	p := f.p
	src.removePoint("vm1", p[2].Seq)
	src.removePoint("vm1", p[3].Seq)
	for _, tc := range []struct {
		name      string
		requested time.Time
		point     store.Point
	}{
		{timespec.Format(p[2].Time), p[2].Time, p[1]},                 // a removed point's own instant
		{"20261125T103500Z", t0.Add(35 * time.Minute), p[1]},          // between removed points
		{"20261125T104500Z", t0.Add(45 * time.Minute), p[4]},          // between kept points
		{timespec.Format(p[4].Time), p[4].Time, p[4]},                 // a kept point, exact
		{"20261125T100000.000000001Z", t0.Add(time.Nanosecond), p[0]}, // just after the first
	} {
		dir := filepath.Join(mnt, "vm1", tc.name)
		in := readInfo(t, filepath.Join(dir, "info.json"))
		if !in.Requested.Equal(tc.requested) || in.Resolved.Seq != tc.point.Seq || !in.Resolved.Time.Equal(tc.point.Time) ||
			in.Seq != tc.point.Seq || !in.Time.Equal(tc.point.Time) {
			t.Errorf("%s: requested %s resolved %s (seq %d), time %s seq %d; want requested %s resolved %s (seq %d)",
				tc.name, in.Requested, in.Resolved.Time, in.Resolved.Seq, in.Time, in.Seq, tc.requested, tc.point.Time, tc.point.Seq)
		}
		checkImages(t, dir, "vm1", src.image("vm1", tc.point.Seq))
	}
}

func infoEqual(a, b info) bool {
	refEqual := func(x, y *bookmarkRef) bool {
		if x == nil || y == nil {
			return x == y
		}
		return x.Name == y.Name && x.Time.Equal(y.Time) && x.Seq == y.Seq && x.Kind == y.Kind
	}
	return a.Disk == b.Disk && a.Requested.Equal(b.Requested) && a.Seq == b.Seq && a.Time.Equal(b.Time) &&
		a.Resolved.Seq == b.Resolved.Seq && a.Resolved.Time.Equal(b.Resolved.Time) &&
		refEqual(a.BookmarkBefore, b.BookmarkBefore) && refEqual(a.BookmarkAfter, b.BookmarkAfter) &&
		a.Size == b.Size && a.BlockSize == b.BlockSize
}

func fmtInfo(in info) string {
	b, _ := json.Marshal(in)
	return string(b)
}

// checkImages checks the image files of an instant directory against the
// model's raw image.
func checkImages(t *testing.T, dir, disk string, raw []byte) {
	t.Helper()
	flat, err := os.ReadFile(filepath.Join(dir, disk+"-flat.vmdk"))
	if err != nil {
		t.Fatal(err)
	}
	if sum(flat) != sum(raw) {
		t.Errorf("%s-flat.vmdk (%d bytes) differs from the model image (%d bytes)", disk, len(flat), len(raw))
	}
	vhd, err := os.ReadFile(filepath.Join(dir, disk+".vhd"))
	if err != nil {
		t.Fatal(err)
	}
	if len(vhd) != len(raw)+512 {
		t.Fatalf("%s.vhd: %d bytes, want %d", disk, len(vhd), len(raw)+512)
	}
	if sum(vhd[:len(raw)]) != sum(raw) {
		t.Errorf("%s.vhd: data differs from the model image", disk)
	}
	if footer := vhd[len(raw):]; !bytes.HasPrefix(footer, []byte("conectix")) {
		t.Errorf("%s.vhd: footer starts %q", disk, footer[:8])
	}
	desc, err := os.ReadFile(filepath.Join(dir, disk+".vmdk"))
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("RW %d VMFS %q", len(raw)/512, disk+"-flat.vmdk"); !bytes.Contains(desc, []byte(want)) {
		t.Errorf("%s.vmdk lacks %q:\n%s", disk, want, desc)
	}
	for name, size := range map[string]int{disk + "-flat.vmdk": len(raw), disk + ".vhd": len(raw) + 512, disk + ".vmdk": len(desc)} {
		st, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if st.Size() != int64(size) {
			t.Errorf("%s: size %d, want %d", name, st.Size(), size)
		}
	}
}

func TestNotFound(t *testing.T) {
	src, f := newFixture()
	mnt := testMount(t, src, Options{Now: f.clock()})
	for _, name := range []string{
		"nope",                      // unknown disk
		"vm1/garbage",               // not a time
		"vm1/2026",                  // not a whole time
		"vm1/+15m",                  // relative times look back only
		"vm1/20261125T113000Z",      // the future (the clock says 11:00)
		"vm1/2026-11-25T11:00:01Z",  // one second ahead
		"vm1/-1h1s",                 // before the first point
		"vm1/20261125T095959.999Z",  // before the first point
		"vm1/20261124T100000Z",      // before the disk existed
		"vm2/20261125T100000Z",      // vm2's first point is at 10:05
		"empty/latest",              // no point yet
		"empty/20261125T103000Z",    // no point yet
		"vm1/bookmarks/nope",        // unknown bookmark
		"vm1/latest/nope",           // not a file of an instant
		"vm1/latest/vm2-flat.vmdk",  // another disk's file
		"vm1/bookmarks/app/nope",    // not a file of an instant
		"vm1/20261125T101500Z/x/y",  // below a file name that does not exist
		"vm1/latest/info.json/deep", // below a file
	} {
		_, err := os.Stat(filepath.Join(mnt, name))
		if !errors.Is(err, syscall.ENOENT) && !(strings.HasSuffix(name, "/deep") && errors.Is(err, syscall.ENOTDIR)) {
			t.Errorf("stat %s: %v, want ENOENT", name, err)
		}
	}
}

func TestPermissions(t *testing.T) {
	for _, tc := range []struct {
		allowOther      bool
		dirMode, fileMd os.FileMode
	}{{false, 0o500, 0o400}, {true, 0o555, 0o444}} {
		t.Run(fmt.Sprint("AllowOther=", tc.allowOther), func(t *testing.T) {
			src, f := newFixture()
			mnt := testMount(t, src, Options{Now: f.clock(), AllowOther: tc.allowOther})
			line := mountLine(t, mnt)
			for _, opt := range []string{"allow_other", "default_permissions"} {
				if strings.Contains(line, opt) != tc.allowOther {
					t.Errorf("mount %q: %s wanted: %v", line, opt, tc.allowOther)
				}
			}
			inst := timespec.Format(f.p[2].Time)
			for _, name := range []string{"", "vm1", "vm1/latest", "vm1/bookmarks", "vm1/bookmarks/app", "vm1/" + inst, "vm1/-5m"} {
				checkOwner(t, filepath.Join(mnt, name), os.ModeDir|tc.dirMode)
			}
			for _, name := range []string{"vm1.vmdk", "vm1-flat.vmdk", "vm1.vhd", "info.json"} {
				checkOwner(t, filepath.Join(mnt, "vm1", inst, name), tc.fileMd)
			}
		})
	}
}

func checkOwner(t *testing.T, path string, mode os.FileMode) {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode() != mode {
		t.Errorf("%s: mode %v, want %v", path, st.Mode(), mode)
	}
	sys := st.Sys().(*syscall.Stat_t)
	if int(sys.Uid) != os.Getuid() || int(sys.Gid) != os.Getgid() {
		t.Errorf("%s: owner %d:%d, want %d:%d", path, sys.Uid, sys.Gid, os.Getuid(), os.Getgid())
	}
}

// Nothing can be written, even by root.
func TestReadOnly(t *testing.T) {
	src, f := newFixture()
	mnt := testMount(t, src, Options{Now: f.clock()})
	inst := filepath.Join(mnt, "vm1", timespec.Format(f.p[2].Time))
	flat := filepath.Join(inst, "vm1-flat.vmdk")
	info := filepath.Join(inst, "info.json")
	open := func(name string, flag int) func() error {
		return func() error {
			f, err := os.OpenFile(name, flag, 0o600)
			if err == nil {
				f.Close()
			}
			return err
		}
	}
	for name, op := range map[string]func() error{
		"open O_WRONLY":     open(flat, os.O_WRONLY),
		"open O_RDWR":       open(flat, os.O_RDWR),
		"open O_TRUNC":      open(info, os.O_RDONLY|os.O_TRUNC),
		"create in instant": open(filepath.Join(inst, "new"), os.O_WRONLY|os.O_CREATE),
		"create in root":    open(filepath.Join(mnt, "new"), os.O_WRONLY|os.O_CREATE),
		"mkdir in root":     func() error { return os.Mkdir(filepath.Join(mnt, "vm9"), 0o700) },
		"mkdir in disk":     func() error { return os.Mkdir(filepath.Join(mnt, "vm1", "new"), 0o700) },
		"remove file":       func() error { return os.Remove(flat) },
		"remove instant":    func() error { return os.Remove(inst) },
		"remove latest":     func() error { return os.Remove(filepath.Join(mnt, "vm1", "latest")) },
		"rename":            func() error { return os.Rename(flat, filepath.Join(inst, "x")) },
		"chmod":             func() error { return os.Chmod(flat, 0o644) },
		"chown":             func() error { return os.Chown(flat, 1, 1) },
		"truncate":          func() error { return os.Truncate(flat, 0) },
		"utimes":            func() error { return os.Chtimes(flat, time.Now(), time.Now()) },
		"symlink":           func() error { return os.Symlink("x", filepath.Join(inst, "y")) },
		"link":              func() error { return os.Link(flat, filepath.Join(inst, "z")) },
		"setxattr":          func() error { return syscall.Setxattr(flat, "user.x", []byte("1"), 0) },
	} {
		if err := op(); !errors.Is(err, syscall.EROFS) {
			t.Errorf("%s: %v, want EROFS", name, err)
		}
	}
	if sum(src.image("vm1", f.p[2].Seq)) != sum(mustRead(t, flat)) {
		t.Error("image changed")
	}
}

func mustRead(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Readdir gives every entry the inode number a lookup of it gives.
func TestReaddirInodes(t *testing.T) {
	src, f := newFixture()
	mnt := testMount(t, src, Options{Now: f.clock()})
	for _, dir := range []string{"", "vm1", "vm1/bookmarks", "vm1/latest", "vm1/" + timespec.Format(f.p[1].Time)} {
		path := filepath.Join(mnt, dir)
		ents := direntInos(t, path)
		if len(ents) == 0 {
			t.Errorf("%s: empty", path)
		}
		for name, ino := range ents {
			st, err := os.Lstat(filepath.Join(path, name))
			if err != nil {
				t.Fatal(err)
			}
			if got := st.Sys().(*syscall.Stat_t).Ino; got != ino {
				t.Errorf("%s/%s: readdir inode %d, stat inode %d", dir, name, ino, got)
			}
		}
	}
}

// direntInos lists dir with getdents64: name → d_ino, without . and ..
func direntInos(t *testing.T, dir string) map[string]uint64 {
	t.Helper()
	fd, err := syscall.Open(dir, syscall.O_RDONLY|syscall.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fd)
	out := map[string]uint64{}
	buf := make([]byte, 1<<16)
	for {
		n, err := syscall.Getdents(fd, buf)
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			return out
		}
		for b := buf[:n]; len(b) > 0; {
			// struct linux_dirent64 { u64 ino; s64 off; u16 reclen; u8 type; char name[]; }
			ino := binary.NativeEndian.Uint64(b[0:8])
			reclen := binary.NativeEndian.Uint16(b[16:18])
			name := string(b[19:reclen])
			name = name[:strings.IndexByte(name, 0)]
			if name != "." && name != ".." {
				out[name] = ino
			}
			b = b[reclen:]
		}
	}
}

// An application bookmark's directory shows its small files (backup_label)
// and says in info.json that the instant is application-consistent.
func TestBookmarkFiles(t *testing.T) {
	src, f := newFixture()
	src.mu.Lock()
	d := src.mustDisk("vm1")
	d.bookmarks = append(d.bookmarks, store.Bookmark{Name: "nightly", Disk: "vm1", Seq: f.p[2].Seq, Time: f.p[2].Time,
		Kind: store.KindApplication, Files: map[string]string{"backup_label": "START WAL LOCATION: 0/2000028\n", "../x": "no", "vm1.vmdk": "no", "info.json": "no"}})
	src.mu.Unlock()
	mnt := testMount(t, src, Options{Now: f.clock()})
	dir := filepath.Join(mnt, "vm1", "bookmarks", "nightly")
	got, err := os.ReadFile(filepath.Join(dir, "backup_label"))
	if err != nil || string(got) != "START WAL LOCATION: 0/2000028\n" {
		t.Fatalf("backup_label: %q %v", got, err)
	}
	if want := sorted("backup_label", "info.json", "vm1-flat.vmdk", "vm1.vhd", "vm1.vmdk", "vm1.vmx"); !slices.Equal(names(t, dir), want) {
		t.Fatalf("bookmarks/nightly: %q, want %q", names(t, dir), want)
	}
	var in struct{ Consistency string }
	raw, _ := os.ReadFile(filepath.Join(dir, "info.json"))
	if err := json.Unmarshal(raw, &in); err != nil || in.Consistency != store.KindApplication {
		t.Fatalf("info.json consistency %q %v", in.Consistency, err)
	}
	// The same instant by time is crash-consistent: only the bookmark says more.
	raw, _ = os.ReadFile(filepath.Join(mnt, "vm1", timespec.Format(f.p[2].Time), "info.json"))
	if err := json.Unmarshal(raw, &in); err != nil || in.Consistency != store.KindCrash {
		t.Fatalf("instant info.json consistency %q %v", in.Consistency, err)
	}
}
