package tap

import (
	"bytes"
	"crypto/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/hindsight-cdp/hindsight/cdp"
	"github.com/hindsight-cdp/hindsight/store/storetest"
)

// TestAllowOtherGroupOnly mounts the tap with AllowOther and a group, over
// both transports: the disk file is 0660 and the descriptor 0440, both in
// that group; a user outside it can neither read nor write the disk; a
// member can, and what it writes reaches the journal.
func TestAllowOtherGroupOnly(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for FUSE and to run as other users")
	}
	if _, err := exec.LookPath("dd"); err != nil {
		t.Fatal(err)
	}
	// Group membership is what the child's credentials say, so any group
	// but nobody's own serves; it need not exist in /etc/group.
	const gid = 61234
	nobody := &syscall.Credential{Uid: 65534, Gid: 65534, Groups: []uint32{65534}}
	member := &syscall.Credential{Uid: 65534, Gid: 65534, Groups: []uint32{65534, gid}}

	for _, uring := range []bool{false, true} {
		name := "dev-fuse"
		if uring {
			name = "io-uring"
		}
		t.Run(name, func(t *testing.T) {
			dev, file := mountShared(t, 1<<20, Options{AllowOther: true, GID: gid, IOUring: uring,
				Files: map[string][]byte{"d.vmdk": []byte("# descriptor\n")}})
			for path, want := range map[string]os.FileMode{file: 0o660, filepath.Join(filepath.Dir(file), "d.vmdk"): 0o440} {
				st, err := os.Stat(path)
				if err != nil {
					t.Fatal(err)
				}
				sys := st.Sys().(*syscall.Stat_t)
				if st.Mode().Perm() != want || sys.Gid != gid || sys.Uid != 0 {
					t.Errorf("%s: mode %v uid %d gid %d, want %v uid 0 gid %d", filepath.Base(path), st.Mode().Perm(), sys.Uid, sys.Gid, want, gid)
				}
			}

			// dd reads its input as the user it runs as: put it where all may.
			pattern := make([]byte, 4096)
			rand.Read(pattern)
			in := filepath.Join(filepath.Dir(filepath.Dir(file)), "pattern")
			if err := os.WriteFile(in, pattern, 0o644); err != nil {
				t.Fatal(err)
			}
			read := []string{"if=" + file, "of=/dev/null", "bs=4096", "count=1"}
			write := []string{"if=" + in, "of=" + file, "bs=4096", "count=1", "conv=notrunc,nocreat"}

			for _, args := range [][]string{read, write} {
				if out, err := ddAs(nobody, args...); err == nil || !strings.Contains(out, "Permission denied") {
					t.Errorf("dd %s as nobody, not in group %d: %v %s, want Permission denied", args[:2], gid, err, out)
				}
			}
			for _, args := range [][]string{write, read} {
				if out, err := ddAs(member, args...); err != nil {
					t.Fatalf("dd %s as a member of group %d: %v %s", args[:2], gid, err, out)
				}
			}
			got := make([]byte, len(pattern))
			if _, err := dev.ReadAt(got, 0); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, pattern) {
				t.Fatal("the member's write is not in the journal")
			}
		})
	}
}

// mountShared is mountTest with the mount point in a directory every user
// may traverse, so that only the files' own modes keep others out.
func mountShared(t *testing.T, size int64, opt Options) (*cdp.Device, string) {
	r, _ := storetest.Repo(t)
	d, err := r.CreateDisk("d", size, 4096)
	if err != nil {
		t.Fatal(err)
	}
	dev := cdp.NewDevice(r, d, "tap")
	dir, err := os.MkdirTemp("", "tap-shared-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) }) // runs after the unmount below
	mnt := filepath.Join(dir, "mnt")
	for _, err := range []error{os.Chmod(dir, 0o755), os.Mkdir(mnt, 0o755)} {
		if err != nil {
			t.Fatal(err)
		}
	}
	return dev, mountDev(t, mnt, dev, opt)
}

// ddAs runs dd with cred's user and groups, returning its output.
func ddAs(cred *syscall.Credential, args ...string) (string, error) {
	cmd := exec.Command("dd", args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	out, err := cmd.CombinedOutput()
	return string(out), err
}
