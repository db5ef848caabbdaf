package tests

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// protect runs `hindsight protect` in the background and returns the disk
// file; cleanup stops it (SIGTERM) unless the test killed it already.
func protect(t *testing.T, repo, disk string, extra ...string) (string, *proc) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "tap")
	os.Mkdir(dir, 0o700)
	p := start(t, func() {
		if isMounted(dir) {
			exec.Command("umount", "-l", dir).Run()
		}
	}, append([]string{"--repo", repo, "protect", disk, "--mount", dir, "--sync-interval", "200ms"}, extra...)...)
	p.waitUntil(t, "protect "+disk, func() bool { return isMounted(dir) })
	return filepath.Join(dir, disk+".img"), p
}

// attachRW attaches file as a read-write loop device, detached at cleanup.
func attachRW(t *testing.T, file string) string {
	t.Helper()
	dev, detach := attachRWNow(t, file)
	t.Cleanup(detach)
	return dev
}

// attachRWNow is attachRW for a caller that detaches early: detach may be
// called more than once.
func attachRWNow(t *testing.T, file string) (string, func()) {
	t.Helper()
	dev := strings.TrimSpace(run(t, "losetup", "-f", "--show", file))
	done := false
	return dev, func() {
		if !done {
			done = true
			detachLoop(t, dev)
		}
	}
}

// ext4OnTap protects disk, makes ext4 on its tap file through a loop device
// and mounts it with opts; unmount (also run at cleanup) may come early.
func ext4OnTap(t *testing.T, repo, disk string, opts ...string) (mnt, dev string, unmount func()) {
	t.Helper()
	img, _ := protect(t, repo, disk)
	return ext4OnFile(t, img, opts...)
}

// ext4OnFile makes ext4 on the disk file img (a tap's) through a loop
// device and mounts it with opts; unmount (also run at cleanup) may come
// early.
func ext4OnFile(t *testing.T, img string, opts ...string) (mnt, dev string, unmount func()) {
	t.Helper()
	dev = attachRW(t, img)
	run(t, "mkfs.ext4", "-q", "-E", "lazy_itable_init=0,lazy_journal_init=0", dev)
	mnt = t.TempDir()
	run(t, "mount", append(opts, dev, mnt)...)
	mounted := true
	unmount = func() {
		if mounted {
			mounted = false
			exec.Command("fsfreeze", "-u", mnt).Run()
			run(t, "umount", mnt)
		}
	}
	t.Cleanup(func() {
		if mounted {
			mounted = false
			exec.Command("fsfreeze", "-u", mnt).Run()
			exec.Command("umount", mnt).Run()
		}
	})
	return mnt, dev, unmount
}

