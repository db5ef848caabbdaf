package tests

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// rec is one record the workload appended and fsynced.
type rec struct {
	file  int
	index int
	acked time.Time // when its fsync returned
}

// recordBytes is record i of file f: a header and a checksum over it.
func recordBytes(f, i int) []byte {
	b := make([]byte, 512)
	binary.LittleEndian.PutUint32(b, uint32(f))
	binary.LittleEndian.PutUint32(b[4:], uint32(i))
	for j := 8; j < 480; j++ {
		b[j] = byte(f*7 + i*13 + j)
	}
	sum := sha256.Sum256(b[:480])
	copy(b[480:], sum[:])
	return b
}

// TestTapCrashConsistentInstants: a workload appends checksummed records with
// an fsync after each; at 50 random instants the image, on a scratch copy with
// its ext4 journal replayed, passes e2fsck -fn and holds every record whose
// fsync returned before the instant, intact.
func TestTapCrashConsistentInstants(t *testing.T) {
	t.Parallel()
	needRoot(t)
	needTools(t, "mkfs.ext4", "e2fsck", "losetup")
	repo := newRepo(t)
	ok(t, "--repo", repo, "disk", "create", "cc", "--size", "32M")
	mnt, _, unmount := ext4OnTap(t, repo, "cc", "-o", "commit=1")
	const files = 4
	fds := make([]*os.File, files)
	for f := range fds {
		var err error
		if fds[f], err = os.OpenFile(filepath.Join(mnt, fmt.Sprintf("log%d", f)), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	start := time.Now()
	var recs []rec
	counts := make([]int, files)
	for time.Since(start) < 4*time.Second {
		f := rand.IntN(files)
		if _, err := fds[f].Write(recordBytes(f, counts[f])); err != nil {
			t.Fatal(err)
		}
		if err := fds[f].Sync(); err != nil {
			t.Fatal(err)
		}
		recs = append(recs, rec{f, counts[f], time.Now()})
		counts[f]++
	}
	end := time.Now()
	for _, fd := range fds {
		fd.Close()
	}
	unmount()
	t.Logf("%d records fsynced in %v", len(recs), end.Sub(start).Round(time.Millisecond))

	scratch := t.TempDir()
	for k := 0; k < 50; k++ {
		at := start.Add(time.Duration(rand.Int64N(int64(end.Sub(start)))))
		copyPath := filepath.Join(scratch, "copy.img")
		os.Remove(copyPath)
		ok(t, "--repo", repo, "export", "cc", "--at", at.Format(time.RFC3339Nano), "--out", copyPath)
		// Replay the ext4 journal on the scratch copy, as a mount after a crash would.
		if out, err := exec.Command("e2fsck", "-E", "journal_only", "-y", copyPath).CombinedOutput(); err != nil {
			if ee, isExit := err.(*exec.ExitError); !isExit || ee.ExitCode() > 1 {
				t.Fatalf("instant %s: journal replay: %v\n%s", at.Format(time.RFC3339Nano), err, out)
			}
		}
		if out, err := exec.Command("e2fsck", "-fn", copyPath).CombinedOutput(); err != nil {
			t.Fatalf("instant %s: e2fsck -fn: %v\n%s", at.Format(time.RFC3339Nano), err, out)
		}
		checkRecords(t, copyPath, at, recs, files)
	}
}

// checkRecords mounts the scratch image and checks that every record acked
// before at is present and intact.
func checkRecords(t *testing.T, image string, at time.Time, recs []rec, files int) {
	t.Helper()
	dev, detach := attachLoopNow(t, image, 0, 0)
	defer detach()
	dir, unmount := mountRONow(t, dev)
	defer unmount()
	for f := 0; f < files; f++ {
		want := 0
		for _, r := range recs {
			if r.file == f && r.acked.Before(at) {
				want = r.index + 1
			}
		}
		data, err := os.ReadFile(filepath.Join(dir, fmt.Sprintf("log%d", f)))
		if err != nil && want > 0 {
			t.Fatalf("instant %s: log%d: %v (%d records were fsynced before)", at.Format(time.RFC3339Nano), f, err, want)
		}
		for i := 0; i < want; i++ {
			if len(data) < (i+1)*512 || string(data[i*512:(i+1)*512]) != string(recordBytes(f, i)) {
				t.Fatalf("instant %s: record %d of log%d, fsynced before, is missing or torn", at.Format(time.RFC3339Nano), i, f)
			}
		}
	}
}
