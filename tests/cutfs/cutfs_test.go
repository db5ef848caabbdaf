package cutfs

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// testMount mounts a cutfs over a fresh backing directory; cleanup
// unmounts whatever is mounted then.
type testMount struct {
	t             *testing.T
	mnt, backing  string
	fs            *FS
	cutAlready    bool
	cleanupLogged bool
}

func newTestMount(t *testing.T) *testMount {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount FUSE")
	}
	dir := t.TempDir()
	m := &testMount{t: t, mnt: filepath.Join(dir, "mnt"), backing: filepath.Join(dir, "backing")}
	for _, d := range []string{m.mnt, m.backing} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	m.mount()
	t.Cleanup(func() {
		if m.fs == nil {
			return
		}
		if m.cutAlready {
			if err := m.fs.Wait(10 * time.Second); err != nil {
				t.Error(err)
			}
			return
		}
		if err := m.fs.Unmount(); err != nil {
			t.Error(err)
			unix.Unmount(m.mnt, unix.MNT_DETACH)
		}
	})
	return m
}

func (m *testMount) mount() {
	m.t.Helper()
	c, err := Mount(m.mnt, m.backing, Options{Logf: m.t.Logf})
	if err != nil {
		m.t.Fatal(err)
	}
	m.fs, m.cutAlready = c, false
}

// cutAndRemount cuts the power and mounts a new cutfs over the backing.
func (m *testMount) cutAndRemount() {
	m.t.Helper()
	if err := m.fs.Cut(); err != nil {
		m.t.Fatal(err)
	}
	if err := m.fs.Wait(10 * time.Second); err != nil {
		m.t.Fatal(err)
	}
	m.mount()
}

func (m *testMount) path(name string) string { return filepath.Join(m.mnt, name) }

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func syncDir(t *testing.T, dir string) {
	t.Helper()
	d, err := os.Open(dir)
	must(t, err)
	defer d.Close()
	must(t, d.Sync())
}

func readFile(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(name)
	must(t, err)
	return b
}

func exists(name string) bool {
	_, err := os.Lstat(name)
	return err == nil
}

// TestCutKeepsOnlySynced: write, sync, write, cut: the synced data is
// there, the later write is not, though it was read back before the cut.
func TestCutKeepsOnlySynced(t *testing.T) {
	m := newTestMount(t)
	name := m.path("f")
	f, err := os.Create(name)
	must(t, err)
	syncDir(t, m.mnt)
	first := bytes.Repeat([]byte("a"), 10000)
	_, err = f.WriteAt(first, 0)
	must(t, err)
	must(t, f.Sync())
	_, err = f.WriteAt([]byte("bbbb"), 100)
	must(t, err)
	_, err = f.WriteAt([]byte("tail"), 20000)
	must(t, err)
	want := append(bytes.Clone(first), make([]byte, 10000)...)
	copy(want[100:], "bbbb")
	want = append(want, "tail"...)
	if got := readFile(t, name); !bytes.Equal(got, want) {
		t.Fatalf("before the cut, reads do not see the unsynced writes (%d bytes read)", len(got))
	}
	if fi, _ := os.Stat(name); fi.Size() != 20004 {
		t.Fatalf("size before the cut: %d, want 20004", fi.Size())
	}
	if b, _ := os.ReadFile(filepath.Join(m.backing, "f")); len(b) != len(first) {
		t.Fatalf("the backing file holds %d bytes before the cut, want only the synced %d", len(b), len(first))
	}
	must(t, m.fs.Cut())
	// From the cut on, every operation fails.
	if _, err := f.WriteAt([]byte("x"), 0); !errors.Is(err, syscall.EIO) && !errors.Is(err, syscall.ENOTCONN) {
		t.Errorf("a write after the cut: %v, want EIO", err)
	}
	if err := f.Sync(); err == nil {
		t.Error("an fsync after the cut succeeded")
	}
	f.Close()
	must(t, m.fs.Wait(10*time.Second))
	m.mount()
	if got := readFile(t, name); !bytes.Equal(got, first) {
		t.Fatalf("after the cut the file holds %d bytes, want the %d synced", len(got), len(first))
	}
}

