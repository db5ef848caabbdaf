package tests

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hindsight-cdp/hindsight/cdp/quiesce/hooktest"
)

// protectedWithPoint protects a new small disk and writes its first block,
// so that it has a point to bookmark.
func protectedWithPoint(t *testing.T, disk string) (repo string) {
	t.Helper()
	repo = newRepo(t)
	ok(t, "--repo", repo, "disk", "create", disk, "--size", "4M")
	img, _ := protect(t, repo, disk)
	f, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(make([]byte, 4096), 0); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	return repo
}

// TestQuiesceHooks is acceptance 2 through the command line, beside a
// running protect: a hooks directory's success, a failing freeze, a hanging
// freeze and SIGTERM during a freeze, each checked from the hooks' own log.
func TestQuiesceHooks(t *testing.T) {
	t.Parallel()
	needRoot(t)
	repo := protectedWithPoint(t, "db")
	bookmark := func(k *hooktest.Kit, name string, extra ...string) result {
		return hs(t, append([]string{"--repo", repo, "bookmark", "db", name, "--consistency", "application", "--hooks", k.Dir}, extra...)...)
	}
	taken := func(name string) bool { return slices.Contains(bookmarkNames(t, repo, "db"), name) }

	t.Run("success", func(t *testing.T) {
		k := hooktest.New(t)
		k.Add("10-app", `echo "flushed the app"`, "")
		k.Add("20-fs", "", "")
		bm := quiescedBookmark(t, repo, "db", "nightly", "--hooks", k.Dir)
		k.Want("10-app freeze", "10-app freeze done", "20-fs freeze", "20-fs freeze done",
			"20-fs thaw", "20-fs thaw done", "10-app thaw", "10-app thaw done")
		if !k.Logged("10-app env freeze  nightly [db] \n") || !k.Logged("20-fs env thaw  nightly [db] ok\n") {
			b, _ := os.ReadFile(k.Log)
			t.Errorf("hook environment:\n%s", b)
		}
		if st := stepOf(t, bm.Quiesce, "hook:10-app", "freeze"); !strings.Contains(st.Output, "flushed the app") {
			t.Errorf("the hook's output is not kept: %+v", st)
		}
		if !taken("nightly") {
			t.Error("the bookmark is not listed")
		}
	})

	t.Run("failing freeze", func(t *testing.T) {
		k := hooktest.New(t)
		k.Add("10-a", "", "")
		k.Add("20-fail", `echo "database busy" >&2; exit 7`, "")
		k.Add("30-never", "", "")
		r := bookmark(k, "refused")
		if r.code != 1 || !strings.Contains(r.stderr, "refused") {
			t.Errorf("exit %d, stderr %s", r.code, r.stderr)
		}
		k.Want("10-a freeze", "10-a freeze done", "20-fail freeze",
			"20-fail freezeFail", "20-fail freezeFail done", "10-a thaw", "10-a thaw done")
		if taken("refused") {
			t.Error("a refused bookmark was recorded")
		}
	})

	t.Run("hanging freeze", func(t *testing.T) {
		k := hooktest.New(t)
		k.Add("10-a", "", "")
		k.Add("20-hang", `sleep 300 & echo "20-hang group $$ sleeper $!" >>"$log"; wait`, "")
		start := time.Now()
		r := bookmark(k, "hung", "--timeout", "1s")
		if r.code != 1 || !strings.Contains(r.stderr, "timed out") {
			t.Errorf("exit %d, stderr %s", r.code, r.stderr)
		}
		if took := time.Since(start); took > 10*time.Second {
			t.Errorf("the bookmark took %v with --timeout 1s", took)
		}
		ids := k.Scan("20-hang group %d sleeper %d")
		k.Want("10-a freeze", "10-a freeze done", "20-hang freeze",
			fmt.Sprintf("20-hang group %d sleeper %d", ids[0], ids[1]),
			"20-hang freezeFail", "20-hang freezeFail done", "10-a thaw", "10-a thaw done")
		hooktest.WaitGone(t, ids[0], ids[1])
		if taken("hung") {
			t.Error("a timed-out bookmark was recorded")
		}
	})

	t.Run("SIGTERM during freeze", func(t *testing.T) {
		k := hooktest.New(t)
		k.Add("10-a", "", "")
		k.Add("20-slow", `echo "20-slow group $$" >>"$log"; sleep 300`, "")
		k.Add("30-never", "", "")
		cmd := exec.Command(hsBin, "--repo", repo, "bookmark", "db", "killed", "--consistency", "application", "--hooks", k.Dir)
		var stderr syncBuffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		t.Cleanup(func() { cmd.Process.Kill(); <-done })
		k.WaitLogged("20-slow group ", 20*time.Second)
		cmd.Process.Signal(syscall.SIGTERM)
		var err error
		select {
		case err = <-done:
			done <- err
		case <-time.After(30 * time.Second):
			t.Fatal("hindsight bookmark did not end after SIGTERM")
		}
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 130 {
			t.Errorf("after SIGTERM: %v, want exit 130\n%s", err, stderr.String())
		}
		group := k.Scan("20-slow group %d")[0]
		k.Want("10-a freeze", "10-a freeze done", "20-slow freeze", fmt.Sprintf("20-slow group %d", group),
			"20-slow freezeFail", "20-slow freezeFail done", "10-a thaw", "10-a thaw done")
		hooktest.WaitGone(t, group)
		if taken("killed") {
			t.Error("an interrupted bookmark was recorded")
		}
	})
}

