package tests

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hindsight-cdp/hindsight/tests/cutfs"
)

// TestPowerCut puts a repository on cutfs, which keeps what was not made
// durable apart, under each front end while a client writes and logs
// (outside cutfs) every write whose fsync, FLUSH or import completed; it
// cuts the power at random moments and checks, on a fresh mount of what
// was durable, that every logged write is in the newest instant byte for
// byte. HINDSIGHT_POWERCUT_SEED repeats a run.
func TestPowerCut(t *testing.T) {
	needRoot(t)
	needTools(t, "qemu-io", "mkfs.ext4", "e2fsck", "losetup")
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("HINDSIGHT_POWERCUT_SEED"); s != "" {
		var err error
		if seed, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatalf("HINDSIGHT_POWERCUT_SEED=%q: %v", s, err)
		}
	}
	t.Logf("seed %d (HINDSIGHT_POWERCUT_SEED=%d repeats it)", seed, seed)
	const cuts = 10 // per front end: 30 in all
	// Disks are small so that thirty cuts, each followed by exports and a
	// check, fit in a few minutes; imports smallest, so that several
	// complete between two cuts.
	for i, fe := range []struct {
		name  string
		size  int
		round func(r *cutRig, t *testing.T, round int, rng *rand.Rand)
	}{
		{"ext4-on-tap", 32 << 20, (*cutRig).ext4Round},
		{"nbd", 32 << 20, (*cutRig).nbdRound},
		{"import", 8 << 20, (*cutRig).importRound},
	} {
		t.Run(fe.name, func(t *testing.T) {
			t.Parallel()
			rng := rand.New(rand.NewPCG(seed, uint64(i)))
			r := newCutRig(t, fe.size)
			for round := 0; round < cuts && !t.Failed(); round++ {
				fe.round(r, t, round, rng)
			}
			if r.acked == 0 && !t.Failed() {
				t.Fatalf("no write was acknowledged before any of the %d cuts: the test checked nothing", cuts)
			}
		})
	}
}

// cutRig is a repository on a cutfs mount and the model of what its disk
// must hold.
type cutRig struct {
	t            *testing.T
	backing, mnt string
	repo         string
	size         int // of the disk
	fs           *cutfs.FS
	ackLog       string // outside cutfs
	// Disk content after the last check (the base of the next round).
	image []byte
	// ext4: every file acknowledged so far, name → sha256.
	files map[string]string
	acked int // acknowledged writes, files or imports over all rounds
}

func newCutRig(t *testing.T, size int) *cutRig {
	t.Helper()
	dir := t.TempDir()
	r := &cutRig{t: t, backing: filepath.Join(dir, "backing"), mnt: filepath.Join(dir, "mnt"),
		ackLog: filepath.Join(dir, "acks.log"), size: size, image: make([]byte, size), files: map[string]string{}}
	for _, d := range []string{r.backing, r.mnt} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	r.mount()
	// Registered first, so run last: after the processes' cleanups.
	t.Cleanup(func() {
		if r.fs == nil {
			return
		}
		if err := r.fs.Unmount(); err != nil {
			t.Errorf("unmount cutfs: %v", err)
			r.fs.Cut()
		}
	})
	r.repo = filepath.Join(r.mnt, "repo")
	ok(t, "--repo", r.repo, "init")
	ok(t, "--repo", r.repo, "disk", "create", "disk", "--size", fmt.Sprint(size))
	return r
}

func (r *cutRig) mount() {
	r.t.Helper()
	fs, err := cutfs.Mount(r.mnt, r.backing, cutfs.Options{})
	if err != nil {
		r.t.Fatal(err)
	}
	r.fs = fs
}

// cut is the power cut; the caller then kills the processes and cleans up.
func (r *cutRig) cut() {
	r.t.Helper()
	if err := r.fs.Cut(); err != nil {
		r.t.Fatalf("cut: %v", err)
	}
	r.fs = nil
}

// waitRandom lets the writers run for a random while, from least to
// least+spread, before the cut.
func waitRandom(rng *rand.Rand, least, spread time.Duration) time.Duration {
	d := least + time.Duration(rng.Int64N(int64(spread)))
	time.Sleep(d)
	return d
}

// logAck appends one line to the acknowledgement log.
func (r *cutRig) logAck(format string, args ...any) {
	f, err := os.OpenFile(r.ackLog, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		r.t.Error(err)
		return
	}
	fmt.Fprintf(f, format+"\n", args...)
	f.Close()
}

// readAcks returns the log's lines for round, split into fields.
func (r *cutRig) readAcks(round int) [][]string {
	f, err := os.Open(r.ackLog)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out [][]string
	sc := bufio.NewScanner(f)
	prefix := fmt.Sprintf("r%d ", round)
	for sc.Scan() {
		if line, ok := strings.CutPrefix(sc.Text(), prefix); ok {
			out = append(out, strings.Fields(line))
		}
	}
	return out
}

