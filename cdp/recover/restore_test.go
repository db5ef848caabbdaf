package recover

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"

	"github.com/hindsight-cdp/hindsight/fs/partition"
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
// of the image), hard links as hard links, named pipes as pipes.
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
	if st, err := os.Lstat(filepath.Join(to, "a/fifo")); err != nil || st.Mode()&os.ModeNamedPipe == 0 {
		t.Errorf("fifo: %v, %v", st, err)
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