// TestCutNamespace: creates, renames and unlinks are lost unless their
// directory was synced after them.
func TestCutNamespace(t *testing.T) {
	m := newTestMount(t)
	must(t, os.WriteFile(m.path("old"), []byte("old"), 0o600))
	must(t, os.WriteFile(m.path("target"), []byte("target"), 0o600))
	must(t, os.Mkdir(m.path("d"), 0o700))
	must(t, m.fs.Unmount()) // a clean unmount: all of it durable
	m.mount()

	// Not synced: a created file (its data fsynced), a rename over an
	// existing file, an unlink, a new directory with a synced file inside.
	f, err := os.Create(m.path("new"))
	must(t, err)
	f.Write([]byte("new"))
	must(t, f.Sync())
	f.Close()
	must(t, os.Rename(m.path("old"), m.path("target")))
	must(t, os.Mkdir(m.path("sub"), 0o700))
	must(t, os.WriteFile(m.path("sub/x"), []byte("x"), 0o600))
	syncDir(t, m.path("sub"))
	must(t, os.WriteFile(m.path("d/y"), []byte("y"), 0o600))
	must(t, os.Remove(m.path("d")+"/y"))
	m.cutAndRemount()
	if exists(m.path("new")) {
		t.Error("a file created without a sync of its directory survived the cut")
	}
	if got := string(readFile(t, m.path("old"))); got != "old" {
		t.Errorf("old after an unsynced rename: %q", got)
	}
	if got := string(readFile(t, m.path("target"))); got != "target" {
		t.Errorf("the target of an unsynced rename holds %q, want its old content", got)
	}
	if exists(m.path("sub")) {
		t.Error("a directory whose parent was not synced survived the cut")
	}

	// Synced: the same operations survive.
	f, err = os.Create(m.path("new"))
	must(t, err)
	f.Write([]byte("new"))
	must(t, f.Sync())
	f.Close()
	must(t, os.Rename(m.path("old"), m.path("target")))
	must(t, os.Remove(m.path("d")))
	syncDir(t, m.mnt)
	m.cutAndRemount()
	if got := string(readFile(t, m.path("new"))); got != "new" {
		t.Errorf("a synced create: %q", got)
	}
	if exists(m.path("old")) || string(readFile(t, m.path("target"))) != "old" {
		t.Error("a rename followed by a sync of its directory was undone")
	}
	if exists(m.path("d")) {
		t.Error("an rmdir followed by a sync of its directory was undone")
	}

	// An unlink not synced is undone with the file's durable content; a
	// rename across directories needs both synced.
	must(t, os.Mkdir(m.path("a"), 0o700))
	must(t, os.Mkdir(m.path("b"), 0o700))
	must(t, os.WriteFile(m.path("a/f"), []byte("af"), 0o600))
	syncDir(t, m.mnt)
	syncDir(t, m.path("a"))
	must(t, os.Remove(m.path("new")))
	must(t, os.Rename(m.path("a/f"), m.path("b/f")))
	syncDir(t, m.path("b"))
	m.cutAndRemount()
	if got := readFile(t, m.path("new")); string(got) != "new" {
		t.Errorf("an unsynced unlink: the file came back as %q", got)
	}
	if !exists(m.path("a/f")) || exists(m.path("b/f")) {
		t.Error("a rename between directories survived with only its target directory synced")
	}
	if ents, _ := os.ReadDir(m.fs.trash); len(ents) != 0 {
		t.Errorf("the trash holds %d entries after the cut", len(ents))
	}
}

// TestCutTruncate: a truncate is kept apart like a write.
func TestCutTruncate(t *testing.T) {
	m := newTestMount(t)
	name := m.path("t")
	must(t, os.WriteFile(name, bytes.Repeat([]byte{7}, 8192), 0o600))
	syncDir(t, m.mnt)
	f, err := os.OpenFile(name, os.O_RDWR, 0)
	must(t, err)
	must(t, f.Sync())
	must(t, f.Truncate(100))
	must(t, f.Truncate(5000)) // the bytes between come back as zeros
	want := append(bytes.Repeat([]byte{7}, 100), make([]byte, 4900)...)
	if got := readFile(t, name); !bytes.Equal(got, want) {
		t.Fatal("reads after truncating down and up are wrong")
	}
	f.Close()
	must(t, os.WriteFile(name+"2", []byte("x"), 0o600)) // O_TRUNC of a new file
	m.cutAndRemount()
	if got := readFile(t, name); !bytes.Equal(got, bytes.Repeat([]byte{7}, 8192)) {
		t.Fatalf("an unsynced truncate survived the cut: %d bytes", len(got))
	}
	f, err = os.OpenFile(name, os.O_RDWR|os.O_TRUNC, 0)
	must(t, err)
	f.Write([]byte("short"))
	must(t, f.Sync())
	f.Close()
	m.cutAndRemount()
	if got := string(readFile(t, name)); got != "short" {
		t.Fatalf("a synced O_TRUNC and write: %q", got)
	}
}

