package quiesce

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// loopExt4 makes a small ext4 image, attaches it and mounts it; cleanup
// thaws, unmounts and detaches even when the test failed midway.
func loopExt4(t *testing.T) (mnt, dev string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root for loop devices and mounts")
	}
	for _, tool := range []string{"mkfs.ext4", "losetup", "e2fsck", "dumpe2fs", "fsfreeze"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is not installed: run make deps", tool)
		}
	}
	dir := t.TempDir()
	img := filepath.Join(dir, "fs.img")
	mustRun(t, "truncate", "-s", "64M", img)
	mustRun(t, "mkfs.ext4", "-q", "-E", "lazy_itable_init=0,lazy_journal_init=0", img)
	dev = strings.TrimSpace(mustRun(t, "losetup", "-f", "--show", img))
	t.Cleanup(func() {
		for i := 0; i < 50 && exec.Command("losetup", "-d", dev).Run() != nil; i++ {
			time.Sleep(100 * time.Millisecond)
		}
	})
	mnt = filepath.Join(dir, "mnt")
	os.Mkdir(mnt, 0o755)
	mustRun(t, "mount", dev, mnt)
	t.Cleanup(func() {
		exec.Command("fsfreeze", "-u", mnt).Run()
		if err := exec.Command("umount", mnt).Run(); err != nil {
			t.Errorf("umount %s: %v", mnt, err)
		}
	})
	return mnt, dev
}

func mustRun(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestFsfreeze: while frozen a writer blocks, after thaw it proceeds, and a
// copy of the device taken at the mark is clean without journal replay.
func TestFsfreeze(t *testing.T) {
	mnt, dev := loopExt4(t)
	os.WriteFile(filepath.Join(mnt, "before"), []byte("written before the bookmark"), 0o644)
	sub := filepath.Join(mnt, "sub")
	os.Mkdir(sub, 0o755)
	r, err := New(Options{FreezePaths: []string{mnt, sub}, Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	copyPath := filepath.Join(t.TempDir(), "copy.img")
	wrote := make(chan time.Time, 1)
	var thawed time.Time
	rep, err := r.Run(context.Background(), func(context.Context) error {
		go func() {
			f, err := os.Create(filepath.Join(mnt, "during"))
			if err == nil {
				f.WriteString("written while frozen")
				f.Sync()
				f.Close()
			}
			wrote <- time.Now()
		}()
		select {
		case at := <-wrote:
			return errors.New("a write went through at " + at.String() + " while frozen")
		case <-time.After(300 * time.Millisecond):
		}
		if out, err := exec.Command("dd", "if="+dev, "of="+copyPath, "bs=1M", "iflag=direct", "status=none").CombinedOutput(); err != nil {
			return errors.New(string(out))
		}
		thawed = time.Now()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case at := <-wrote:
		if at.Before(thawed) {
			t.Errorf("the writer finished before the thaw")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the writer is still blocked after the thaw")
	}
	if !rep.Consistent || !strings.Contains(rep.Steps[0].Output, "same filesystem") {
		t.Errorf("report %+v", rep)
	}
	// No journal replay needed: needs_recovery is clear and e2fsck -fn is clean.
	if h := mustRun(t, "dumpe2fs", "-h", copyPath); strings.Contains(h, "needs_recovery") {
		t.Errorf("the copy's journal needs recovery:\n%s", h)
	}
	if out, err := exec.Command("e2fsck", "-fn", copyPath).CombinedOutput(); err != nil {
		t.Errorf("e2fsck -fn of the bookmark's copy: %v\n%s", err, out)
	}
}

// TestFsfreezeBusy: a filesystem someone else froze cannot be frozen again;
// the bookmark is refused and the other freeze is left alone.
func TestFsfreezeBusy(t *testing.T) {
	mnt, _ := loopExt4(t)
	mustRun(t, "fsfreeze", "-f", mnt)
	r, err := New(Options{Agents: []string{AgentFsfreeze}, FreezePaths: []string{mnt}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = r.Run(context.Background(), func(context.Context) error { t.Error("marked"); return nil })
	if !errors.Is(err, ErrRefused) {
		t.Fatalf("error %v, want ErrRefused", err)
	}
	if err := exec.Command("fsfreeze", "-u", mnt).Run(); err != nil {
		t.Errorf("the other freeze was undone by the thaw: %v", err)
	}
}
