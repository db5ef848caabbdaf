package tests

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// restoreJSON is what `restore --json` prints.
type restoreJSON struct {
	To      string `json:"to"`
	Results []struct {
		Path    string `json:"path"`
		Status  string `json:"status"`
		Error   string `json:"error"`
		Skipped []struct {
			Path, Kind, Reason string
		} `json:"skipped"`
		Stripped []struct {
			Path      string   `json:"path"`
			Stripped  []string `json:"stripped"`
			ImageMode string   `json:"image_mode"`
			Mode      string   `json:"mode"`
		} `json:"stripped"`
	} `json:"results"`
}

// hostileStage fills dir with what a hostile guest leaves for the admin who
// restores it as root: setuid-root and setgid executables, a setgid
// directory, a file with capabilities, device nodes (a world-writable
// /dev/mem), a FIFO and a socket.
func hostileStage(t *testing.T, dir string) {
	t.Helper()
	write(t, dir, map[string]string{
		"usr/bin/rootshell": "#!/bin/sh\nexec /bin/sh -p\n", "usr/bin/sgid-tool": "#!/bin/sh\n",
		"usr/bin/capped": "#!/bin/sh\n", "srv/shared/doc": "doc\n", "etc/hostname": "hostile\n",
	})
	must(t, os.MkdirAll(filepath.Join(dir, "dev"), 0o755))
	must(t, os.MkdirAll(filepath.Join(dir, "run"), 0o755))
	must(t, os.MkdirAll(filepath.Join(dir, "tmp"), 0o755))
	// chown clears setuid and setgid: owners first.
	must(t, os.Lchown(filepath.Join(dir, "usr/bin/rootshell"), 0, 0))
	must(t, os.Lchown(filepath.Join(dir, "usr/bin/sgid-tool"), 0, 42))
	must(t, os.Lchown(filepath.Join(dir, "etc/hostname"), 1000, 1000))
	for name, mode := range map[string]uint32{"usr/bin/rootshell": 0o4755, "usr/bin/sgid-tool": 0o2711, "usr/bin/capped": 0o755, "srv/shared": 0o2775, "tmp": 0o1777} {
		must(t, unix.Chmod(filepath.Join(dir, name), mode))
	}
	// struct vfs_cap_data v2: effective, permitted cap_setuid (7).
	must(t, unix.Setxattr(filepath.Join(dir, "usr/bin/capped"), "security.capability",
		[]byte{1, 0, 0, 2, 1 << 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, 0))
	must(t, unix.Mknod(filepath.Join(dir, "dev/mem"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 1))))
	must(t, unix.Mknod(filepath.Join(dir, "dev/sda"), unix.S_IFBLK|0o660, int(unix.Mkdev(8, 0))))
	must(t, unix.Mknod(filepath.Join(dir, "run/initctl"), unix.S_IFIFO|0o622, 0))
	must(t, unix.Mknod(filepath.Join(dir, "run/sock"), unix.S_IFSOCK|0o777, 0))
	for name, mode := range map[string]uint32{"dev/mem": 0o666, "dev/sda": 0o660, "run/initctl": 0o622, "run/sock": 0o777} {
		must(t, unix.Chmod(filepath.Join(dir, name), mode)) // mknod applies the umask
	}
}