// TestCutODirect: a file opened with O_DIRECT takes aligned writes, and
// they are durable after fsync like any other; statx says what the store
// would choose.
func TestCutODirect(t *testing.T) {
	m := newTestMount(t)
	name := m.path("seg")
	f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE|syscall.O_DIRECT, 0o600)
	if err != nil {
		t.Fatalf("open with O_DIRECT: %v", err)
	}
	syncDir(t, m.mnt)
	var st unix.Statx_t
	must(t, unix.Statx(int(f.Fd()), "", unix.AT_EMPTY_PATH, unix.STATX_DIOALIGN, &st))
	t.Logf("statx DIOALIGN reported: %v (offset align %d): the store writes segments %s", st.Mask&unix.STATX_DIOALIGN != 0, st.Dio_offset_align,
		map[bool]string{true: "with O_DIRECT", false: "buffered"}[st.Mask&unix.STATX_DIOALIGN != 0 && st.Dio_offset_align != 0])
	buf, err := unix.Mmap(-1, 0, 8192, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANON)
	must(t, err)
	defer unix.Munmap(buf)
	for i := range buf {
		buf[i] = byte(i / 7)
	}
	_, err = f.WriteAt(buf[:4096], 0)
	must(t, err)
	must(t, f.Sync())
	_, err = f.WriteAt(buf[4096:], 4096)
	must(t, err)
	f.Close()
	m.cutAndRemount()
	if got := readFile(t, name); !bytes.Equal(got, buf[:4096]) {
		t.Fatalf("after the cut: %d bytes, want the 4096 synced", len(got))
	}
}

// TestCutModel: random writes, truncates and syncs on a few files,
// checked after each cut against a model of what was synced.
func TestCutModel(t *testing.T) {
	m := newTestMount(t)
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 1))
	const files = 3
	durable := make([][]byte, files)
	for i := range files {
		must(t, os.WriteFile(m.path(string(rune('a'+i))), nil, 0o600))
	}
	syncDir(t, m.mnt)
	for round := 0; round < 8; round++ {
		live := make([][]byte, files)
		fds := make([]*os.File, files)
		for i := range files {
			live[i] = bytes.Clone(durable[i])
			f, err := os.OpenFile(m.path(string(rune('a'+i))), os.O_RDWR, 0)
			must(t, err)
			fds[i] = f
		}
		for op := 0; op < 200; op++ {
			i := rng.IntN(files)
			switch k := rng.IntN(10); {
			case k < 7:
				off := rng.IntN(1 << 16)
				b := make([]byte, 1+rng.IntN(8000))
				for j := range b {
					b[j] = byte(rng.Uint32())
				}
				_, err := fds[i].WriteAt(b, int64(off))
				must(t, err)
				if end := off + len(b); end > len(live[i]) {
					live[i] = append(live[i], make([]byte, end-len(live[i]))...)
				}
				copy(live[i][off:], b)
			case k < 8:
				n := rng.IntN(1 << 16)
				must(t, fds[i].Truncate(int64(n)))
				if n < len(live[i]) {
					live[i] = live[i][:n]
				} else {
					live[i] = append(live[i], make([]byte, n-len(live[i]))...)
				}
			default:
				must(t, fds[i].Sync())
				durable[i] = bytes.Clone(live[i])
			}
			if op%50 == 0 {
				if got := readFile(t, fds[i].Name()); !bytes.Equal(got, live[i]) {
					t.Fatalf("round %d op %d: file %d reads differ from the model", round, op, i)
				}
			}
		}
		m.cutAndRemount()
		for i := range files {
			fds[i].Close()
			if got := readFile(t, m.path(string(rune('a'+i)))); !bytes.Equal(got, durable[i]) {
				t.Fatalf("round %d: after the cut file %d holds %d bytes, not the %d synced", round, i, len(got), len(durable[i]))
			}
		}
	}
}

// TestCutRemovedDirectory: files unlinked in a directory whose removal was
// made durable stay gone; a directory whose removal was not comes back
// with the files as they were durable.
func TestCutRemovedDirectory(t *testing.T) {
	m := newTestMount(t)
	for _, d := range []string{"gone", "back"} {
		must(t, os.Mkdir(m.path(d), 0o700))
		must(t, os.WriteFile(m.path(d+"/f"), []byte(d), 0o600))
	}
	must(t, m.fs.Unmount())
	m.mount()
	must(t, os.Remove(m.path("gone/f")))
	must(t, os.Remove(m.path("gone")))
	syncDir(t, m.mnt)
	must(t, os.Remove(m.path("back/f")))
	must(t, os.Remove(m.path("back")))
	m.cutAndRemount()
	if exists(m.path("gone")) {
		t.Error("a directory whose rmdir was synced came back")
	}
	if got, err := os.ReadFile(m.path("back/f")); err != nil || string(got) != "back" {
		t.Errorf("an unsynced rmdir and unlink: %q, %v", got, err)
	}
}
