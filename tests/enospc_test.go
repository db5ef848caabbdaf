package tests

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestENOSPC: a repository on a small ext4 filesystem, filled through a
// tap until a write fails. The write fails with ENOSPC (not EIO, not a
// hang), every write before it is durable and reads back from the newest
// instant, `verify --full` is clean, `status`, /metrics and the service's
// log say the filesystem is full; once space is freed, writes go on.
func TestENOSPC(t *testing.T) {
	t.Parallel()
	needRoot(t)
	needTools(t, "losetup", "mkfs.ext4")
	fsDir := smallExt4(t, 160<<20)
	repo := filepath.Join(fsDir, "repo")
	ok(t, "--repo", repo, "init")
	// A small disk, written round and round: pruning leaves most of what
	// filled the filesystem unused, for gc to give back.
	const diskSize = 8 << 20
	ok(t, "--repo", repo, "disk", "create", "d", "--size", strconv.Itoa(diskSize))
	const minFree = 24 << 20
	s := startService(t, repo, "--min-free", "24M", "--metrics", "127.0.0.1:0")
	urlRE := regexp.MustCompile(`msg=metrics url=(http://127\.0\.0\.1:\d+/metrics)`)
	s.proc.waitUntil(t, "metrics", func() bool { return urlRE.MatchString(s.proc.stderr.String()) })
	metricsURL := urlRE.FindStringSubmatch(s.proc.stderr.String())[1]
	img := filepath.Join(s.protectTap(t, "d"), "d.img")

	// Ballast leaves 40 MiB above the reserve.
	var st unix.Statfs_t
	if err := unix.Statfs(fsDir, &st); err != nil {
		t.Fatal(err)
	}
	ballast := filepath.Join(fsDir, "ballast")
	bf, err := os.Create(ballast)
	if err != nil {
		t.Fatal(err)
	}
	err = unix.Fallocate(int(bf.Fd()), 0, 0, int64(st.Bavail)*st.Bsize-minFree-40<<20)
	if err := errors.Join(err, bf.Close()); err != nil {
		t.Fatal(err)
	}

	f, err := os.OpenFile(img, os.O_RDWR|unix.O_DIRECT, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	const wsize = 64 << 10 // one FUSE write: refused whole or taken whole
	buf, err := unix.Mmap(-1, 0, wsize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(buf)
	rng := rand.New(rand.NewPCG(18, 28))
	model := make([]byte, diskSize) // what the disk holds, as acknowledged
	// write writes fresh random data at the next offset; fsync every 8.
	n := 0
	write := func() error {
		off := int64(n*wsize) % diskSize
		for i := range buf {
			buf[i] = byte(rng.Uint32())
		}
		if _, err := f.WriteAt(buf, off); err != nil {
			return err
		}
		copy(model[off:], buf)
		n++
		if n%8 == 0 {
			return f.Sync()
		}
		return nil
	}

	// Fill: the first failure must be ENOSPC, and come soon.
	failed := make(chan error, 1)
	go func() {
		for {
			if err := write(); err != nil {
				failed <- err
				return
			}
			if n > (160<<20)/wsize {
				failed <- fmt.Errorf("%d writes of fresh data and none refused", n)
				return
			}
		}
	}()
	select {
	case err = <-failed:
	case <-time.After(2 * time.Minute):
		t.Fatalf("the writer hangs after %d writes", n)
	}
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("write %d onto the full filesystem: %v, want ENOSPC", n, err)
	}
	if n < 64 {
		t.Fatalf("refused after %d writes of 64 KiB, with 40 MiB above the reserve", n)
	}
	t.Logf("refused after %d writes of 64 KiB", n)
	// Everything written before the refusal is made durable; the refused
	// write changed nothing (the model does not have it).
	if err := f.Sync(); err != nil {
		t.Fatalf("fsync after the refusal: %v", err)
	}
	waitPublished(t, repo)
	ok(t, "--repo", repo, "verify", "--full")
	checkNewest(t, repo, model)

	out := ok(t, "--repo", repo, "status", "d")
	if !strings.Contains(out, "warning     the repository's filesystem is low on space") {
		t.Errorf("status on a full filesystem warns of nothing:\n%s", out)
	}
	m := scrape(t, metricsURL)
	if m["hindsight_repository_min_free_bytes"] != minFree || m["hindsight_repository_refused_writes_total"] < 1 ||
		m["hindsight_repository_free_bytes"] >= 2*minFree {
		t.Errorf("metrics on a full filesystem: %v", m)
	}
	const fullLog = "the repository's filesystem is full"
	s.proc.waitUntil(t, "the service says the filesystem is full", func() bool {
		return strings.Contains(s.proc.stderr.String(), fullLog)
	})

	// Space given back by prune and gc (a policy that keeps the last hour,
	// evaluated three hours ahead: all but the newest point goes): writes
	// go on.
	ok(t, "--repo", repo, "policy", "set", "d", "--keep-all", "1h")
	ok(t, "--repo", repo, "prune", "d", "--now", time.Now().Add(3*time.Hour).UTC().Format(time.RFC3339))
	var gc struct {
		Reclaimed int64 `json:"reclaimed_bytes"`
	}
	out = ok(t, "--repo", repo, "--json", "gc")
	if err := json.Unmarshal([]byte(out), &gc); err != nil || gc.Reclaimed < 16<<20 {
		t.Fatalf("gc on a full filesystem gave back too little: %v\n%s", err, out)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := write()
		if err == nil {
			break
		}
		if !errors.Is(err, syscall.ENOSPC) || time.Now().After(deadline) {
			t.Fatalf("write after prune and gc: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	for range 16 {
		if err := write(); err != nil {
			t.Fatalf("write %d after space came back: %v", n, err)
		}
	}
	if err := f.Sync(); err != nil {
		t.Fatalf("fsync after space came back: %v", err)
	}
	waitPublished(t, repo)
	checkNewest(t, repo, model)
	if out := ok(t, "--repo", repo, "status", "d"); strings.Contains(out, "warning") {
		t.Errorf("status warns with space back:\n%s", out)
	}
	s.proc.waitUntil(t, "the service says space is back", func() bool {
		return strings.Contains(s.proc.stderr.String(), "has space again")
	})
	if got := strings.Count(s.proc.stderr.String(), fullLog); got != 1 {
		t.Errorf("the service said the filesystem is full %d times, want once:\n%s", got, s.proc.stderr.String())
	}
}

// smallExt4 makes an ext4 filesystem of size bytes in a file, attached
// read-write to a loop device and mounted, all undone at cleanup.
func smallExt4(t *testing.T, size int64) string {
	t.Helper()
	file := filepath.Join(t.TempDir(), "fs.img")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(file, size); err != nil {
		t.Fatal(err)
	}
	dev := strings.TrimSpace(run(t, "losetup", "-f", "--show", file))
	t.Cleanup(func() { detachLoop(t, dev) })
	run(t, "mkfs.ext4", "-q", "-F", "-m", "0", dev) // no blocks reserved for root: df's Avail is all there is
	dir := t.TempDir()
	run(t, "mount", dev, dir)
	t.Cleanup(func() {
		for i := 0; i < 50; i++ {
			if exec.Command("umount", dir).Run() == nil {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
		exec.Command("umount", "-l", dir).Run()
		t.Errorf("could not unmount %s", dir)
	})
	return dir
}

// checkNewest exports the disk's newest instant and compares it with want.
func checkNewest(t *testing.T, repo string, want []byte) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "newest.img")
	ok(t, "--repo", repo, "export", "d", "--out", out)
	got, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("the newest instant differs from what was acknowledged, first at byte %d", i)
			}
		}
		t.Fatalf("the newest instant is %d bytes, want %d", len(got), len(want))
	}
}

// scrape reads the metrics without labels from a Prometheus text page.
func scrape(t *testing.T, url string) map[string]float64 {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]float64{}
	for _, line := range strings.Split(string(body), "\n") {
		name, val, ok := strings.Cut(line, " ")
		if !ok || strings.HasPrefix(line, "#") || strings.Contains(name, "{") {
			continue
		}
		if v, err := strconv.ParseFloat(val, 64); err == nil {
			m[name] = v
		}
	}
	return m
}
