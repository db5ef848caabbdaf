package tests

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestRecoverHostile (acceptance 4): symlinks to /etc/shadow and ../../
// names in the image, a symlink planted in the target, a corrupt partition
// table, a filesystem that fails to mount and a disk with no filesystem:
// clear results, nothing written outside --to, nothing left mounted.
func TestRecoverHostile(t *testing.T) {
	t.Parallel()
	needRoot(t)
	needTools(t, "mkfs.ext4", "sfdisk", "findmnt", "losetup")
	repo := newRepo(t)
	td := buildDisk(t, "", partSpec{"ext4", 16 << 20})
	ok(t, "--repo", repo, "disk", "create", "evil", "--size", fmt.Sprint(td.size))
	td.change(t, 0, func(dir string) {
		write(t, dir, map[string]string{"etc/shadow": "image shadow\n", "etc/hostname": "evil\n", "home/a/x": "x\n"})
		must(t, os.Symlink("/etc/shadow", filepath.Join(dir, "shadow-abs")))
		must(t, os.Symlink("../../../../../../etc", filepath.Join(dir, "home/a/up")))
		must(t, os.Symlink("/", filepath.Join(dir, "home/a/root")))
	})
	ok(t, "--repo", repo, "import", "evil", td.img)
	host, _ := os.ReadFile("/etc/shadow")

	base := t.TempDir()
	out := filepath.Join(base, "out")
	r := hs(t, "--repo", repo, "--json", "restore", "evil", "/shadow-abs", "/home/a/up/shadow", "../../../etc/hostname",
		"/home/a/root/../../etc/shadow", "/../../nope", "--to", out)
	if r.code != 2 { // /nope is missing
		t.Fatalf("restore: exit %d, want 2 (one path missing)\n%s%s", r.code, r.stdout, r.stderr)
	}
	if l, err := os.Readlink(filepath.Join(out, "shadow-abs")); err != nil || l != "/etc/shadow" {
		t.Errorf("a symlink is restored as itself: %q, %v", l, err)
	}
	if got := readFile(t, filepath.Join(out, "home/a/up/shadow")); got != "image shadow\n" {
		t.Errorf("../ symlinks resolve inside the image: got %q", got)
	}
	if got := readFile(t, filepath.Join(out, "etc/hostname")); got != "evil\n" {
		t.Errorf("../../../etc/hostname is the image's /etc/hostname: got %q", got)
	}
	for _, b := range [][]byte{host} {
		if len(b) > 0 && strings.Contains(r.stdout, string(b)) {
			t.Error("the host's /etc/shadow leaked")
		}
	}
	ents, _ := os.ReadDir(base)
	if len(ents) != 1 {
		t.Errorf("files written beside --to: %v", ents)
	}

	// A symlink planted in the target is never followed.
	victim := t.TempDir()
	out2 := filepath.Join(base, "out2")
	must(t, os.MkdirAll(out2, 0o755))
	must(t, os.Symlink(victim, filepath.Join(out2, "etc")))
	if r := hs(t, "--repo", repo, "restore", "evil", "/etc/hostname", "--to", out2); r.code != 1 {
		t.Errorf("restore through a planted symlink: exit %d, want 1\n%s%s", r.code, r.stdout, r.stderr)
	}
	if ents, _ := os.ReadDir(victim); len(ents) != 0 {
		t.Errorf("restore wrote through a symlink in --to: %v", ents)
	}

	// Broken disks: each is a clear error, with nothing left behind.
	broken := map[string]func(img string){
		"no filesystem": func(img string) {},
		"corrupt GPT": func(img string) {
			sf := exec.Command("sfdisk", "-q", img)
			sf.Stdin = strings.NewReader("label: gpt\nsize=4MiB, type=L\n")
			must(t, sf.Run())
			f, _ := os.OpenFile(img, os.O_RDWR, 0)
			defer f.Close()
			f.WriteAt([]byte("garbage!"), 512+24)        // primary header
			f.WriteAt([]byte("garbage!"), 16<<20-512+24) // backup header
		},
		"unmountable ext4": func(img string) {
			sf := exec.Command("sfdisk", "-q", img)
			sf.Stdin = strings.NewReader("label: dos\nsize=8MiB, type=83\n")
			must(t, sf.Run())
			run(t, "mkfs.ext4", "-q", "-F", "-E", "offset=1048576", img, "8M")
			f, _ := os.OpenFile(img, os.O_RDWR, 0)
			defer f.Close()
			f.WriteAt([]byte{20, 0, 0, 0}, 1<<20+1024+0x18) // block size 1024<<20: the kernel refuses it
		},
	}
	want := map[string]string{"no filesystem": "no partition table or filesystem", "corrupt GPT": "corrupt partition table", "unmountable ext4": "no filesystem of"}
	for name, mk := range broken {
		img := filepath.Join(t.TempDir(), "b.img")
		os.WriteFile(img, nil, 0o600)
		os.Truncate(img, 16<<20)
		mk(img)
		disk := strings.ReplaceAll(name, " ", "-")
		ok(t, "--repo", repo, "disk", "create", disk, "--size", "16M")
		ok(t, "--repo", repo, "import", disk, img)
		root := t.TempDir()
		r := hs(t, "--repo", repo, "browse", disk, "--root", root)
		if r.code != 1 || !strings.Contains(r.stderr, want[name]) {
			t.Errorf("%s: browse exit %d, stderr %q; want 1 and %q", name, r.code, r.stderr, want[name])
		}
		r = hs(t, "--repo", repo, "restore", disk, "/etc", "--to", filepath.Join(root, "out"))
		if r.code == 0 {
			t.Errorf("%s: restore succeeded", name)
		}
		if name == "unmountable ext4" && (r.code != 1 || !strings.Contains(r.stdout, "p1 failed: mount -t ext4")) {
			t.Errorf("%s: restore does not say why: %s", name, r.stdout)
		}
		noRecoverLeftovers(t, root)
	}
}

