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
	"syscall"
	"testing"
	"time"
)

// serveNBD runs `hindsight serve-nbd` on its default Unix socket and
// returns the socket's path, taken from the URI it prints; cleanup stops it.
func serveNBD(t *testing.T, repo string, disks ...string) string {
	t.Helper()
	p := start(t, nil, append([]string{"--repo", repo, "serve-nbd", "--sync-interval", "100ms"}, disks...)...)
	re := regexp.MustCompile(`nbd\+unix:///\S+\?socket=(\S+)`)
	var sock string
	p.waitUntil(t, "serve-nbd listening", func() bool {
		if m := re.FindStringSubmatch(p.stderr.String()); m != nil {
			sock = m[1]
		}
		return sock != ""
	})
	return sock
}

// nbdURL is the URI of export on the Unix socket sock.
func nbdURL(sock, export string) string {
	return fmt.Sprintf("nbd+unix:///%s?socket=%s", export, sock)
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
	t.Parallel()
	needTools(t, "qemu-io", "qemu-img", "nbdcopy", "nbdinfo")
	repo := newRepo(t)
	const size = 8 << 20
	ok(t, "--repo", repo, "disk", "create", "vm", "--size", "8M")
	ok(t, "--repo", repo, "disk", "create", "other", "--size", "1M")
	sock := serveNBD(t, repo, "vm", "other")
	url := nbdURL(sock, "vm")
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
	list := run(t, "nbdinfo", "--list", nbdURL(sock, ""))
	if !strings.Contains(list, "vm") || !strings.Contains(list, "other") {
		t.Errorf("nbdinfo --list: %s", list)
	}
	if out, err := exec.Command("qemu-io", "-f", "raw", nbdURL(sock, "nope"), "-c", "read 0 512").CombinedOutput(); err == nil {
		t.Errorf("an unknown export opened: %s", out)
	}
}

// TestNBDOwnerOnly: serve-nbd's default endpoint is a socket only its
// owner can open (0600 in the repository's 0700 run directory): qemu-io
// run as nobody can neither write nor read, and the disk keeps what the
// owner wrote.
func TestNBDOwnerOnly(t *testing.T) {
	t.Parallel()
	needRoot(t)
	needTools(t, "qemu-io", "runuser")
	repo := newRepo(t)
	ok(t, "--repo", repo, "disk", "create", "web", "--size", "1M")
	// The repository is 0700 too; open it and the test's directories so
	// that what keeps nobody out is the endpoint's own protection.
	for dir := repo; dir != os.TempDir() && dir != "/"; dir = filepath.Dir(dir) {
		if err := os.Chmod(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	sock := serveNBD(t, repo, "web")
	abs, _ := filepath.Abs(filepath.Join(repo, "run", "nbd.sock"))
	if sock != abs {
		t.Fatalf("default socket %s, want %s", sock, abs)
	}
	for path, want := range map[string]os.FileMode{filepath.Dir(sock): os.ModeDir | 0o700, sock: os.ModeSocket | 0o600} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != want || fi.Sys().(*syscall.Stat_t).Uid != uint32(os.Geteuid()) {
			t.Errorf("%s: mode %v uid %d, want %v owned by uid %d", path, fi.Mode(), fi.Sys().(*syscall.Stat_t).Uid, want, os.Geteuid())
		}
	}
	url := nbdURL(sock, "web")
	run(t, "qemu-io", "-f", "raw", url, "-c", "write -P 0xab 0 1M", "-c", "flush")
	model := bytes.Repeat([]byte{0xab}, 1<<20)
	newestEquals(t, repo, "web", model, "owner's write")

	for _, cmd := range []string{"write -P 0xcd 0 1M", "read 0 4k"} {
		out, err := exec.Command("runuser", "-u", "nobody", "--", "qemu-io", "-f", "raw", url, "-c", cmd).CombinedOutput()
		if err == nil || strings.Contains(string(out), "bytes at offset") {
			t.Errorf("qemu-io as nobody, %q: exit %v\n%s", cmd, err, out)
		}
	}
	newestEquals(t, repo, "web", model, "after nobody's attempts")
}

// TestNBDTCPNeedsClientCerts: TCP on loopback without client certificates
// is refused with exit 2 naming both ways out (--tls-client-ca and
// --insecure-local); --insecure-local off loopback is refused too; with
// --insecure-local on loopback it serves, after a warning.
func TestNBDTCPNeedsClientCerts(t *testing.T) {
	t.Parallel()
	needTools(t, "qemu-io")
	repo := newRepo(t)
	ok(t, "--repo", repo, "disk", "create", "web", "--size", "1M")
	for _, tc := range []struct {
		args []string
		says []string
	}{
		{[]string{"--listen", "127.0.0.1:0"}, []string{"--tls-client-ca", "--insecure-local"}},
		{[]string{"--listen", "tcp:[::1]:0"}, []string{"--tls-client-ca", "--insecure-local"}},
		{[]string{"--listen", "0.0.0.0:0", "--insecure-local"}, []string{"--insecure-local", "loopback"}},
		{[]string{"--insecure-local"}, []string{"--insecure-local is for TCP"}},
	} {
		// start, not hs: a serve-nbd that wrongly serves is stopped at
		// cleanup instead of hanging the test.
		p := start(t, nil, append([]string{"--repo", repo, "serve-nbd", "web"}, tc.args...)...)
		select {
		case <-p.done:
		case <-time.After(20 * time.Second):
			t.Fatalf("serve-nbd %q is serving; want exit 2\n%s", tc.args, p.stderr.String())
		}
		code := p.cmd.ProcessState.ExitCode()
		for _, say := range tc.says {
			if code != 2 || !strings.Contains(p.stderr.String(), say) {
				t.Errorf("serve-nbd %q: exit %d, stderr %q; want exit 2 naming %s", tc.args, code, p.stderr.String(), say)
			}
		}
	}

	p := start(t, nil, "--repo", repo, "serve-nbd", "web", "--listen", "tcp:127.0.0.1:0", "--insecure-local", "--sync-interval", "100ms")
	re := regexp.MustCompile(`nbd://(127\.0\.0\.1:\d+)/web`)
	var addr string
	p.waitUntil(t, "serve-nbd on TCP", func() bool {
		if m := re.FindStringSubmatch(p.stderr.String()); m != nil {
			addr = m[1]
		}
		return addr != ""
	})
	if !strings.Contains(p.stderr.String(), "warning: --insecure-local") {
		t.Errorf("no warning for --insecure-local:\n%s", p.stderr.String())
	}
	run(t, "qemu-io", "-f", "raw", "nbd://"+addr+"/web", "-c", "write -P 0x5e 0 64k")
	model := make([]byte, 1<<20)
	copy(model, bytes.Repeat([]byte{0x5e}, 64<<10))
	newestEquals(t, repo, "web", model, "write over TCP")
}