// TestTapExt4Moments: ext4 on the FUSE tap through a loop device; at known
// moments, with the filesystem frozen, the device is copied; afterwards each
// moment's instant equals its copy byte for byte.
func TestTapExt4Moments(t *testing.T) {
	t.Parallel()
	needRoot(t)
	needTools(t, "mkfs.ext4", "losetup", "fsfreeze")
	repo := newRepo(t)
	ok(t, "--repo", repo, "disk", "create", "live", "--size", "64M")
	mnt, dev, unmount := ext4OnTap(t, repo, "live")
	rng := rand.New(rand.NewPCG(71, 72))
	type moment struct {
		at   time.Time
		copy string
	}
	var moments []moment
	snaps := t.TempDir()
	for round := 0; round < 5; round++ {
		for i := 0; i < 20; i++ { // create, append, rename, delete
			name := filepath.Join(mnt, fmt.Sprintf("f%d", rng.IntN(30)))
			switch rng.IntN(4) {
			case 0, 1:
				f, err := os.OpenFile(name, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
				if err != nil {
					t.Fatal(err)
				}
				buf := make([]byte, rng.IntN(64<<10)+1)
				for j := range buf {
					buf[j] = byte(rng.Uint32())
				}
				f.Write(buf)
				f.Close()
			case 2:
				os.Rename(name, filepath.Join(mnt, fmt.Sprintf("f%d", rng.IntN(30))))
			case 3:
				os.Remove(name)
			}
		}
		run(t, "sync")
		time.Sleep(300 * time.Millisecond)
		run(t, "fsfreeze", "-f", mnt)
		copyPath := filepath.Join(snaps, fmt.Sprint(round))
		run(t, "dd", "if="+dev, "of="+copyPath, "bs=1M", "iflag=direct", "status=none")
		at := time.Now().UTC()
		run(t, "fsfreeze", "-u", mnt)
		moments = append(moments, moment{at, copyPath})
	}
	unmount()
	for i, m := range moments {
		out := filepath.Join(t.TempDir(), "instant")
		ok(t, "--repo", repo, "export", "live", "--at", m.at.Format(time.RFC3339Nano), "--out", out)
		want, _ := os.ReadFile(m.copy)
		got, _ := os.ReadFile(out)
		if !bytes.Equal(got, want) {
			t.Errorf("moment %d (%s): the instant differs from the frozen copy", i, m.at.Format(time.RFC3339Nano))
		}
	}
}

// TestTapKilledKeepsFsynced: the protect process is killed with SIGKILL during
// heavy writes; every write whose fsync returned before the kill is in the
// journal, which opens cleanly and takes new writes.
func TestTapKilledKeepsFsynced(t *testing.T) {
	t.Parallel()
	needRoot(t)
	repo := newRepo(t)
	const blocks = 4096
	ok(t, "--repo", repo, "disk", "create", "k", "--size", fmt.Sprint(blocks*4096))
	img, p := protect(t, repo, "k")
	f, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	record := func(n uint64) []byte { // block n holds its own number and a checksum
		b := make([]byte, 4096)
		binary.LittleEndian.PutUint64(b, n+1)
		for i := 8; i < len(b); i++ {
			b[i] = byte(n*31 + uint64(i))
		}
		return b
	}
	killAt := 300 + rand.IntN(1500)
	synced := -1
	for n := 0; n < blocks; n++ {
		if n == killAt {
			go p.kill()
		}
		if _, err := f.WriteAt(record(uint64(n)), int64(n)*4096); err != nil {
			break
		}
		if n%16 == 15 {
			if err := f.Sync(); err != nil {
				break
			}
			synced = n
		}
	}
	if synced < 0 {
		t.Fatal("no fsync returned before the kill")
	}
	f.Close()
	p.kill()
	exec.Command("umount", "-l", filepath.Dir(img)).Run()
	out := filepath.Join(t.TempDir(), "after")
	ok(t, "--repo", repo, "export", "k", "--out", out)
	got, _ := os.ReadFile(out)
	for n := 0; n <= synced; n++ {
		if !bytes.Equal(got[n*4096:(n+1)*4096], record(uint64(n))) {
			t.Fatalf("record %d was fsynced before the kill (at write %d, last fsync %d) but is not in the journal", n, killAt, synced)
		}
	}
	// Records after the last fsync may or may not be there, but never torn.
	for n := synced + 1; n < blocks; n++ {
		b := got[n*4096 : (n+1)*4096]
		if !bytes.Equal(b, record(uint64(n))) && !bytes.Equal(b, make([]byte, 4096)) {
			t.Fatalf("record %d is neither written nor empty", n)
		}
	}
	// The journal takes new writes.
	img2, _ := protect(t, repo, "k")
	if err := os.WriteFile(img2, nil, 0); err == nil {
		t.Error("truncating the disk file succeeded")
	}
	f2, err := os.OpenFile(img2, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f2.WriteAt(record(9999), 0); err != nil {
		t.Fatal(err)
	}
	if err := f2.Close(); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 4096)
	f3, _ := os.Open(img2)
	f3.ReadAt(b, 0)
	f3.Close()
	if !bytes.Equal(b, record(9999)) {
		t.Fatal("a write after the restart does not read back")
	}
}