// reopen mounts what was durable, opens the repository as its writer (as
// restarting the front end would) and returns the disk's newest instant
// (nil: no point yet).
func (r *cutRig) reopen() []byte {
	r.t.Helper()
	r.mount()
	// A reader first: it should recover what the dead writer made durable.
	before, bres := r.newest()
	if bres.code != 0 && !strings.Contains(bres.stderr, "has no point yet") {
		r.t.Errorf("export right after the cut (before a writer reopened): exit %d: %s", bres.code, firstLine(bres.stderr))
	}
	ok(r.t, "--repo", r.repo, "disk", "set", "disk", "--controller", "pvscsi")
	after, res := r.newest()
	if res.code != 0 && !strings.Contains(res.stderr, "has no point yet") {
		r.t.Fatalf("export after the cut: exit %d\n%s", res.code, res.stderr)
	}
	if bres.code == 0 && !bytes.Equal(before, after) {
		// A reader after a power cut must see that the writer died (its pid
		// in writer.lock is synced) and recover what it made durable.
		r.t.Errorf("after the cut, export before a writer reopened differs from after (%d blocks)", diffBlocks(before, after))
	}
	verifyFull(r.t, r.repo)
	return after
}

// newest exports the disk's newest instant.
func (r *cutRig) newest() ([]byte, result) {
	out := filepath.Join(r.t.TempDir(), "newest")
	res := hs(r.t, "--repo", r.repo, "export", "disk", "--out", out)
	if res.code != 0 {
		return nil, res
	}
	b, err := os.ReadFile(out)
	if err != nil {
		r.t.Fatal(err)
	}
	os.Remove(out)
	return b, res
}

// verifyFull runs `hindsight verify --full` on repo and fails the test
// unless it reports the repository sound.
func verifyFull(t *testing.T, repo string) {
	t.Helper()
	res := hs(t, "--repo", repo, "verify", "--full")
	if res.code == 0 {
		return
	}
	t.Errorf("hindsight verify --full after the cut: exit %d\n%s%s", res.code, res.stdout, res.stderr)
}

// killByArgs SIGKILLs the hindsight process this test started with args
// (serveNBD does not hand out its process) and waits until it is gone.
func killByArgs(t *testing.T, args ...string) {
	t.Helper()
	want := strings.Join(append([]string{hsBin}, args...), "\x00")
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || !strings.HasPrefix(string(cmdline), want+"\x00") {
			continue
		}
		syscall.Kill(pid, syscall.SIGKILL)
		for i := 0; i < 500; i++ {
			if b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat")); err != nil || strings.Contains(string(b), ") Z ") {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// ext4Round: ext4 on the tap through a loop device; a writer creates
// files and fsyncs each and the directory.
func (r *cutRig) ext4Round(t *testing.T, round int, rng *rand.Rand) {
	img, p := protect(t, r.repo, "disk")
	tapDir := filepath.Dir(img)
	dev := strings.TrimSpace(run(t, "losetup", "-f", "--show", img))
	mnt := t.TempDir()
	mounted, attached := false, true
	teardown := func() {
		if mounted {
			mounted = false
			if exec.Command("umount", mnt).Run() != nil {
				exec.Command("umount", "-l", mnt).Run()
			}
		}
		if attached {
			attached = false
			detachLoop(t, dev)
		}
		if isMounted(tapDir) {
			exec.Command("umount", "-l", tapDir).Run()
		}
	}
	t.Cleanup(teardown)
	if round == 0 {
		run(t, "mkfs.ext4", "-q", "-E", "lazy_itable_init=0,lazy_journal_init=0", dev)
	}
	run(t, "mount", dev, mnt) // after a cut this replays the journal, as a reboot would
	mounted = true

	wrng := rand.New(rand.NewPCG(rng.Uint64(), rng.Uint64())) // the writer's own
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		rng := wrng
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			name := fmt.Sprintf("r%02d-%05d", round, i)
			data := make([]byte, 1+rng.IntN(48<<10))
			for j := range data {
				data[j] = byte(rng.Uint32())
			}
			if writeSynced(filepath.Join(mnt, name), data) != nil {
				return
			}
			sum := sha256.Sum256(data)
			r.logAck("r%d %s %s", round, name, hex.EncodeToString(sum[:]))
		}
	}()
	d := waitRandom(rng, 300*time.Millisecond, 1500*time.Millisecond)
	r.cut()
	p.kill()
	close(stop)
	t0 := time.Now()
	teardown()
	wg.Wait()
	t1 := time.Now()
	newest := r.reopen()
	t2 := time.Now()
	acks := r.readAcks(round)
	for _, a := range acks {
		r.files[a[0]] = a[1]
	}
	r.checkExt4(t, newest)
	r.acked += len(acks)
	t.Logf("round %d: cut after %v, %d files acknowledged (teardown %v, reopen %v, check %v)", round, d, len(acks),
		t1.Sub(t0).Round(time.Millisecond), t2.Sub(t1).Round(time.Millisecond), time.Since(t2).Round(time.Millisecond))
}