// TestRecoverSpecialFiles (acceptance 4 of issue 16): restoring, as root, an
// image that holds setuid-root executables and device nodes recreates
// neither: the bits are stripped and the nodes skipped, each reported in
// --json; --to is made 0700. With --preserve-special all come back as they
// were. The expectations come from the staging directory the image was made
// from.
func TestRecoverSpecialFiles(t *testing.T) {
	t.Parallel()
	needRoot(t)
	needTools(t, "mkfs.ext4", "findmnt", "losetup")
	stage := t.TempDir()
	hostileStage(t, stage)
	// Inside the image, the directory that an absolute symlink names also
	// exists: "/<victim>/x" resolves in the image, but its target in --to
	// is below the symlink the restore wrote.
	victim := t.TempDir()
	must(t, os.Symlink(victim, filepath.Join(stage, "escape")))
	write(t, stage, map[string]string{strings.TrimPrefix(victim, "/") + "/x": "image x\n"})
	img := filepath.Join(t.TempDir(), "disk.img")
	must(t, os.WriteFile(img, nil, 0o600))
	must(t, os.Truncate(img, 32<<20))
	run(t, "mkfs.ext4", "-q", "-F", "-d", stage, img)

	repo := newRepo(t)
	ok(t, "--repo", repo, "disk", "create", "hostile", "--size", "32M")
	ok(t, "--repo", repo, "import", "hostile", img)

	// The model: every entry of the staging directory, as Lstat sees it.
	type entry struct {
		mode, uid, gid uint32
		rdev           uint64
		special        string
	}
	model := map[string]entry{}
	must(t, filepath.WalkDir(stage, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == stage {
			return err
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		kind := map[uint32]string{unix.S_IFCHR: "char-device", unix.S_IFBLK: "block-device", unix.S_IFIFO: "fifo", unix.S_IFSOCK: "socket"}[st.Mode&unix.S_IFMT]
		rel, _ := filepath.Rel(stage, p)
		model[rel] = entry{st.Mode, st.Uid, st.Gid, st.Rdev, kind}
		return nil
	}))
	wantSkipped, wantStripped := map[string]string{}, map[string]string{}
	for rel, e := range model {
		var bits []string
		if e.mode&unix.S_ISUID != 0 {
			bits = append(bits, "setuid")
		}
		if e.mode&unix.S_ISGID != 0 {
			bits = append(bits, "setgid")
		}
		if rel == "usr/bin/capped" {
			bits = append(bits, "capabilities")
		}
		switch {
		case e.special != "":
			wantSkipped[rel] = e.special
		case len(bits) > 0:
			wantStripped[rel] = fmt.Sprintf("%v %04o→%04o", bits, e.mode&0o7777, e.mode&0o1777)
		}
	}
	if len(wantSkipped) != 4 || len(wantStripped) != 4 {
		t.Fatalf("the staging directory is not what the test means: skipped %v, stripped %v", wantSkipped, wantStripped)
	}

	// Without --preserve-special.
	out := filepath.Join(t.TempDir(), "new", "out")
	r := hs(t, "--repo", repo, "--json", "restore", "hostile", "/", "/dev/mem", "--to", out)
	var rj restoreJSON
	if err := json.Unmarshal([]byte(r.stdout), &rj); err != nil || len(rj.Results) != 2 {
		t.Fatalf("restore: exit %d, %v\n%s%s", r.code, err, r.stdout, r.stderr)
	}
	if r.code != 0 || rj.Results[0].Status != "restored" || rj.Results[1].Status != "skipped" {
		t.Errorf("restore: exit %d, statuses %s and %s; want 0, restored and skipped\n%s", r.code, rj.Results[0].Status, rj.Results[1].Status, r.stderr)
	}
	if st, err := os.Stat(out); err != nil || st.Mode().Perm() != 0o700 {
		t.Errorf("--to created as %v (%v), want 0700", st.Mode(), err)
	}
	gotSkipped, gotStripped := map[string]string{}, map[string]string{}
	for _, s := range rj.Results[0].Skipped {
		gotSkipped[s.Path] = s.Kind
		if s.Reason == "" {
			t.Errorf("%s skipped without a reason", s.Path)
		}
	}
	for _, s := range rj.Results[0].Stripped {
		gotStripped[s.Path] = fmt.Sprintf("%v %s→%s", s.Stripped, s.ImageMode, s.Mode)
	}
	if fmt.Sprint(gotSkipped) != fmt.Sprint(wantSkipped) || len(rj.Results[0].Skipped) != len(wantSkipped) {
		t.Errorf("--json skipped %v\nwant %v", rj.Results[0].Skipped, wantSkipped)
	}
	if fmt.Sprint(gotStripped) != fmt.Sprint(wantStripped) || len(rj.Results[0].Stripped) != len(wantStripped) {
		t.Errorf("--json stripped %v\nwant %v", gotStripped, wantStripped)
	}
	if s := rj.Results[1].Skipped; len(s) != 1 || s[0].Path != "dev/mem" || s[0].Kind != "char-device" {
		t.Errorf("/dev/mem asked for by name: %+v", rj.Results[1])
	}
	for rel, e := range model {
		var st unix.Stat_t
		err := unix.Lstat(filepath.Join(out, rel), &st)
		switch {
		case e.special != "" && err == nil:
			t.Errorf("%s: %s restored (mode %o)", rel, e.special, st.Mode)
		case e.special != "":
		case err != nil:
			t.Errorf("%s: %v", rel, err)
		case st.Mode != e.mode&^(unix.S_ISUID|unix.S_ISGID) || st.Uid != e.uid || st.Gid != e.gid:
			t.Errorf("%s: mode %o %d:%d, want %o %d:%d", rel, st.Mode, st.Uid, st.Gid, e.mode&^(unix.S_ISUID|unix.S_ISGID), e.uid, e.gid)
		}
	}
	// Whatever the model misses (lost+found): nothing under --to is special
	// or setuid/setgid, and no file has capabilities.
	var bad []string
	must(t, filepath.WalkDir(out, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		typ := st.Mode & unix.S_IFMT
		if typ == unix.S_IFCHR || typ == unix.S_IFBLK || typ == unix.S_IFIFO || typ == unix.S_IFSOCK || st.Mode&(unix.S_ISUID|unix.S_ISGID) != 0 {
			bad = append(bad, fmt.Sprintf("%s %o", p, st.Mode))
		}
		if _, err := unix.Lgetxattr(p, "security.capability", make([]byte, 64)); err == nil {
			bad = append(bad, p+" has capabilities")
		}
		return nil
	}))
	if len(bad) > 0 {
		sort.Strings(bad)
		t.Errorf("under --to:\n%s", strings.Join(bad, "\n"))
	}

	// With --preserve-special: as they were.
	out2 := filepath.Join(t.TempDir(), "out")
	r = hs(t, "--repo", repo, "--json", "restore", "hostile", "/", "--to", out2, "--preserve-special")
	if r.code != 0 {
		t.Fatalf("restore --preserve-special: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	must(t, json.Unmarshal([]byte(r.stdout), &rj))
	if len(rj.Results[0].Skipped)+len(rj.Results[0].Stripped) != 0 {
		t.Errorf("--preserve-special skipped or stripped: %s", r.stdout)
	}
	for rel, e := range model {
		var st unix.Stat_t
		if err := unix.Lstat(filepath.Join(out2, rel), &st); err != nil {
			t.Errorf("--preserve-special: %s: %v", rel, err)
		} else if st.Mode != e.mode || st.Rdev != e.rdev || st.Uid != e.uid || st.Gid != e.gid {
			t.Errorf("--preserve-special: %s: mode %o rdev %x %d:%d, want %o %x %d:%d", rel, st.Mode, st.Rdev, st.Uid, st.Gid, e.mode, e.rdev, e.uid, e.gid)
		}
	}
	if _, err := unix.Lgetxattr(filepath.Join(out2, "usr/bin/capped"), "security.capability", make([]byte, 64)); err != nil {
		t.Errorf("--preserve-special: capabilities: %v", err)
	}

	// A symlink the restore wrote itself is never gone through: /escape is
	// restored as the symlink it is, and /escape/x, which the image holds,
	// is refused rather than written into the victim directory.
	out3 := filepath.Join(t.TempDir(), "out")
	r = hs(t, "--repo", repo, "--json", "restore", "hostile", "/escape", "/escape/x", "--to", out3)
	must(t, json.Unmarshal([]byte(r.stdout), &rj))
	if r.code != 1 || len(rj.Results) != 2 || rj.Results[0].Status != "restored" || rj.Results[1].Status != "error" {
		t.Errorf("restore through its own symlink: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if ents, _ := os.ReadDir(victim); len(ents) != 0 {
		t.Errorf("restore wrote through a symlink it made: %s holds %v", victim, ents)
	}
	noRecoverLeftovers(t)

	// browse copies nothing itself; what it mounts lets nothing run with the
	// image's setuid bits and opens no device of the image.
	root := filepath.Join(t.TempDir(), "browse")
	in, stop := startBrowse(t, "--repo", repo, "browse", "hostile", "--root", root)
	if len(in.Parts) != 1 || in.Parts[0].Status != "mounted" {
		t.Fatalf("browse: %+v", in.Parts)
	}
	dir := in.Parts[0].Dir
	opts := strings.Split(strings.TrimSpace(run(t, "findmnt", "-rn", "-o", "OPTIONS", "-M", dir)), ",")
	for _, need := range []string{"ro", "nosuid", "nodev", "noexec"} {
		if !slices.Contains(opts, need) {
			t.Errorf("browse mounts the image with %v: no %s", opts, need)
		}
	}
	if f, err := os.Open(filepath.Join(dir, "dev/mem")); !errors.Is(err, unix.EACCES) {
		t.Errorf("the image's dev/mem opened through browse: %v", err)
		if f != nil {
			f.Close()
		}
	}
	if err := exec.Command(filepath.Join(dir, "usr/bin/rootshell"), "-c", "true").Run(); !errors.Is(err, unix.EACCES) {
		t.Errorf("the image's setuid-root shell ran through browse: %v", err)
	}
	stop(syscall.SIGTERM)
	noRecoverLeftovers(t, root)
}
