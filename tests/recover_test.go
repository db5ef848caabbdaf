package tests

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// recoverDisk builds a disk of the given layout, changed over three points:
// point i has /etc/app.conf "app v<i>" on the root filesystem and, on the
// one at /srv (the second filesystem, found through the root's fstab, or the
// root itself), data/common.txt "common v<i>", data/file<i>.txt, and from
// point 0 a symlink, a hard-linked pair and a file with owner, mode, times
// and an xattr of its own.
func recoverDisk(t *testing.T, repo, name, label string, specs ...partSpec) (*testDisk, []time.Time) {
	t.Helper()
	td := buildDisk(t, label, specs...)
	ok(t, "--repo", repo, "disk", "create", name, "--size", fmt.Sprint(td.size))
	srv, prefix := 0, "srv/"
	if len(specs) > 1 {
		fstab := fmt.Sprintf("# test\nUUID=%s /srv %s defaults 0 2\n", td.uuid(t, 1), specs[1].fs)
		td.change(t, 0, func(dir string) { write(t, dir, map[string]string{"etc/fstab": fstab}) })
		srv, prefix = 1, ""
	}
	start := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	var times []time.Time
	for i := 0; i < 3; i++ {
		td.change(t, 0, func(dir string) { write(t, dir, map[string]string{"etc/app.conf": fmt.Sprintf("app v%d\n", i)}) })
		td.change(t, srv, func(dir string) {
			write(t, dir, map[string]string{
				prefix + "data/common.txt":                 fmt.Sprintf("common v%d\n", i),
				prefix + fmt.Sprintf("data/file%d.txt", i): fmt.Sprintf("file %d\n", i),
			})
			if i > 0 {
				return
			}
			write(t, dir, map[string]string{prefix + "hard1": "linked\n", prefix + "special": "special\n"})
			must(t, os.Link(filepath.Join(dir, prefix+"hard1"), filepath.Join(dir, prefix+"hard2")))
			must(t, os.Symlink("data/common.txt", filepath.Join(dir, prefix+"link")))
			sp := filepath.Join(dir, prefix+"special")
			must(t, os.Chown(sp, 1234, 5678))
			must(t, os.Chmod(sp, 0o640))
			must(t, unix.Lsetxattr(sp, "user.note", []byte("hello"), 0))
			must(t, os.Chtimes(sp, start, start.Add(-time.Hour)))
		})
		at := start.Add(time.Duration(i) * time.Minute)
		ok(t, "--repo", repo, "import", name, td.img, "--at", at.Format(time.RFC3339))
		times = append(times, at)
	}
	return td, times
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// startBrowse runs `browse --json` and returns what it mounted; stop sends
// sig and waits for it to exit.
func startBrowse(t *testing.T, args ...string) (browseInstant, func(sig syscall.Signal) int) {
	t.Helper()
	cmd := exec.Command(hsBin, append([]string{"--json"}, args...)...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr syncBuffer
	cmd.Stderr = &stderr
	must(t, cmd.Start())
	done := make(chan int, 1)
	var in browseInstant
	decoded := make(chan error, 1)
	go func() {
		decoded <- json.NewDecoder(bufio.NewReader(out)).Decode(&in)
		cmd.Wait()
		done <- cmd.ProcessState.ExitCode()
	}()
	stopped := false
	stop := func(sig syscall.Signal) int {
		if stopped {
			return 0
		}
		stopped = true
		cmd.Process.Signal(sig)
		select {
		case code := <-done:
			return code
		case <-time.After(60 * time.Second):
			cmd.Process.Kill()
			t.Fatalf("browse did not stop on %v\n%s", sig, stderr.String())
		}
		return -1
	}
	t.Cleanup(func() { stop(syscall.SIGTERM) })
	select {
	case err := <-decoded:
		if err != nil {
			t.Fatalf("browse: %v\n%s", err, stderr.String())
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("browse printed nothing in 60 s\n%s", stderr.String())
	}
	return in, stop
}

// partAt is the directory of the browsed partition mounted at mountpoint.
func partAt(t *testing.T, in browseInstant, mountpoint string) string {
	t.Helper()
	for _, p := range in.Parts {
		if p.Mountpoint == mountpoint && p.Status == "mounted" {
			return p.Dir
		}
	}
	t.Fatalf("no partition mounted for %s: %+v", mountpoint, in.Parts)
	return ""
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Error(err)
	}
	return string(b)
}

// TestRecoverBrowseRestore (acceptance 1): MBR with ext4 and XFS, GPT with
// ext4 and Btrfs, and a whole-disk ext4, each changed over three points:
// browse shows every partition with the files as they were at each point,
// and restore of files, a folder, a symlink and a hard-linked pair gives
// identical content and metadata.
func TestRecoverBrowseRestore(t *testing.T) {
	t.Parallel()
	needRoot(t)
	needTools(t, "sfdisk", "mkfs.ext4", "mkfs.xfs", "mkfs.btrfs", "blkid", "findmnt", "losetup")
	layouts := []struct {
		name, label string
		specs       []partSpec
	}{
		{"mbr-ext4-xfs", "dos", []partSpec{{"ext4", 24 << 20}, {"xfs", 64 << 20}}},
		{"gpt-ext4-btrfs", "gpt", []partSpec{{"ext4", 24 << 20}, {"btrfs", 64 << 20}}},
		{"whole-ext4", "", []partSpec{{"ext4", 24 << 20}}},
	}
	for _, l := range layouts {
		t.Run(l.name, func(t *testing.T) {
			repo := newRepo(t)
			_, times := recoverDisk(t, repo, "web", l.label, l.specs...)
			root := filepath.Join(t.TempDir(), "browse")
			for i, at := range times {
				in, stop := startBrowse(t, "--repo", repo, "browse", "web", "--at", at.Format(time.RFC3339), "--root", root)
				if len(in.Parts) != len(l.specs) {
					t.Fatalf("point %d: %d partitions, want %d: %+v", i, len(in.Parts), len(l.specs), in.Parts)
				}
				for k, p := range in.Parts {
					if p.Status != "mounted" || p.FS.Type != l.specs[k].fs {
						t.Errorf("point %d partition %s: %s %s (%s), want mounted %s", i, p.Name, p.Status, p.FS.Type, p.Error, l.specs[k].fs)
					}
				}
				if st, err := os.Stat(in.Dir); err != nil || st.Mode().Perm() != 0o700 {
					t.Errorf("browse dir %s: %v, %v; want owner-only", in.Dir, st.Mode(), err)
				}
				rootDir, srvDir := partAt(t, in, "/"), ""
				if len(l.specs) > 1 {
					srvDir = partAt(t, in, "/srv")
				} else {
					srvDir = filepath.Join(rootDir, "srv")
				}
				if got := readFile(t, filepath.Join(rootDir, "etc/app.conf")); got != fmt.Sprintf("app v%d\n", i) {
					t.Errorf("point %d: /etc/app.conf = %q", i, got)
				}
				if got := readFile(t, filepath.Join(srvDir, "data/common.txt")); got != fmt.Sprintf("common v%d\n", i) {
					t.Errorf("point %d: /srv/data/common.txt = %q", i, got)
				}
				if _, err := os.Stat(filepath.Join(srvDir, fmt.Sprintf("data/file%d.txt", i+1))); err == nil {
					t.Errorf("point %d shows a file of a later point", i)
				}
				if code := stop(syscall.SIGINT); code != 0 {
					t.Errorf("browse ended with %d on SIGINT", code)
				}
				noRecoverLeftovers(t, root)
			}

			out := filepath.Join(t.TempDir(), "out")
			r := hs(t, "--repo", repo, "--json", "restore", "web", "--at", times[1].Format(time.RFC3339),
				"/etc/app.conf", "/srv/data", "/srv/link", "/srv/hard1", "/srv/hard2", "/srv/special", "--to", out)
			if r.code != 0 {
				t.Fatalf("restore: exit %d\n%s%s", r.code, r.stdout, r.stderr)
			}
			if got := readFile(t, filepath.Join(out, "etc/app.conf")); got != "app v1\n" {
				t.Errorf("restored /etc/app.conf = %q", got)
			}
			for name, want := range map[string]string{"common.txt": "common v1\n", "file0.txt": "file 0\n", "file1.txt": "file 1\n"} {
				if got := readFile(t, filepath.Join(out, "srv/data", name)); got != want {
					t.Errorf("restored /srv/data/%s = %q, want %q", name, got, want)
				}
			}
			if _, err := os.Lstat(filepath.Join(out, "srv/data/file2.txt")); err == nil {
				t.Error("restore took a file of a later point")
			}
			if target, err := os.Readlink(filepath.Join(out, "srv/link")); err != nil || target != "data/common.txt" {
				t.Errorf("restored symlink: %q, %v", target, err)
			}
			var h1, h2 unix.Stat_t
			must(t, unix.Lstat(filepath.Join(out, "srv/hard1"), &h1))
			must(t, unix.Lstat(filepath.Join(out, "srv/hard2"), &h2))
			if h1.Ino != h2.Ino || h1.Nlink != 2 {
				t.Errorf("hard-linked pair restored as inodes %d and %d (nlink %d)", h1.Ino, h2.Ino, h1.Nlink)
			}
			var sp unix.Stat_t
			must(t, unix.Lstat(filepath.Join(out, "srv/special"), &sp))
			if sp.Uid != 1234 || sp.Gid != 5678 || sp.Mode&0o7777 != 0o640 || sp.Mtim.Sec != times[0].Add(-time.Hour).Unix() {
				t.Errorf("restored metadata: uid %d gid %d mode %o mtime %d", sp.Uid, sp.Gid, sp.Mode&0o7777, sp.Mtim.Sec)
			}
			buf := make([]byte, 64)
			if n, err := unix.Lgetxattr(filepath.Join(out, "srv/special"), "user.note", buf); err != nil || string(buf[:n]) != "hello" {
				t.Errorf("restored xattr user.note: %q, %v", buf[:max(n, 0)], err)
			}
			// Again without --overwrite: every target exists (exit 4), nothing changes.
			r = hs(t, "--repo", repo, "restore", "web", "/etc/app.conf", "--to", out)
			if r.code != 4 || readFile(t, filepath.Join(out, "etc/app.conf")) != "app v1\n" {
				t.Errorf("restore over an existing file: exit %d (want 4)\n%s", r.code, r.stderr)
			}
			ok(t, "--repo", repo, "restore", "web", "/etc/app.conf", "--to", out, "--overwrite")
			if got := readFile(t, filepath.Join(out, "etc/app.conf")); got != "app v2\n" {
				t.Errorf("--overwrite: %q", got)
			}
			noRecoverLeftovers(t, root)
		})
	}
}