// writeSynced creates name with data and fsyncs it and its directory.
func writeSynced(name string, data []byte) error {
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	d, err := os.Open(filepath.Dir(name))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// checkExt4 replays the journal of a copy of the disk (e2fsck) and checks
// every acknowledged file in it.
func (r *cutRig) checkExt4(t *testing.T, newest []byte) {
	t.Helper()
	cp := filepath.Join(t.TempDir(), "copy.img")
	if err := os.WriteFile(cp, newest, 0o600); err != nil {
		t.Fatal(err)
	}
	defer os.Remove(cp)
	out, err := exec.Command("e2fsck", "-fy", cp).CombinedOutput()
	if code := exitCode(err); code >= 4 {
		t.Fatalf("e2fsck -fy of the newest instant after the cut: exit %d\n%s", code, out)
	}
	dev, detach := attachLoopNow(t, cp, 0, 0)
	defer detach()
	dir, unmount := mountRONow(t, dev)
	defer unmount()
	var lost []string
	for name, want := range r.files {
		b, err := os.ReadFile(filepath.Join(dir, name))
		sum := sha256.Sum256(b)
		if err != nil || hex.EncodeToString(sum[:]) != want {
			lost = append(lost, fmt.Sprintf("%s (%v)", name, err))
		}
	}
	if len(lost) > 0 {
		t.Fatalf("%d of %d files whose fsync returned before the cut are missing or differ: %s", len(lost), len(r.files), strings.Join(first(lost, 10), ", "))
	}
}

func firstLine(s string) string { l, _, _ := strings.Cut(strings.TrimSpace(s), "\n"); return l }

func first(s []string, n int) []string { return s[:min(n, len(s))] }

func exitCode(err error) int {
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	if err != nil {
		return -1
	}
	return 0
}

// nbdWrite is one write qemu-io sends: a pattern byte over whole blocks.
type nbdWrite struct {
	off, n int
	pat    byte
}

// nbdRound: serve-nbd written by qemu-io, each batch of writes ended by a
// flush; a batch is acknowledged when qemu-io reports no error.
func (r *cutRig) nbdRound(t *testing.T, round int, rng *rand.Rand) {
	uri := nbdURL(serveNBD(t, r.repo, "disk"), "disk")
	wrng := rand.New(rand.NewPCG(rng.Uint64(), rng.Uint64()))
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		rng := wrng
		idx := 0
		for {
			select {
			case <-stop:
				return
			default:
			}
			args := []string{"-f", "raw", uri}
			for k := 1 + rng.IntN(4); k > 0; k-- {
				w := nbdWrite{off: rng.IntN(r.size/4096) * 4096, pat: byte(1 + idx%255)}
				w.n = min(r.size-w.off, (1+rng.IntN(16))*4096)
				r.logAck("r%d w %d %d %d %d", round, idx, w.off, w.n, w.pat)
				args = append(args, "-c", fmt.Sprintf("write -P %d %d %d", w.pat, w.off, w.n))
				idx++
			}
			args = append(args, "-c", "flush")
			out, err := exec.Command("qemu-io", args...).CombinedOutput()
			if err != nil || bytes.Contains(bytes.ToLower(out), []byte("error")) || bytes.Contains(out, []byte("failed")) {
				return
			}
			r.logAck("r%d ack %d", round, idx-1)
		}
	}()
	d := waitRandom(rng, 300*time.Millisecond, 1500*time.Millisecond)
	r.cut()
	killByArgs(t, "--repo", r.repo, "serve-nbd")
	close(stop)
	wg.Wait()

	newest := r.reopen()
	if newest == nil {
		newest = make([]byte, r.size)
	}
	var writes []nbdWrite
	acked := -1
	for _, a := range r.readAcks(round) {
		switch a[0] {
		case "w":
			var w nbdWrite
			var idx, pat int
			fmt.Sscan(strings.Join(a[1:], " "), &idx, &w.off, &w.n, &pat)
			w.pat = byte(pat)
			writes = append(writes, w)
		case "ack":
			acked, _ = strconv.Atoi(a[1])
		}
	}
	t.Logf("round %d: cut after %v, %d of %d writes acknowledged by a flush", round, d, acked+1, len(writes))
	r.acked += acked + 1
	if bad := checkBlocks(r.image, newest, writes, acked); bad != "" {
		t.Fatalf("round %d: %s", round, bad)
	}
	r.image = newest
}

