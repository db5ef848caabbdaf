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

// ext4Points builds an ext4 filesystem image from a folder with mkfs.ext4 -d
// (at offset bytes into a file of total bytes), changing its files between
// imports. It returns, per point, the files' expected content.
func ext4Points(t *testing.T, repo, disk, img string, offset, fsBytes int64, start time.Time) []map[string]string {
	t.Helper()
	src := filepath.Join(t.TempDir(), "src")
	os.MkdirAll(filepath.Join(src, "etc"), 0o755)
	os.MkdirAll(filepath.Join(src, "srv/site"), 0o755)
	var states []map[string]string
	files := map[string]string{}
	for i := 0; i < 4; i++ {
		files["etc/hostname"] = fmt.Sprintf("web-%d\n", i)
		files["srv/site/index.html"] = fmt.Sprintf("<h1>version %d</h1>\n", i)
		if i%2 == 0 {
			files[fmt.Sprintf("srv/site/page%d.html", i)] = fmt.Sprintf("page written at point %d\n", i)
		}
		if i == 3 {
			delete(files, "srv/site/page0.html")
			os.Remove(filepath.Join(src, "srv/site/page0.html"))
		}
		for name, content := range files {
			if err := os.WriteFile(filepath.Join(src, name), []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		args := []string{"-q", "-F", "-d", src, "-U", "5b1c0b4e-8f0a-4a8e-9d7f-2f9a3c1e0d11", "-E", "root_owner=0:0"}
		if offset > 0 {
			args = append(args, "-E", fmt.Sprintf("offset=%d", offset))
		}
		run(t, "mkfs.ext4", append(args, img, fmt.Sprintf("%dk", fsBytes/1024))...)
		ok(t, "--repo", repo, "import", disk, img, "--at", start.Add(time.Duration(i)*time.Minute).Format(time.RFC3339))
		snapshot := map[string]string{}
		for k, v := range files {
			snapshot[k] = v
		}
		states = append(states, snapshot)
	}
	return states
}

// checkFiles loop-mounts the instant's flat image read-only from the FUSE
// tree (the partition at offset/size when size > 0) and compares the files.
func checkFiles(t *testing.T, flat string, offset, size int64, want map[string]string, gone []string) {
	t.Helper()
	dev := attachLoop(t, flat, offset, size)
	dir := mountRO(t, dev)
	for name, content := range want {
		got, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil || string(got) != content {
			t.Errorf("%s in %s: %q, %v; want %q", name, flat, got, err, content)
		}
	}
	for _, name := range gone {
		if _, err := os.Stat(filepath.Join(dir, name)); err == nil {
			t.Errorf("%s exists in %s, but was deleted before that point", name, flat)
		}
	}
}

// TestExt4Points: a real ext4 filesystem changed over points; each point's
// flat image, loop-mounted from the FUSE tree, holds the files as they were.
func TestExt4Points(t *testing.T) {
	t.Parallel()
	needRoot(t)
	needTools(t, "mkfs.ext4", "losetup")
	repo := newRepo(t)
	ok(t, "--repo", repo, "disk", "create", "fs", "--size", "32M")
	img := filepath.Join(t.TempDir(), "fs.img")
	os.WriteFile(img, nil, 0o600)
	os.Truncate(img, 32<<20)
	start := time.Date(2026, 11, 25, 8, 0, 0, 0, time.UTC)
	states := ext4Points(t, repo, "fs", img, 0, 32<<20, start)
	mnt := mountRepo(t, repo)
	for i, want := range states {
		flat := filepath.Join(mnt, "fs", start.Add(time.Duration(i)*time.Minute).Format("20060102T150405Z"), "fs-flat.vmdk")
		var gone []string
		if i == 3 {
			gone = []string{"srv/site/page0.html"}
		}
		checkFiles(t, flat, 0, 0, want, gone)
	}
}

// TestPartitionedExt4: an MBR-partitioned image with one ext4 partition; the
// partition is attached from the table's own offsets (this kernel parses no
// partition tables).
func TestPartitionedExt4(t *testing.T) {
	t.Parallel()
	needRoot(t)
	needTools(t, "mkfs.ext4", "losetup", "sfdisk")
	repo := newRepo(t)
	ok(t, "--repo", repo, "disk", "create", "pd", "--size", "40M")
	img := filepath.Join(t.TempDir(), "pd.img")
	os.WriteFile(img, nil, 0o600)
	os.Truncate(img, 40<<20)
	sfdisk := exec.Command("sfdisk", "-q", img)
	sfdisk.Stdin = strings.NewReader("label: dos\nstart=2048, size=65536, type=83\n")
	if out, err := sfdisk.CombinedOutput(); err != nil {
		t.Fatalf("sfdisk: %v\n%s", err, out)
	}
	var table struct {
		PartitionTable struct {
			SectorSize int64 `json:"sectorsize"`
			Partitions []struct {
				Start int64 `json:"start"`
				Size  int64 `json:"size"`
			} `json:"partitions"`
		} `json:"partitiontable"`
	}
	if err := json.Unmarshal([]byte(run(t, "sfdisk", "--json", img)), &table); err != nil {
		t.Fatal(err)
	}
	ss := table.PartitionTable.SectorSize
	if ss == 0 {
		ss = 512
	}
	p := table.PartitionTable.Partitions[0]
	offset, size := p.Start*ss, p.Size*ss
	start := time.Date(2026, 11, 25, 7, 0, 0, 0, time.UTC)
	states := ext4Points(t, repo, "pd", img, offset, size, start)
	mnt := mountRepo(t, repo)
	for _, i := range []int{0, 3} {
		flat := filepath.Join(mnt, "pd", start.Add(time.Duration(i)*time.Minute).Format("20060102T150405Z"), "pd-flat.vmdk")
		// Read the table from the served image itself.
		if err := json.Unmarshal([]byte(run(t, "sfdisk", "--json", flat)), &table); err != nil {
			t.Fatal(err)
		}
		p := table.PartitionTable.Partitions[0]
		checkFiles(t, flat, p.Start*ss, p.Size*ss, states[i], nil)
	}
}
