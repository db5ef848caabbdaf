package recovery

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"

	"github.com/hindsight-cdp/hindsight/fs/partition"
	"golang.org/x/sys/unix"
)

// testInstant is an instant whose one filesystem, mounted at "/" as p2, is
// the directory tree root: Restore reads it as it would a mounted image.
func testInstant(root string) *Instant {
	return &Instant{Parts: []*Part{{Partition: partition.Partition{Index: 2, FS: partition.FS{Type: "ext4"}},
		Name: "p2", Dir: root, Mountpoint: "/", Status: "mounted", ready: true}}}
}

func restore(t *testing.T, in *Instant, to string, overwrite bool, paths ...string) []PathResult {
	t.Helper()
	res, err := in.Restore(context.Background(), paths, RestoreOptions{To: to, Overwrite: overwrite})
	if err != nil {
		t.Fatalf("Restore %v: %v", paths, err)
	}
	if len(res) != len(paths) {
		t.Fatalf("Restore %v: %d results", paths, len(res))
	}
	return res
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// victim is a directory outside both the image and the target that no
// restore may write into; check says if it changed.
func victim(t *testing.T) (dir string, check func()) {
	dir = t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "hosts"), []byte("victim"), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir, func() {
		t.Helper()
		ents, _ := os.ReadDir(dir)
		if len(ents) != 1 || readFile(t, filepath.Join(dir, "hosts")) != "victim" {
			var names []string
			for _, e := range ents {
				names = append(names, e.Name())
			}
			t.Fatalf("the restore wrote outside its target: %s holds %v", dir, names)
		}
	}
}

func TestRestoreFile(t *testing.T) {
	root, _ := imageTree(t)
	if err := os.Chmod(filepath.Join(root, "etc/hosts"), 0o640); err != nil {
		t.Fatal(err)
	}
	in, to := testInstant(root), filepath.Join(t.TempDir(), "to")
	res := restore(t, in, to, false, "/etc/hosts", "/nothing/here", "p2:/a/b/c/file", "/etc/abs")
	for i, want := range []string{Restored, Missing, Restored, Restored} {
		if res[i].Status != want {
			t.Errorf("%s: %+v, want %s", res[i].Path, res[i], want)
		}
	}
	if got := readFile(t, filepath.Join(to, "etc/hosts")); got != "image hosts" {
		t.Errorf("etc/hosts: %q", got)
	}
	if st, _ := os.Stat(filepath.Join(to, "etc/hosts")); st.Mode().Perm() != 0o640 {
		t.Errorf("etc/hosts mode %v", st.Mode())
	}
	if res[0].Bytes != int64(len("image hosts")) || res[0].Files != 1 || res[0].Target != filepath.Join(to, "etc/hosts") {
		t.Errorf("result %+v", res[0])
	}
	if got := readFile(t, filepath.Join(to, "p2/a/b/c/file")); got != "c file" {
		t.Errorf("p2/a/b/c/file: %q", got)
	}
	// A symlink of the image is restored as a symlink, not followed.
	if l, err := os.Readlink(filepath.Join(to, "etc/abs")); err != nil || l != "/etc/hosts" {
		t.Errorf("etc/abs: %q, %v", l, err)
	}

	// Again, without overwriting: refused, the target as it was.
	if err := os.WriteFile(filepath.Join(to, "etc/hosts"), []byte("changed since"), 0o644); err != nil {
		t.Fatal(err)
	}
	res = restore(t, in, to, false, "/etc/hosts")
	if res[0].Status != Exists || res[0].Files != 0 {
		t.Errorf("second restore: %+v", res[0])
	}
	if got := readFile(t, filepath.Join(to, "etc/hosts")); got != "changed since" {
		t.Errorf("not overwritten: %q", got)
	}
	// With overwrite: replaced, and no temporary file left.
	res = restore(t, in, to, true, "/etc/hosts")
	if res[0].Status != Restored || readFile(t, filepath.Join(to, "etc/hosts")) != "image hosts" {
		t.Errorf("overwrite: %+v", res[0])
	}
	ents, _ := os.ReadDir(filepath.Join(to, "etc"))
	if len(ents) != 2 {
		t.Errorf("target etc holds %v", ents)
	}
}