// TestQuiesceFsfreeze is acceptance 4: the fsfreeze agent on ext4 on a
// protected disk, with a writer that fsyncs all along. No write completes
// while the filesystem is frozen, the writer goes on after the thaw, and the
// bookmark's image needs no journal replay (e2fsck -fn passes, the journal
// is not marked for recovery) and holds every file fsynced before it.
func TestQuiesceFsfreeze(t *testing.T) {
	t.Parallel()
	needRoot(t)
	needTools(t, "mkfs.ext4", "e2fsck", "dumpe2fs", "losetup")
	repo := newRepo(t)
	ok(t, "--repo", repo, "disk", "create", "fs", "--size", "64M")
	mnt, _, unmount := ext4OnTap(t, repo, "fs")

	type ack struct {
		name string
		at   time.Time
	}
	acks := make(chan ack, 100000)
	stop := make(chan struct{})
	writerDone := make(chan error, 1)
	go func() {
		defer close(acks)
		for i := 0; ; i++ {
			select {
			case <-stop:
				writerDone <- nil
				return
			default:
			}
			name := fmt.Sprintf("w%05d", i)
			f, err := os.Create(filepath.Join(mnt, name))
			if err == nil {
				_, err = f.WriteString(strings.Repeat(name, 500))
				if err == nil {
					err = f.Sync()
				}
				f.Close()
			}
			if err != nil {
				writerDone <- err
				return
			}
			acks <- ack{name, time.Now()}
		}
	}()
	time.Sleep(500 * time.Millisecond)
	bm := quiescedBookmark(t, repo, "fs", "frozen", "--freeze", mnt, "--timeout", "20s")
	time.Sleep(500 * time.Millisecond)
	close(stop)
	if err := <-writerDone; err != nil {
		t.Fatal(err)
	}
	var all []ack
	for a := range acks {
		all = append(all, a)
	}
	unmount()

	frozenAt := stepOf(t, bm.Quiesce, "fsfreeze", "freeze").End
	thawedAt := stepOf(t, bm.Quiesce, "fsfreeze", "thaw").Start
	var before []string
	after := 0
	for _, a := range all {
		switch {
		case a.at.After(frozenAt) && a.at.Before(thawedAt):
			t.Errorf("%s was fsynced at %s, while frozen (%s to %s)", a.name, a.at.Format(time.RFC3339Nano),
				frozenAt.Format(time.RFC3339Nano), thawedAt.Format(time.RFC3339Nano))
		case a.at.Before(frozenAt):
			before = append(before, a.name)
		default:
			after++
		}
	}
	if len(before) == 0 || after == 0 {
		t.Fatalf("%d fsyncs before the freeze and %d after the thaw: the writer did not run on both sides", len(before), after)
	}
	t.Logf("fsfreeze held %v; %d files before, %d after", thawedAt.Sub(frozenAt), len(before), after)

	image := exportInstant(t, repo, "fs", "bookmark:frozen", t.TempDir())
	if h := run(t, "dumpe2fs", "-h", image); strings.Contains(h, "needs_recovery") {
		t.Errorf("the bookmark's journal needs recovery:\n%s", h)
	}
	if out, err := exec.Command("e2fsck", "-fn", image).CombinedOutput(); err != nil {
		t.Errorf("e2fsck -fn of the bookmark's image: %v\n%s", err, out)
	}
	dev := attachLoop(t, image, 0, 0)
	dir := mountRO(t, dev)
	for _, name := range before {
		if b, err := os.ReadFile(filepath.Join(dir, name)); err != nil || string(b) != strings.Repeat(name, 500) {
			t.Fatalf("%s, fsynced before the bookmark, is not whole in its image: %v", name, err)
		}
	}
}