// TestRecoverInterrupted (acceptance 6): SIGINT during restore and during
// browse --shell leaves no mount and no loop device.
func TestRecoverInterrupted(t *testing.T) {
	t.Parallel()
	needRoot(t)
	needTools(t, "mkfs.ext4", "findmnt", "losetup")
	repo := newRepo(t)
	td := buildDisk(t, "", partSpec{"ext4", 64 << 20})
	ok(t, "--repo", repo, "disk", "create", "big", "--size", fmt.Sprint(td.size))
	td.change(t, 0, func(dir string) {
		f, err := os.Create(filepath.Join(dir, "big.bin"))
		must(t, err)
		buf := make([]byte, 1<<20)
		for i := 0; i < 48; i++ {
			buf[0] = byte(i)
			f.Write(buf)
		}
		must(t, f.Close())
	})
	ok(t, "--repo", repo, "import", "big", td.img)

	mounted := func() bool {
		return strings.Contains(run(t, "losetup", "-a"), "hindsight-recover-")
	}
	for _, c := range []struct {
		name  string
		args  []string
		stdin bool
	}{
		{"restore", []string{"restore", "big", "/big.bin", "--to", filepath.Join(t.TempDir(), "out")}, false},
		{"browse --shell", []string{"browse", "big", "--shell", "--root", filepath.Join(t.TempDir(), "browse")}, true},
	} {
		cmd := exec.Command(hsBin, append([]string{"--repo", repo}, c.args...)...)
		cmd.Env = append(os.Environ(), "SHELL=/bin/sh")
		var stdin interface{ Close() error }
		if c.stdin { // a shell waiting for commands on a pipe that stays open
			w, err := cmd.StdinPipe()
			must(t, err)
			stdin = w
		}
		var stderr syncBuffer
		cmd.Stderr = &stderr
		must(t, cmd.Start())
		deadline := time.Now().Add(30 * time.Second)
		for !mounted() && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		cmd.Process.Signal(syscall.SIGINT)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(60 * time.Second):
			cmd.Process.Kill()
			t.Fatalf("%s: still running 60 s after SIGINT\n%s", c.name, stderr.String())
		}
		if stdin != nil {
			stdin.Close()
		}
		if code := cmd.ProcessState.ExitCode(); code != 130 && code != 0 {
			t.Errorf("%s: exit %d after SIGINT, want 130 (or 0 if it had finished)\n%s", c.name, code, stderr.String())
		}
		noRecoverLeftovers(t)
	}
}