// checkBlocks checks each block of got against the model: the value of
// the newest acknowledged write to it (else base), or of any later write.
func checkBlocks(base, got []byte, writes []nbdWrite, acked int) string {
	const bs = 4096
	for b := 0; b < len(base)/bs; b++ {
		off := b * bs
		blk := got[off : off+bs]
		last := -1
		var later []byte
		for i, w := range writes {
			if off < w.off || off >= w.off+w.n {
				continue
			}
			if i <= acked {
				last = i
			} else {
				later = append(later, w.pat)
			}
		}
		if last < 0 && bytes.Equal(blk, base[off:off+bs]) {
			continue
		}
		if last >= 0 && uniform(blk, writes[last].pat) {
			continue
		}
		if slicesContainsUniform(blk, later) {
			continue
		}
		if last >= 0 {
			return fmt.Sprintf("block %d (offset %d): write %d (pattern %#x) was acknowledged by a flush before the cut, but the block holds %#x…", b, off, last, writes[last].pat, blk[:8])
		}
		return fmt.Sprintf("block %d (offset %d) changed though no write to it was acknowledged: holds %#x…", b, off, blk[:8])
	}
	return ""
}

func uniform(b []byte, v byte) bool {
	for _, c := range b {
		if c != v {
			return false
		}
	}
	return true
}

func slicesContainsUniform(b []byte, pats []byte) bool {
	for _, p := range pats {
		if uniform(b, p) {
			return true
		}
	}
	return false
}

// importRound: `hindsight import` of images that differ in a few blocks
// each, one after another; an import is acknowledged when it exits 0.
func (r *cutRig) importRound(t *testing.T, round int, rng *rand.Rand) {
	dir := t.TempDir()
	var mu sync.Mutex
	images := map[int][]byte{} // this round's images by number
	var cur *exec.Cmd
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	wrng := rand.New(rand.NewPCG(rng.Uint64(), rng.Uint64()))
	go func() {
		defer wg.Done()
		rng := wrng
		prev := r.image
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			img := bytes.Clone(prev)
			for k := 0; k < 64; k++ {
				off := rng.IntN(r.size/4096) * 4096
				for j := off; j < off+4096; j++ {
					img[j] = byte(rng.Uint32())
				}
			}
			name := filepath.Join(dir, fmt.Sprint(i))
			if err := os.WriteFile(name, img, 0o600); err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			images[i] = img
			cmd := exec.Command(hsBin, "--repo", r.repo, "import", "disk", name)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			cur = cmd
			r.logAck("r%d start %d", round, i)
			err := cmd.Start()
			mu.Unlock()
			if err != nil {
				t.Error(err)
				return
			}
			if err := cmd.Wait(); err != nil {
				t.Logf("import %d: %v: %s", i, err, bytes.TrimSpace(stderr.Bytes()))
				return
			}
			r.logAck("r%d ack %d", round, i)
			os.Remove(name)
			prev = img
		}
	}()
	// An import of the race-built binary takes about a second.
	d := waitRandom(rng, 1500*time.Millisecond, 3*time.Second)
	r.cut()
	mu.Lock()
	if cur != nil && cur.Process != nil {
		cur.Process.Kill()
	}
	close(stop)
	mu.Unlock()
	wg.Wait()

	newest := r.reopen()
	if newest == nil {
		newest = make([]byte, r.size)
	}
	acked, started := -1, -1
	for _, a := range r.readAcks(round) {
		n, _ := strconv.Atoi(a[1])
		switch a[0] {
		case "ack":
			acked = n
		case "start":
			started = n
		}
	}
	t.Logf("round %d: cut after %v, %d imports acknowledged, %d started", round, d, acked+1, started+1)
	r.acked += acked + 1
	want := r.image
	if acked >= 0 {
		want = images[acked]
	}
	switch {
	case bytes.Equal(newest, want):
	case started > acked && bytes.Equal(newest, images[started]):
		// the import the cut interrupted had committed
	case acked >= 0:
		t.Fatalf("round %d: import %d exited 0 before the cut, but the newest instant is not its image (%d blocks differ)", round, acked, diffBlocks(newest, want))
	default:
		t.Fatalf("round %d: no import was acknowledged, but the newest instant differs from the one before (%d blocks)", round, diffBlocks(newest, want))
	}
	r.image = newest
}

func diffBlocks(a, b []byte) int {
	n := 0
	for off := 0; off+4096 <= min(len(a), len(b)); off += 4096 {
		if !bytes.Equal(a[off:off+4096], b[off:off+4096]) {
			n++
		}
	}
	return n
}
