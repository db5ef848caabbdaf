package tests

import (
	"crypto/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestCLIErrors: bad input gets a clear message and a script-usable exit
// code, and changes nothing.
func TestCLIErrors(t *testing.T) {
	t.Parallel()
	repo := newRepo(t)
	ok(t, "--repo", repo, "disk", "create", "web", "--size", "1M")
	img := filepath.Join(t.TempDir(), "img")
	os.WriteFile(img, make([]byte, 1<<20), 0o600)
	ok(t, "--repo", repo, "import", "web", img, "--at", "2026-11-25T10:00:00Z")
	ok(t, "--repo", repo, "disk", "create", "empty", "--size", "1M")
	ok(t, "--repo", repo, "group", "create", "vm", "empty")
	before := ok(t, "--repo", repo, "--json", "points", "web")
	small := filepath.Join(t.TempDir(), "small")
	os.WriteFile(small, make([]byte, 4096), 0o600)

	cases := []struct {
		name string
		args []string
		code int
		says string
	}{
		{"unknown disk", []string{"--repo", repo, "import", "nope", img}, 3, `unknown disk: "nope"`},
		{"unknown disk export", []string{"--repo", repo, "export", "nope", "--out", "x"}, 3, "unknown disk"},
		{"bad time", []string{"--repo", repo, "export", "web", "--at", "yesterday", "--out", "x"}, 2, "RFC 3339"},
		{"bad import time", []string{"--repo", repo, "import", "web", img, "--at", "2026-11-25 10:00"}, 2, "invalid time"},
		{"time not after newest point", []string{"--repo", repo, "import", "web", img, "--at", "2026-11-25T09:00:00Z"}, 2, "not after"},
		{"future import", []string{"--repo", repo, "import", "web", img, "--at", time.Now().Add(time.Hour).Format(time.RFC3339)}, 2, "future"},
		{"wrong size", []string{"--repo", repo, "import", "web", small}, 2, "4096 bytes"},
		{"missing image", []string{"--repo", repo, "import", "web", "/nonexistent.img"}, 2, "no such file"},
		{"missing repo", []string{"--repo", filepath.Join(t.TempDir(), "none"), "points", "web"}, 3, "no repository"},
		{"no repo given", []string{"points", "web"}, 2, "HINDSIGHT_REPO"},
		{"bad disk name", []string{"--repo", repo, "disk", "create", "../x", "--size", "1M"}, 2, "invalid name"},
		{"bad size", []string{"--repo", repo, "disk", "create", "x", "--size", "lots"}, 2, "size"},
		{"duplicate disk", []string{"--repo", repo, "disk", "create", "web", "--size", "1M"}, 4, "already exists"},
		{"bookmark before history", []string{"--repo", repo, "bookmark", "web", "b", "--at", "2020-01-01T00:00:00Z"}, 3, "no point"},
		{"unknown format", []string{"--repo", repo, "export", "web", "--format", "qcow9", "--out", "x"}, 2, "raw, vmdk"},
		{"export over a file", []string{"--repo", repo, "export", "web", "--out", img}, 4, "--force"},
		{"vmdk to stdout", []string{"--repo", repo, "export", "web", "--format", "vmdk", "--out", "-"}, 2, "NAME.vmdk"},
		{"nbd off loopback without TLS", []string{"--repo", repo, "serve-nbd", "web", "--listen", "0.0.0.0:0"}, 2, "--tls-client-ca"},
		{"nbd client CA without TLS", []string{"--repo", repo, "serve-nbd", "web", "--tls-client-ca", img}, 2, "needs --tls-cert"},
		{"group where a disk is needed", []string{"--repo", repo, "export", "vm", "--out", "x"}, 3, "is a group"},
		{"disk with history joins a group", []string{"--repo", repo, "group", "add", "vm", "web"}, 2, "only while empty"},
		{"unknown group", []string{"--repo", repo, "bookmarks", "nogroup"}, 3, "neither a disk nor a group"},
		// An instant in the future or before the first point does not exist.
		{"future export", []string{"--repo", repo, "export", "web", "--at", time.Now().Add(time.Hour).Format(time.RFC3339), "--out", "x"}, 3, "future"},
		{"pre-history export", []string{"--repo", repo, "export", "web", "--at", "2020-01-01T00:00:00Z", "--out", "x"}, 3, "no point"},
		{"future history", []string{"--repo", repo, "history", "web", "/etc/fstab", "--until", "@4102444800"}, 3, "future"},
		{"future bookmark", []string{"--repo", repo, "bookmark", "web", "b", "--at", "@4102444800"}, 3, "future"},
		{"unknown bookmark instant", []string{"--repo", repo, "export", "web", "--at", "bookmark:nope", "--out", "x"}, 3, "unknown bookmark"},
		{"no point yet", []string{"--repo", repo, "export", "empty", "--out", "x"}, 3, "no point yet"},
		{"bad block size", []string{"--repo", repo, "disk", "create", "x", "--size", "1M", "--block-size", "3K"}, 2, "power of two"},
		{"block size too large", []string{"--repo", repo, "disk", "create", "x", "--size", "4M", "--block-size", "2M"}, 2, "power of two"},
		{"bad block size unit", []string{"--repo", repo, "disk", "create", "x", "--size", "1M", "--block-size", "4Q"}, 2, "size"},
		{"size not a multiple of the block size", []string{"--repo", repo, "disk", "create", "x", "--size", "1000"}, 2, "not a multiple"},
		{"zero size", []string{"--repo", repo, "disk", "create", "x", "--size", "0"}, 2, "positive"},
	}
	for _, c := range cases {
		r := hs(t, c.args...)
		if r.code != c.code || !strings.Contains(r.stderr, c.says) {
			t.Errorf("%s: exit %d, stderr %q; want exit %d saying %q", c.name, r.code, r.stderr, c.code, c.says)
		}
	}
	if out := ok(t, "--repo", repo, "--json", "disk", "list"); strings.Contains(out, `"x"`) {
		t.Errorf("a refused disk create made disk x: %s", out)
	}
	if after := ok(t, "--repo", repo, "--json", "points", "web"); after != before {
		t.Errorf("failed commands changed the points:\n%s\n%s", before, after)
	}
	// A repository whose marker is garbled is there and damaged (1), unlike
	// a missing one (3, above).
	garbled := newRepo(t)
	ok(t, "--repo", garbled, "disk", "create", "web", "--size", "1M")
	if err := os.WriteFile(filepath.Join(garbled, "hindsight.json"), []byte("{\x00garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"points", "web"}, {"import", "web", img}, {"export", "web", "--out", filepath.Join(t.TempDir(), "g")}, {"disk", "list"}} {
		r := hs(t, append([]string{"--repo", garbled}, args...)...)
		if r.code != 1 || !strings.Contains(r.stderr, "damaged") || !strings.Contains(r.stderr, "marker") {
			t.Errorf("%s on a garbled hindsight.json: exit %d, stderr %q; want exit 1 saying the repository is damaged", args[0], r.code, r.stderr)
		}
	}
	// The repository may come from the environment instead of --repo.
	cmd := exec.Command(hsBin, "--json", "points", "web")
	cmd.Env = append(os.Environ(), "HINDSIGHT_REPO="+repo)
	if out, err := cmd.Output(); err != nil || string(out) != before {
		t.Errorf("points with HINDSIGHT_REPO: %v\n%s", err, out)
	}
}

// TestSecondWriterRefused: while another process holds the repository for
// writing, a writer command fails clearly and changes nothing.
func TestSecondWriterRefused(t *testing.T) {
	t.Parallel()
	repo := newRepo(t)
	ok(t, "--repo", repo, "disk", "create", "web", "--size", "1M")
	img := filepath.Join(t.TempDir(), "img")
	os.WriteFile(img, make([]byte, 1<<20), 0o600)
	// util-linux flock takes the same flock(2) a hindsight writer holds.
	holder := exec.Command("flock", filepath.Join(repo, "writer.lock"), "sleep", "60")
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { holder.Process.Signal(syscall.SIGKILL); holder.Wait() })
	deadline := time.Now().Add(5 * time.Second)
	for {
		r := hs(t, "--repo", repo, "import", "web", img)
		if r.code == 4 && strings.Contains(r.stderr, "in use by another writer") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("import beside a writer: exit %d, %q; want exit 4", r.code, r.stderr)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Readers still work beside the writer.
	if out := ok(t, "--repo", repo, "--json", "points", "web"); strings.TrimSpace(out) != "[]" {
		t.Errorf("points beside a writer: %s", out)
	}
}

// TestExportDamagedSegment: an export that meets a damaged segment ends
// with exit 1 and a message naming the damage, in every format and to
// stdout, with no panic: its reads end before the repository closes.
func TestExportDamagedSegment(t *testing.T) {
	t.Parallel()
	repo := newRepo(t)
	const size = 32 << 20
	ok(t, "--repo", repo, "disk", "create", "web", "--size", "32M")
	img := filepath.Join(t.TempDir(), "random.img")
	data := make([]byte, size)
	rand.Read(data) // incompressible: stored raw, so the segment holds the image
	if err := os.WriteFile(img, data, 0o600); err != nil {
		t.Fatal(err)
	}
	ok(t, "--repo", repo, "import", "web", img)
	seg := filepath.Join(repo, "segments", "00000001.seg")
	if fi, err := os.Stat(seg); err != nil || fi.Size() < size {
		t.Fatalf("segment 1: %v (want the imported image in it)", err)
	}
	if err := os.Truncate(seg, 1<<20); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ format, out string }{
		{"raw", "x.raw"}, {"vmdk", "x.vmdk"}, {"vhd", "x.vhd"}, {"vmdk-stream", "s.vmdk"}, {"raw", "-"}, {"vmdk-stream", "-"},
	} {
		out := c.out
		if out != "-" {
			out = filepath.Join(t.TempDir(), out)
		}
		r := hs(t, "--repo", repo, "export", "web", "--format", c.format, "--out", out)
		if r.code != 1 || !strings.Contains(r.stderr, "segment") ||
			strings.Contains(r.stderr, "panic") || strings.Contains(r.stderr, "goroutine") || strings.Contains(r.stderr, "DATA RACE") {
			t.Errorf("export --format %s --out %s of a truncated segment: exit %d, stderr:\n%s\nwant exit 1 naming the segment, no panic", c.format, c.out, r.code, r.stderr)
		}
		if out != "-" {
			if _, err := os.Stat(out); !os.IsNotExist(err) {
				t.Errorf("export --format %s of a truncated segment left %s", c.format, out)
			}
		}
	}
}
