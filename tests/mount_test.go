package tests

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// recentHistory imports three points 50, 30 and 10 minutes ago, so that
// relative names resolve, and bookmarks the middle one.
func recentHistory(t *testing.T, repo string) (*history, time.Time) {
	t.Helper()
	ok(t, "--repo", repo, "disk", "create", "web", "--size", "2M")
	now := time.Now().UTC().Truncate(time.Second)
	rng := rand.New(rand.NewPCG(31, 32))
	h := &history{}
	img := make([]byte, 2<<20)
	file := filepath.Join(t.TempDir(), "img")
	for _, ago := range []int{50, 30, 10} {
		mutate(rng, img, 20)
		os.WriteFile(file, img, 0o600)
		at := now.Add(-time.Duration(ago) * time.Minute)
		ok(t, "--repo", repo, "import", "web", file, "--at", at.Format(time.RFC3339))
		h.times = append(h.times, at)
		h.images = append(h.images, bytes.Clone(img))
	}
	ok(t, "--repo", repo, "bookmark", "web", "mid", "--at", h.times[1].Add(time.Minute).Format(time.RFC3339))
	return h, now
}

func readFlat(t *testing.T, dir string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "web-flat.vmdk"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestMountTree: listing, every accepted time form, bad names, info.json,
// permissions and read-only files.
func TestMountTree(t *testing.T) {
	t.Parallel()
	repo := newRepo(t)
	h, now := recentHistory(t, repo)
	mnt := mountRepo(t, repo)

	root, err := os.ReadDir(mnt)
	if err != nil || len(root) != 1 || root[0].Name() != "web" {
		t.Fatalf("root lists %v, %v; want [web]", root, err)
	}
	ents, err := os.ReadDir(filepath.Join(mnt, "web"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	for _, want := range []string{"latest", "bookmarks",
		h.times[0].Format("20060102T150405Z"), h.times[1].Format("20060102T150405Z"), h.times[2].Format("20060102T150405Z"),
		h.times[1].Add(time.Minute).Format("20060102T150405Z")} {
		if !slices.Contains(names, want) {
			t.Errorf("web/ lists %v, missing %s", names, want)
		}
	}

	// Each form resolves to the right point; the flat image equals the model.
	mid := h.times[1].Add(90 * time.Second)
	forms := map[string]time.Time{
		"latest":                       h.times[2],
		mid.Format("20060102T150405Z"): mid,
		mid.Add(5e8).Format("20060102T150405.9Z"):                mid.Add(5e8),
		mid.In(time.FixedZone("", -5*3600)).Format(time.RFC3339): mid,
		fmt.Sprintf("@%d", mid.Unix()):                           mid,
		"-40m":                                                   now.Add(-40 * time.Minute),
		"-20m":                                                   now.Add(-20 * time.Minute),
		"-1m30s":                                                 now.Add(-90 * time.Second),
		"bookmarks/mid":                                          h.times[1].Add(time.Minute),
	}
	for name, at := range forms {
		dir := filepath.Join(mnt, "web", name)
		if !bytes.Equal(readFlat(t, dir), h.at(at)) {
			t.Errorf("%s: flat image differs from the model at %s", name, at)
		}
		var info struct {
			Disk      string    `json:"disk"`
			Requested time.Time `json:"requested"`
			Seq       uint64    `json:"seq"`
			Time      time.Time `json:"time"`
			Size      int64     `json:"size"`
		}
		b, err := os.ReadFile(filepath.Join(dir, "info.json"))
		if err != nil || json.Unmarshal(b, &info) != nil {
			t.Fatalf("%s/info.json: %v %s", name, err, b)
		}
		wantPoint := h.times[0]
		for _, pt := range h.times {
			if !pt.After(at) {
				wantPoint = pt
			}
		}
		if info.Disk != "web" || !info.Time.Equal(wantPoint) || info.Size != 2<<20 {
			t.Errorf("%s/info.json = %+v, want point time %s", name, info, wantPoint)
		}
		if !strings.HasPrefix(name, "-") && name != "latest" && !info.Requested.Equal(at) {
			t.Errorf("%s/info.json requested %s, want %s", name, info.Requested, at)
		}
	}

	// Names that are no instant: ENOENT.
	for _, bad := range []string{"garbage", "2026-13-01T00:00:00Z", "20261125T101530", "@abc", "+5m",
		now.Add(time.Hour).Format(time.RFC3339), h.times[0].Add(-time.Second).Format(time.RFC3339), "-2h", "bookmarks/nope"} {
		if _, err := os.Stat(filepath.Join(mnt, "web", bad)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("stat web/%s: %v, want ENOENT", bad, err)
		}
	}
	if _, err := os.Stat(filepath.Join(mnt, "nodisk", "latest")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("unknown disk: %v, want ENOENT", err)
	}

	// Owner-only, read-only.
	fi, err := os.Stat(filepath.Join(mnt, "web", "latest", "web-flat.vmdk"))
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 || perm&0o222 != 0 {
		t.Errorf("flat image mode %v: want owner-only, read-only", perm)
	}
	st := fi.Sys().(*syscall.Stat_t)
	if int(st.Uid) != os.Getuid() {
		t.Errorf("flat image owned by %d, want %d", st.Uid, os.Getuid())
	}
	if _, err := os.OpenFile(filepath.Join(mnt, "web", "latest", "web-flat.vmdk"), os.O_WRONLY, 0); err == nil {
		t.Error("opening an image for writing succeeded")
	}
	if err := os.WriteFile(filepath.Join(mnt, "web", "new"), nil, 0o600); err == nil {
		t.Error("creating a file in the tree succeeded")
	}
}

// TestQemuAcceptsImages: qemu-img reads the VMDK and VHD of an instant as the
// disk's exact size and finds them identical to the model and the raw export.
func TestQemuAcceptsImages(t *testing.T) {
	t.Parallel()
	needTools(t, "qemu-img")
	repo := newRepo(t)
	h, _ := recentHistory(t, repo)
	mnt := mountRepo(t, repo)
	dir := filepath.Join(mnt, "web", h.times[1].Format("20060102T150405Z"))
	model := filepath.Join(t.TempDir(), "model.raw")
	os.WriteFile(model, h.images[1], 0o600)
	exported := filepath.Join(t.TempDir(), "export.raw")
	ok(t, "--repo", repo, "export", "web", "--at", h.times[1].Format(time.RFC3339), "--out", exported)

	for _, f := range []struct{ file, format string }{{"web.vmdk", "vmdk"}, {"web.vhd", "vpc"}} {
		path := filepath.Join(dir, f.file)
		var info struct {
			Format      string `json:"format"`
			VirtualSize int64  `json:"virtual-size"`
		}
		if err := json.Unmarshal([]byte(run(t, "qemu-img", "info", "-f", f.format, "--output=json", path)), &info); err != nil {
			t.Fatal(err)
		}
		if info.Format != f.format || info.VirtualSize != 2<<20 {
			t.Errorf("qemu-img info %s: %+v, want %s of %d bytes", f.file, info, f.format, 2<<20)
		}
		if f.format == "vmdk" {
			run(t, "qemu-img", "check", path)
		}
		run(t, "qemu-img", "compare", "-f", f.format, "-F", "raw", path, model)
		run(t, "qemu-img", "compare", "-f", f.format, "-F", "raw", path, exported)
	}
}
