package tests

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// serveNBD runs `hindsight serve-nbd` on an ephemeral loopback port and
// returns its address; cleanup stops it.
func serveNBD(t *testing.T, repo string, disks ...string) string {
	t.Helper()
	p := start(t, nil, append([]string{"--repo", repo, "serve-nbd", "--listen", "127.0.0.1:0", "--sync-interval", "100ms"}, disks...)...)
	re := regexp.MustCompile(`at (127\.0\.0\.1:\d+)`)
	var addr string
	p.waitUntil(t, "serve-nbd listening", func() bool {
		if m := re.FindStringSubmatch(p.stderr.String()); m != nil {
			addr = m[1]
		}
		return addr != ""
	})
	return addr
}

// newestEquals waits until the disk's newest published instant equals want.
func newestEquals(t *testing.T, repo, disk string, want []byte, what string) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "newest")
	deadline := time.Now().Add(5 * time.Second)
	for {
		os.Remove(out)
		if r := hs(t, "--repo", repo, "export", disk, "--out", out); r.code == 0 {
			if got, _ := os.ReadFile(out); bytes.Equal(got, want) {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: the newest instant does not equal what the client wrote", what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestNBDWithQemuClients: qemu-io, qemu-img convert, nbdcopy and nbdinfo
// against serve-nbd; after each, the journal's newest instant is what the
// client wrote, and bad requests leave it unharmed.
func TestNBDWithQemuClients(t *testing.T) {
	needTools(t, "qemu-io", "qemu-img", "nbdcopy", "nbdinfo")
	repo := newRepo(t)
	const size = 8 << 20
	ok(t, "--repo", repo, "disk", "create", "vm", "--size", "8M")
	ok(t, "--repo", repo, "disk", "create", "other", "--size", "1M")
	addr := serveNBD(t, repo, "vm", "other")
	url := fmt.Sprintf("nbd://%s/vm", addr)
	model := make([]byte, size)

	run(t, "qemu-io", "-f", "raw", url, "-c", "write -P 0xab 0 1M", "-c", "write -P 0x5c 3M 512k",
		"-c", "write -z 512k 64k", "-c", "flush", "-c", "read -P 0xab 0 512k")
	copy(model, bytes.Repeat([]byte{0xab}, 1<<20))
	copy(model[3<<20:], bytes.Repeat([]byte{0x5c}, 512<<10))
	clear(model[512<<10 : 576<<10])
	newestEquals(t, repo, "vm", model, "qemu-io")

	// Requests past the end are refused and change nothing.
	if out, err := exec.Command("qemu-io", "-f", "raw", url, "-c", "write -P 0x11 8M 4k").CombinedOutput(); err == nil && !strings.Contains(string(out), "rror") {
		t.Errorf("write past the end succeeded: %s", out)
	}
	newestEquals(t, repo, "vm", model, "refused write")

	rng := rand.New(rand.NewPCG(91, 92))
	for i := range model {
		if i%3 != 0 {
			model[i] = byte(rng.Uint32())
		}
	}
	src := filepath.Join(t.TempDir(), "src.raw")
	os.WriteFile(src, model, 0o600)
	run(t, "qemu-img", "convert", "-n", "-f", "raw", "-O", "raw", src, url)
	newestEquals(t, repo, "vm", model, "qemu-img convert in")
	back := filepath.Join(t.TempDir(), "back.raw")
	run(t, "qemu-img", "convert", "-f", "raw", "-O", "raw", url, back)
	if got, _ := os.ReadFile(back); !bytes.Equal(got, model) {
		t.Fatal("qemu-img convert out of the export differs")
	}

	for i := 0; i < size; i += 4096 {
		model[i] ^= 0xff
	}
	os.WriteFile(src, model, 0o600)
	run(t, "nbdcopy", "--flush", src, url)
	newestEquals(t, repo, "vm", model, "nbdcopy")

	var info struct {
		Exports []struct {
			Name string `json:"export-name"`
			Size int64  `json:"export-size"`
		} `json:"exports"`
	}
	if err := json.Unmarshal([]byte(run(t, "nbdinfo", "--json", url)), &info); err != nil {
		t.Fatal(err)
	}
	if len(info.Exports) != 1 || info.Exports[0].Name != "vm" || info.Exports[0].Size != size {
		t.Errorf("nbdinfo: %+v", info)
	}
	list := run(t, "nbdinfo", "--list", fmt.Sprintf("nbd://%s", addr))
	if !strings.Contains(list, "vm") || !strings.Contains(list, "other") {
		t.Errorf("nbdinfo --list: %s", list)
	}
	if out, err := exec.Command("qemu-io", "-f", "raw", fmt.Sprintf("nbd://%s/nope", addr), "-c", "read 0 512").CombinedOutput(); err == nil {
		t.Errorf("an unknown export opened: %s", out)
	}
}
