package tests

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// partSpec is one filesystem of a test disk.
type partSpec struct {
	fs   string // ext4, xfs, btrfs
	size int64  // bytes
}

// testDisk is a disk image file with filesystems, changed between imports.
type testDisk struct {
	img   string
	size  int64
	parts []struct{ offset, size int64 }
	specs []partSpec
}

// buildDisk makes a sparse image with a table (label "dos", "gpt", or ""
// for one filesystem on the whole disk) and makes each filesystem on it.
func buildDisk(t *testing.T, label string, specs ...partSpec) *testDisk {
	t.Helper()
	td := &testDisk{img: filepath.Join(t.TempDir(), "disk.img"), specs: specs}
	size := int64(2 << 20)
	for _, s := range specs {
		size += s.size
	}
	if label == "" {
		size = specs[0].size
	}
	td.size = size
	os.WriteFile(td.img, nil, 0o600)
	if err := os.Truncate(td.img, size); err != nil {
		t.Fatal(err)
	}
	if label == "" {
		td.parts = append(td.parts, struct{ offset, size int64 }{0, size})
	} else {
		script := "label: " + label + "\n"
		for _, s := range specs {
			script += fmt.Sprintf("size=%dKiB, type=%s\n", s.size/1024, map[string]string{"dos": "83", "gpt": "L"}[label])
		}
		sf := exec.Command("sfdisk", "-q", td.img)
		sf.Stdin = strings.NewReader(script)
		if out, err := sf.CombinedOutput(); err != nil {
			t.Fatalf("sfdisk: %v\n%s", err, out)
		}
		var tbl struct {
			PartitionTable struct {
				Partitions []struct{ Start, Size int64 } `json:"partitions"`
			} `json:"partitiontable"`
		}
		if err := json.Unmarshal([]byte(run(t, "sfdisk", "--json", td.img)), &tbl); err != nil {
			t.Fatal(err)
		}
		for _, p := range tbl.PartitionTable.Partitions {
			td.parts = append(td.parts, struct{ offset, size int64 }{p.Start * 512, p.Size * 512})
		}
	}
	for i, s := range specs {
		dev, detach := rwLoop(t, td, i)
		args := map[string][]string{"ext4": {"mkfs.ext4", "-q", "-F"}, "xfs": {"mkfs.xfs", "-q", "-f"}, "btrfs": {"mkfs.btrfs", "-q", "-f", "-M"}}[s.fs]
		mk := exec.Command(args[0], append(args[1:], dev)...)
		// xfsprogs refuses XFS below 300 MB except under fstests' variables.
		mk.Env = append(os.Environ(), "TEST_DIR=1", "TEST_DEV=1", "QA_CHECK_FS=1")
		if out, err := mk.CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", args[0], err, out)
		}
		detach()
	}
	return td
}

// rwLoop attaches partition i read-write.
func rwLoop(t *testing.T, td *testDisk, i int) (string, func()) {
	t.Helper()
	p := td.parts[i]
	dev := strings.TrimSpace(run(t, "losetup", "-f", "--show", "-o", fmt.Sprint(p.offset), "--sizelimit", fmt.Sprint(p.size), td.img))
	done := false
	detach := func() {
		if !done {
			done = true
			detachLoop(t, dev)
		}
	}
	t.Cleanup(detach)
	return dev, detach
}

// uuid is the filesystem UUID of partition i.
func (td *testDisk) uuid(t *testing.T, i int) string {
	dev, detach := rwLoop(t, td, i)
	defer detach()
	return strings.TrimSpace(run(t, "blkid", "-s", "UUID", "-o", "value", dev))
}

// change mounts partition i read-write, runs fn on it and unmounts.
func (td *testDisk) change(t *testing.T, i int, fn func(dir string)) {
	t.Helper()
	dev, detach := rwLoop(t, td, i)
	defer detach()
	dir := t.TempDir()
	run(t, "mount", "-t", td.specs[i].fs, dev, dir)
	defer func() {
		if err := exec.Command("umount", dir).Run(); err != nil {
			exec.Command("umount", "-l", dir).Run()
			t.Errorf("umount %s: %v", dir, err)
		}
	}()
	fn(dir)
}

// write writes files (path → content) below dir, making directories.
func write(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// noRecoverLeftovers fails the test if a mount or loop device of a recovery
// (a private tree, or a browse root) is still there.
func noRecoverLeftovers(t *testing.T, roots ...string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		var left []string
		for _, line := range strings.Split(run(t, "findmnt", "-rn", "-o", "TARGET,SOURCE"), "\n") {
			if strings.Contains(line, "hindsight-recover-") || matchesAny(line, roots) {
				left = append(left, "mount: "+line)
			}
		}
		for _, line := range strings.Split(run(t, "losetup", "-a"), "\n") {
			if strings.Contains(line, "hindsight-recover-") {
				left = append(left, "loop: "+line)
			}
		}
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			for _, l := range left {
				if strings.HasPrefix(l, "mount: ") {
					exec.Command("umount", "-l", strings.Fields(strings.TrimPrefix(l, "mount: "))[0]).Run()
				}
			}
			t.Fatalf("left behind:\n%s", strings.Join(left, "\n"))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func matchesAny(s string, subs []string) bool {
	for _, x := range subs {
		if x != "" && strings.Contains(s, x) {
			return true
		}
	}
	return false
}

// browseInstant is what `browse --json` prints.
type browseInstant struct {
	Dir   string `json:"dir"`
	Parts []struct {
		Name       string `json:"name"`
		Dir        string `json:"dir"`
		Mountpoint string `json:"mountpoint"`
		Status     string `json:"status"`
		Error      string `json:"error"`
		FS         struct {
			Type string `json:"type"`
		} `json:"fs"`
	} `json:"partitions"`
}