// Symlinks planted in the target are never written through.
func TestRestoreTargetSymlinks(t *testing.T) {
	root, _ := imageTree(t)
	in := testInstant(root)
	for _, overwrite := range []bool{false, true} {
		// A directory on the way is a symlink out of the target.
		to := t.TempDir()
		v, check := victim(t)
		if err := os.Symlink(v, filepath.Join(to, "etc")); err != nil {
			t.Fatal(err)
		}
		res := restore(t, in, to, overwrite, "/etc/hosts", "/etc")
		check()
		if res[0].Status == Restored {
			t.Errorf("overwrite %v: /etc/hosts restored through a symlink: %+v", overwrite, res[0])
		}
		if overwrite { // the symlink itself is replaced by the directory
			if st, err := os.Lstat(filepath.Join(to, "etc")); err != nil || !st.IsDir() || res[1].Status != Restored {
				t.Errorf("/etc over a symlink: %+v, %v", res[1], err)
			}
		} else if res[1].Status != Exists {
			t.Errorf("/etc over a symlink without overwrite: %+v", res[1])
		}

		// The file itself is a symlink out of the target.
		to = t.TempDir()
		v, check = victim(t)
		if err := os.MkdirAll(filepath.Join(to, "etc"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(filepath.Join(v, "hosts"), filepath.Join(to, "etc/hosts")); err != nil {
			t.Fatal(err)
		}
		res = restore(t, in, to, overwrite, "/etc/hosts")
		check()
		if overwrite {
			if st, err := os.Lstat(filepath.Join(to, "etc/hosts")); err != nil || !st.Mode().IsRegular() || res[0].Status != Restored {
				t.Errorf("overwrite of a planted symlink: %+v, %v", res[0], err)
			}
		} else if res[0].Status != Exists {
			t.Errorf("planted symlink without overwrite: %+v", res[0])
		}
	}

	// The temporary name the restore writes first is planted too.
	to := t.TempDir()
	v, check := victim(t)
	if err := os.MkdirAll(filepath.Join(to, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(to, "etc", ".hosts.hindsight-"+strconv.Itoa(os.Getpid()))
	if err := os.Symlink(filepath.Join(v, "hosts"), tmp); err != nil {
		t.Fatal(err)
	}
	res := restore(t, in, to, false, "/etc/hosts")
	check()
	if res[0].Status != Restored || readFile(t, filepath.Join(to, "etc/hosts")) != "image hosts" {
		t.Errorf("with a planted temporary name: %+v", res[0])
	}
	if _, err := os.Lstat(tmp); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("temporary name left: %v", err)
	}

	// A symlink deeper in a directory being merged.
	to = t.TempDir()
	v, check = victim(t)
	if err := os.MkdirAll(filepath.Join(to, "a/b"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(v, filepath.Join(to, "a/b/c")); err != nil {
		t.Fatal(err)
	}
	res = restore(t, in, to, true, "/a")
	check()
	if res[0].Status != Restored {
		t.Errorf("merge over a planted symlink: %+v", res[0])
	}
	if got := readFile(t, filepath.Join(to, "a/b/c/file")); got != "c file" {
		t.Errorf("a/b/c/file: %q", got)
	}
}

// A directory is restored whole: symlinks as symlinks (never followed out
// of the image), hard links as hard links, named pipes skipped.
func TestRestoreTree(t *testing.T) {
	root, outside := imageTree(t)
	if err := os.Link(filepath.Join(root, "a/b/c/file"), filepath.Join(root, "a/hardlink")); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(filepath.Join(root, "a/fifo"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(root, "a/out")); err != nil {
		t.Fatal(err)
	}
	to := t.TempDir()
	res := restore(t, testInstant(root), to, false, "/a")
	if res[0].Status != Restored {
		t.Fatalf("%+v", res[0])
	}
	var a, b syscall.Stat_t
	if err := syscall.Stat(filepath.Join(to, "a/hardlink"), &a); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Stat(filepath.Join(to, "a/b/c/file"), &b); err != nil {
		t.Fatal(err)
	}
	if a.Ino != b.Ino || a.Nlink != 2 {
		t.Errorf("hard link: inodes %d and %d, %d links", a.Ino, b.Ino, a.Nlink)
	}
	if _, err := os.Lstat(filepath.Join(to, "a/fifo")); !errors.Is(err, os.ErrNotExist) || len(res[0].Skipped) != 1 {
		t.Errorf("fifo restored (%v) or not reported: %+v", err, res[0].Skipped)
	}
	if l, err := os.Readlink(filepath.Join(to, "a/out")); err != nil || l != outside {
		t.Errorf("a/out: %q, %v", l, err)
	}
	for _, l := range []string{"a/rel", "a/absdir", "a/b/up", "a/b/c/cyc"} {
		if st, err := os.Lstat(filepath.Join(to, l)); err != nil || st.Mode()&os.ModeSymlink == 0 {
			t.Errorf("%s: %v, %v", l, st, err)
		}
	}
	// The whole image, into a target that has none of it.
	to = t.TempDir()
	res = restore(t, testInstant(root), to, false, "/")
	if res[0].Status != Restored || readFile(t, filepath.Join(to, "etc/hosts")) != "image hosts" {
		t.Errorf("restore /: %+v", res[0])
	}
	if _, err := os.Lstat(filepath.Join(to, "secret")); err == nil {
		t.Error("the host's secret was restored")
	}
}

func TestRestoreCancelled(t *testing.T) {
	root, _ := imageTree(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	res, err := testInstant(root).Restore(ctx, []string{"/etc/hosts"}, RestoreOptions{To: t.TempDir()})
	if !errors.Is(err, context.Canceled) || len(res) != 0 {
		t.Fatalf("cancelled restore: %+v, %v", res, err)
	}
}

// specialTree adds to the image tree root what an untrusted image may hold:
// setuid and setgid files and directories, a file with capabilities, a
// sticky directory, device nodes, a FIFO and a socket. It returns the
// entries that are special files (path below root → kind) and those with
// bits a restore strips (path → what, and the mode it should get).
func specialTree(t *testing.T, root string) (special map[string]string, strip map[string]Strip) {
	t.Helper()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(root, "s/sgid-dir"), 0o755))
	must(os.MkdirAll(filepath.Join(root, "s/tmp"), 0o755))
	for _, f := range []string{"su", "sgid", "both", "caps", "plain"} {
		must(os.WriteFile(filepath.Join(root, "s", f), []byte("#!/bin/sh\n"), 0o755))
	}
	for name, mode := range map[string]uint32{"su": 0o4755, "sgid": 0o2755, "both": 0o6711, "sgid-dir": 0o2775, "tmp": 0o1777, "plain": 0o750} {
		must(unix.Chmod(filepath.Join(root, "s", name), mode))
	}
	// A version 2 capability set: permitted and effective cap_net_raw (13).
	// struct vfs_cap_data, little-endian: magic 0x02000000 | effective,
	// then permitted and inheritable of the low and high words.
	capv2 := []byte{1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	must(unix.Setxattr(filepath.Join(root, "s/caps"), capXattr, capv2, 0))
	must(unix.Mknod(filepath.Join(root, "s/mem"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 1))))
	must(unix.Mknod(filepath.Join(root, "s/loop"), unix.S_IFBLK|0o660, int(unix.Mkdev(7, 0))))
	must(unix.Mknod(filepath.Join(root, "s/fifo"), unix.S_IFIFO|0o622, 0))
	must(unix.Mknod(filepath.Join(root, "s/sock"), unix.S_IFSOCK|0o755, 0))
	special = map[string]string{"s/mem": KindCharDevice, "s/loop": KindBlockDevice, "s/fifo": KindFIFO, "s/sock": KindSocket}
	strip = map[string]Strip{
		"s/su":       {Stripped: []string{StripSetuid}, ImageMode: "4755", Mode: "0755"},
		"s/sgid":     {Stripped: []string{StripSetgid}, ImageMode: "2755", Mode: "0755"},
		"s/both":     {Stripped: []string{StripSetuid, StripSetgid}, ImageMode: "6711", Mode: "0711"},
		"s/sgid-dir": {Stripped: []string{StripSetgid}, ImageMode: "2775", Mode: "0775"},
		"s/caps":     {Stripped: []string{StripCapabilities}, ImageMode: "0755", Mode: "0755"},
	}
	return special, strip
}

// An image's special files are skipped and its setuid/setgid bits and
// capabilities dropped, each listed in the result; with PreserveSpecial all
// are restored as they were.
func TestRestoreSpecial(t *testing.T) {
	root, _ := imageTree(t)
	special, strip := specialTree(t, root)
	in := testInstant(root)

	to := filepath.Join(t.TempDir(), "new", "to")
	res := restore(t, in, to, false, "/s", "/s/mem")
	if st, err := os.Stat(to); err != nil || st.Mode().Perm() != 0o700 {
		t.Errorf("--to made with %v, %v; want 0700", st.Mode(), err)
	}
	if res[0].Status != Restored || res[1].Status != Skipped {
		t.Fatalf("statuses %s %s, want restored skipped\n%+v", res[0].Status, res[1].Status, res)
	}
	gotSkip := map[string]string{}
	for _, s := range res[0].Skipped {
		gotSkip[s.Path] = s.Kind
	}
	if fmt.Sprint(gotSkip) != fmt.Sprint(special) || len(res[0].Skipped) != len(special) {
		t.Errorf("skipped %v, want %v", res[0].Skipped, special)
	}
	if len(res[1].Skipped) != 1 || res[1].Skipped[0] != (Skip{"s/mem", KindCharDevice, "special file (use --preserve-special)"}) || res[1].Files != 0 {
		t.Errorf("/s/mem asked for itself: %+v", res[1])
	}
	gotStrip := map[string]Strip{}
	for _, s := range res[0].Stripped {
		p := s.Path
		s.Path = ""
		gotStrip[p] = s
	}
	if fmt.Sprint(gotStrip) != fmt.Sprint(strip) || len(res[0].Stripped) != len(strip) {
		t.Errorf("stripped %+v\nwant %+v", res[0].Stripped, strip)
	}
	// The target against the image: every entry there but the special
	// files, each with the image's mode less setuid and setgid.
	err := filepath.WalkDir(filepath.Join(root, "s"), func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		var img, got unix.Stat_t
		if err := unix.Lstat(p, &img); err != nil {
			return err
		}
		lerr := unix.Lstat(filepath.Join(to, rel), &got)
		if _, ok := special[rel]; ok {
			if lerr == nil {
				t.Errorf("%s: special file restored (mode %o)", rel, got.Mode)
			}
			return nil
		}
		if lerr != nil {
			t.Errorf("%s: %v", rel, lerr)
			return nil
		}
		want := img.Mode &^ (unix.S_ISUID | unix.S_ISGID)
		if got.Mode != want || got.Uid != img.Uid || got.Gid != img.Gid {
			t.Errorf("%s: mode %o owner %d:%d, want %o %d:%d", rel, got.Mode, got.Uid, got.Gid, want, img.Uid, img.Gid)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := unix.Lgetxattr(filepath.Join(to, "s/caps"), capXattr, make([]byte, 64)); !errors.Is(err, unix.ENODATA) {
		t.Errorf("capabilities restored: %v", err)
	}

	// An existing target keeps its mode.
	existing := t.TempDir()
	if err := os.Chmod(existing, 0o751); err != nil {
		t.Fatal(err)
	}
	restore(t, in, existing, false, "/etc/hosts")
	if st, _ := os.Stat(existing); st.Mode().Perm() != 0o751 {
		t.Errorf("existing target's mode changed to %v", st.Mode())
	}

	// With PreserveSpecial: everything as it was.
	to = filepath.Join(t.TempDir(), "to")
	res2, err := in.Restore(context.Background(), []string{"/s"}, RestoreOptions{To: to, PreserveSpecial: true})
	if err != nil || res2[0].Status != Restored || len(res2[0].Skipped)+len(res2[0].Stripped) != 0 {
		t.Fatalf("restore with PreserveSpecial: %+v, %v", res2, err)
	}
	err = filepath.WalkDir(filepath.Join(root, "s"), func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		var img, got unix.Stat_t
		if err := unix.Lstat(p, &img); err != nil {
			return err
		}
		if err := unix.Lstat(filepath.Join(to, rel), &got); err != nil {
			t.Errorf("%s: %v", rel, err)
		} else if got.Mode != img.Mode || got.Rdev != img.Rdev || got.Uid != img.Uid {
			t.Errorf("%s: mode %o rdev %x uid %d, want %o %x %d", rel, got.Mode, got.Rdev, got.Uid, img.Mode, img.Rdev, img.Uid)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	if n, err := unix.Lgetxattr(filepath.Join(to, "s/caps"), capXattr, buf); err != nil || n != 20 {
		t.Errorf("capabilities not kept with PreserveSpecial: %d bytes, %v", n, err)
	}
}

// A directory entry whose name would be read as a path is never used as one.
func TestSafeName(t *testing.T) {
	for _, n := range []string{"", ".", "..", "a/b", "../x", "/"} {
		if safeName(n) {
			t.Errorf("%q passes as a name", n)
		}
	}
	for _, n := range []string{"a", "..a", "...", ".hidden", "a\\b"} {
		if !safeName(n) {
			t.Errorf("%q refused", n)
		}
	}
}
