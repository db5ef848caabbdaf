package tests

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hindsight-cdp/hindsight/cdp/timespec"
)

// TestService: one `hindsight serve` protects four disks and a group of two
// at once, each under its own workload: ext4 on loop devices over two taps,
// qemu-img and qemu-io over two NBD exports, and a group of two ext4 disks
// over one tap. While they write, a clone of one disk at a past instant is
// mounted, checked, written and ended; the group gets an application
// bookmark; `mount` and `restore` read instants; a disk is protected and
// unprotected. Afterwards, 20 instants per disk are checked against the
// workloads' own models: e2fsck -fn passes and the files are exactly those
// synced before the instant; NBD images are exactly the flushed writes;
// group instants never break the order in which the disks were written.
func TestService(t *testing.T) {
	t.Parallel()
	needRoot(t)
	needTools(t, "mkfs.ext4", "e2fsck", "losetup", "fsfreeze", "findmnt", "qemu-io", "qemu-img")
	repo := newRepo(t)
	for _, d := range []string{"e1", "e2", "n1", "n2", "ga", "gb"} {
		ok(t, "--repo", repo, "disk", "create", d, "--size", "32M")
	}
	ok(t, "--repo", repo, "disk", "create", "x", "--size", "1M")
	ok(t, "--repo", repo, "group", "create", "vm", "ga", "gb")
	s := startService(t, repo)

	tapE1, tapE2, tapVM := s.protectTap(t, "e1"), s.protectTap(t, "e2"), s.protectTap(t, "vm")
	sockN1, sockN2 := s.protectNBD(t, "n1"), s.protectNBD(t, "n2")
	want := map[string]string{"e1": "tap e1", "e2": "tap e2", "vm": "tap ga gb", "n1": "nbd n1", "n2": "nbd n2"}
	if got := protectionsSummary(t, repo); !maps.Equal(got, want) {
		t.Fatalf("protections --json: %v, want %v", got, want)
	}

	mntE1, _, _ := ext4OnFile(t, filepath.Join(tapE1, "e1.img"), "-o", "noatime")
	mntE2, _, _ := ext4OnFile(t, filepath.Join(tapE2, "e2.img"), "-o", "noatime")
	mntGA, _, _ := ext4OnFile(t, filepath.Join(tapVM, "ga.img"), "-o", "noatime")
	mntGB, _, _ := ext4OnFile(t, filepath.Join(tapVM, "gb.img"), "-o", "noatime")

	e1, e2, group := &fsModel{}, &fsModel{}, &seqModel{}
	n1, n2 := &nbdModel{}, &nbdModel{}
	// The writers run in goroutines (more than -parallel subtests would
	// run at once); the checks beside them run here, one after the other.
	w := &workloads{stop: make(chan struct{})}
	t.Cleanup(func() { w.end() }) // before the filesystems are unmounted
	w.run("ext4 e1", func(stop <-chan struct{}) error { return ext4Workload(mntE1, e1, 1, stop) })
	w.run("ext4 e2", func(stop <-chan struct{}) error { return ext4Workload(mntE2, e2, 2, stop) })
	w.run("group vm", func(stop <-chan struct{}) error { return groupWorkload([2]string{mntGA, mntGB}, group, stop) })
	w.run("nbd n1", func(stop <-chan struct{}) error { return nbdWorkload(nbdURL(sockN1, "n1"), n1, 3, stop) })
	w.run("nbd n2", func(stop <-chan struct{}) error { return nbdWorkload(nbdURL(sockN2, "n2"), n2, 4, stop) })

	t.Run("clone", func(t *testing.T) { checkCloneBeside(t, s, w, "e1", e1) })
	t.Run("bookmark", func(t *testing.T) { checkAppBookmark(t, repo, w, group, mntGA, mntGB) })
	t.Run("mount", func(t *testing.T) {
		_, at := e2.waitQuiet(t, w, 4, time.Second, false)
		flat := filepath.Join(mountRepo(t, repo), "e2", timespec.Format(at), "e2-flat.vmdk")
		checkExt4At(t, copyFile(t, flat), e2.snapshot(), at)
	})
	t.Run("restore", func(t *testing.T) {
		r, at := e2.waitQuiet(t, w, 6, time.Second, true)
		rounds := e2.snapshot()
		name := slices.Sorted(maps.Keys(rounds[r].files))[0]
		out := filepath.Join(t.TempDir(), "out")
		ok(t, "--repo", repo, "restore", "e2", "--at", at.Format(time.RFC3339Nano), "/"+name, "--to", out)
		if got, err := os.ReadFile(filepath.Join(out, name)); err != nil || string(got) != rounds[r].files[name] {
			t.Errorf("restore e2 --at %s /%s: %d bytes, %v; want the %d bytes synced in round %d",
				at.Format(time.RFC3339Nano), name, len(got), err, len(rounds[r].files[name]), r)
		}
		noRecoverLeftovers(t)
	})
	t.Run("unprotect", func(t *testing.T) { checkUnprotect(t, s) })
	if err := w.end(); err != nil {
		t.Fatal(err)
	}
	waitPublished(t, repo)
	end := wall()

	t.Run("instants", func(t *testing.T) {
		mnt := mountRepo(t, repo)
		for _, tc := range []struct {
			disk   string
			m      *fsModel
			export bool
			seed   uint64
		}{{"e1", e1, true, 51}, {"e2", e2, false, 52}} { // read by export, and from the mount
			t.Run(tc.disk, func(t *testing.T) {
				t.Parallel()
				rounds := tc.m.snapshot()
				for _, at := range pickInstants(rand.New(rand.NewPCG(tc.seed, 5)), rounds[0].synced, end, fsQuiet(rounds, end)) {
					img := filepath.Join(t.TempDir(), "img")
					if tc.export {
						ok(t, "--repo", repo, "export", tc.disk, "--at", at.Format(time.RFC3339Nano), "--out", img)
					} else {
						img = copyFile(t, filepath.Join(mnt, tc.disk, timespec.Format(at), tc.disk+"-flat.vmdk"))
					}
					checkExt4At(t, img, rounds, at)
					os.Remove(img)
				}
			})
		}
		t.Run("group", func(t *testing.T) {
			t.Parallel()
			start, synced := group.snapshot()
			for _, at := range pickInstants(rand.New(rand.NewPCG(6, 6)), synced[1][0], end, group.quiet(end)) {
				var files [2]map[string]string
				for d, disk := range []string{"ga", "gb"} { // both from one group instant
					img := copyFile(t, filepath.Join(mnt, "vm", timespec.Format(at), disk+"-flat.vmdk"))
					files[d] = ext4Files(t, img, true)
					os.Remove(img)
				}
				checkSeqs(t, "group instant "+at.Format(time.RFC3339Nano), files[0], files[1], start, synced, at)
			}
		})
		for _, tc := range []struct {
			disk string
			m    *nbdModel
			seed uint64
		}{{"n1", n1, 71}, {"n2", n2, 72}} {
			t.Run(tc.disk, func(t *testing.T) {
				t.Parallel()
				base, rounds := tc.m.snapshot()
				for _, at := range pickInstants(rand.New(rand.NewPCG(tc.seed, 7)), rounds[0].flushed, end, nbdQuiet(rounds, end)) {
					got, err := os.ReadFile(filepath.Join(mnt, tc.disk, timespec.Format(at), tc.disk+"-flat.vmdk"))
					if err != nil {
						t.Fatal(err)
					}
					if msg := nbdCheck(got, base, rounds, at); msg != "" {
						t.Errorf("%s at %s: %s", tc.disk, at.Format(time.RFC3339Nano), msg)
					}
				}
			})
		}
	})
}

// workloads runs the disks' writers, each in a goroutine, until end.
type workloads struct {
	stop chan struct{}
	wg   sync.WaitGroup
	once sync.Once
	mu   sync.Mutex
	errs []error
}

func (w *workloads) run(name string, f func(stop <-chan struct{}) error) {
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		if err := f(w.stop); err != nil {
			w.mu.Lock()
			w.errs = append(w.errs, fmt.Errorf("%s: %w", name, err))
			w.mu.Unlock()
		}
	}()
}

// failed is the writers' errors so far.
func (w *workloads) failed() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return errors.Join(w.errs...)
}

// end stops the writers and returns their errors.
func (w *workloads) end() error {
	w.once.Do(func() { close(w.stop) })
	w.wg.Wait()
	return w.failed()
}

// svc is a running `hindsight serve` and the taps it was asked for.
type svc struct {
	repo string
	proc *proc // the serve process: its log is proc.stderr
	mu   sync.Mutex
	taps []string
}

// startService runs `hindsight serve` (with extra flags) until the test
// ends and returns once it answers on its control socket; at cleanup, once
// it stopped, none of its taps may still be mounted.
func startService(t *testing.T, repo string, extra ...string) *svc {
	t.Helper()
	s := &svc{repo: repo}
	s.proc = start(t, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		for _, dir := range s.taps {
			if isMounted(dir) {
				exec.Command("umount", "-l", dir).Run()
				t.Errorf("%s was still mounted after the service stopped", dir)
			}
		}
	}, append([]string{"--repo", repo, "serve", "--sync-interval", "200ms"}, extra...)...)
	s.proc.waitUntil(t, "serve", func() bool {
		return exec.Command(hsBin, "--repo", repo, "protections").Run() == nil
	})
	return s
}

// tapDir is a new directory for a tap of the service, checked at its stop.
func (s *svc) tapDir(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "tap")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	s.taps = append(s.taps, dir)
	s.mu.Unlock()
	return dir
}

// protectTap asks the service to protect target through a tap and returns
// the tap's directory, which holds DISK.img per disk.
func (s *svc) protectTap(t *testing.T, target string) string {
	t.Helper()
	dir := s.tapDir(t)
	ok(t, "--repo", s.repo, "protect", target, "--mount", dir)
	if !isMounted(dir) {
		t.Fatalf("protect %s returned before %s was mounted", target, dir)
	}
	return dir
}

// protectNBD asks the service to export disk over NBD on a new Unix socket
// and returns the socket's path.
func (s *svc) protectNBD(t *testing.T, disk string) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), disk+".sock")
	ok(t, "--repo", s.repo, "protect", disk, "--nbd", "unix:"+sock)
	return sock
}

// protStatus is what `protections --json` says of a protection, as a
// script reads it: the documented field names, not the service package's
// types.
type protStatus struct {
	Name     string `json:"name"`
	FrontEnd string `json:"front_end"`
	State    string `json:"state"`
	Error    string `json:"error"`
	Where    string `json:"where"`
	Disks    []struct {
		Disk         string    `json:"disk"`
		Path         string    `json:"path"`
		Head         uint64    `json:"head"`
		Published    uint64    `json:"published"`
		Writes       uint64    `json:"writes"`
		BytesWritten uint64    `json:"bytes_written"`
		Flushes      uint64    `json:"flushes"`
		LastWrite    time.Time `json:"last_write"`
		LastDurable  time.Time `json:"last_durable_write"`
		LagNS        int64     `json:"lag_ns"`
		WritesPerSec float64   `json:"writes_per_sec"`
		BytesPerSec  float64   `json:"bytes_per_sec"`
	} `json:"disks"`
}

func protections(t *testing.T, repo string) []protStatus {
	t.Helper()
	var ps []protStatus
	out := ok(t, "--repo", repo, "--json", "protections")
	if err := json.Unmarshal([]byte(out), &ps); err != nil {
		t.Fatalf("protections --json: %v\n%s", err, out)
	}
	return ps
}

// protectionsSummary maps each running protection to its front end and
// disks, e.g. "tap ga gb"; a protection not running maps to its state.
func protectionsSummary(t *testing.T, repo string) map[string]string {
	t.Helper()
	m := map[string]string{}
	for _, p := range protections(t, repo) {
		if p.State != "running" {
			m[p.Name] = p.State + ": " + p.Error
			continue
		}
		s := p.FrontEnd
		for _, d := range p.Disks {
			s += " " + d.Disk
		}
		m[p.Name] = s
	}
	return m
}

// waitPublished waits until every protected disk's writes are published
// to readers (export, mount).
func waitPublished(t *testing.T, repo string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		behind := ""
		for _, p := range protections(t, repo) {
			for _, d := range p.Disks {
				if d.Published < d.Head {
					behind = fmt.Sprintf("%s published %d of %d", d.Disk, d.Published, d.Head)
				}
			}
		}
		if behind == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not published after 10s: %s", behind)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// wall is the wall-clock time, which the service stamps points with (no
// monotonic reading, so that comparisons are the service's).
func wall() time.Time { return time.Now().UTC().Round(0) }

// fsRound is one round of an ext4 workload: its first write began at start
// and syncfs returned at synced; files is the whole tree after it, and
// touched the names the round wrote, removed or renamed.
type fsRound struct {
	start, synced time.Time
	files         map[string]string // path -> content
	touched       map[string]bool
}

// fsModel is an ext4 disk's history as its workload saw it.
type fsModel struct {
	mu     sync.Mutex
	rounds []fsRound
}

func (m *fsModel) add(r fsRound) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.rounds = append(m.rounds, r)
}

func (m *fsModel) snapshot() []fsRound {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.rounds)
}

// waitQuiet waits until the workload synced more than n rounds and returns
// one, r, and an instant between its sync and the next round's start at
// least age old (r with files, if withFiles).
func (m *fsModel) waitQuiet(t *testing.T, w *workloads, n int, age time.Duration, withFiles bool) (int, time.Time) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		rounds := m.snapshot()
		for r := len(rounds) - 2; r >= n; r-- {
			if rounds[r+1].start.Before(wall().Add(-age)) && (!withFiles || len(rounds[r].files) > 0) {
				return r, rounds[r].synced.Add(rounds[r+1].start.Sub(rounds[r].synced) / 2)
			}
		}
		if err := w.failed(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("the workload did not get past round %d in 30s", n)
	return 0, time.Time{}
}

// expect is what an ext4 disk holds at instant at: files, exactly, but for
// the names in unsure, which a round running at that instant was changing.
func expect(rounds []fsRound, at time.Time) (files map[string]string, unsure map[string]bool, round int) {
	round = -1
	for i, r := range rounds {
		if !r.synced.After(at) {
			round = i
		}
	}
	if round < 0 {
		return nil, nil, round
	}
	if round+1 < len(rounds) && !rounds[round+1].start.After(at) {
		unsure = rounds[round+1].touched
	}
	return rounds[round].files, unsure, round
}

// fsQuiet lists the spans in which no round ran.
func fsQuiet(rounds []fsRound, end time.Time) [][2]time.Time {
	var q [][2]time.Time
	for i, r := range rounds {
		next := end
		if i+1 < len(rounds) {
			next = rounds[i+1].start
		}
		q = append(q, [2]time.Time{r.synced, next})
	}
	return q
}

// fsName is one of 16 file names, at the top or in d/.
func fsName(rng *rand.Rand) string {
	i := rng.IntN(16)
	if i >= 8 {
		return fmt.Sprintf("d/f%02d", i)
	}
	return fmt.Sprintf("f%02d", i)
}

// ext4Workload creates, overwrites, removes and renames files in mnt in
// rounds, each ended by syncfs and followed by a quiet pause, until stop
// is closed, recording every round in m.
func ext4Workload(mnt string, m *fsModel, seed uint64, stop <-chan struct{}) error {
	rng := rand.New(rand.NewPCG(seed, 17))
	if err := os.Mkdir(filepath.Join(mnt, "d"), 0o755); err != nil {
		return err
	}
	if err := syncfs(mnt); err != nil {
		return err
	}
	files := map[string]string{}
	m.add(fsRound{synced: wall(), files: files})
	for {
		select {
		case <-stop:
			return nil
		default:
		}
		files = maps.Clone(files)
		touched := map[string]bool{}
		start := wall()
		for n := 1 + rng.IntN(4); n > 0; n-- {
			name := fsName(rng)
			touched[name] = true
			switch op := rng.IntN(8); {
			case op < 6:
				data := make([]byte, 1+rng.IntN(48<<10))
				for i := range data {
					data[i] = byte(rng.Uint32())
				}
				if err := writeFileSync(filepath.Join(mnt, name), data, op%2 == 0); err != nil {
					return err
				}
				files[name] = string(data)
			case op == 6:
				if _, ok := files[name]; ok {
					if err := os.Remove(filepath.Join(mnt, name)); err != nil {
						return err
					}
					delete(files, name)
				}
			default:
				to := fsName(rng)
				if _, ok := files[name]; ok && to != name {
					if err := os.Rename(filepath.Join(mnt, name), filepath.Join(mnt, to)); err != nil {
						return err
					}
					files[to] = files[name]
					delete(files, name)
					touched[to] = true
				}
			}
		}
		if err := syncfs(mnt); err != nil {
			return err
		}
		m.add(fsRound{start: start, synced: wall(), files: files, touched: touched})
		time.Sleep(time.Duration(30+rng.IntN(120)) * time.Millisecond)
	}
}

// writeFileSync writes a whole file, fsyncing it if fsync.
func writeFileSync(name string, data []byte, fsync bool) error {
	f, err := os.OpenFile(name, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := f.Write(data); err != nil {
		return err
	}
	if fsync {
		if err := f.Sync(); err != nil {
			return err
		}
	}
	return f.Close()
}

// syncfs commits the filesystem holding dir, down to its disk.
func syncfs(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := unix.Syncfs(int(f.Fd())); err != nil {
		return fmt.Errorf("syncfs %s: %w", dir, err)
	}
	return nil
}

// pickInstants returns 20 instants in [from, end]: end itself, nine in the
// middle of spans from quiet, the rest at random.
func pickInstants(rng *rand.Rand, from, end time.Time, quiet [][2]time.Time) []time.Time {
	at := []time.Time{end}
	for i := 0; i < 9 && len(quiet) > 0; i++ {
		q := quiet[rng.IntN(len(quiet))]
		at = append(at, q[0].Add(q[1].Sub(q[0])/2))
	}
	for len(at) < 20 {
		at = append(at, from.Add(time.Duration(rng.Int64N(int64(end.Sub(from))+1))))
	}
	return at
}

// copyFile copies src (an image in the mount tree) to a new file.
func copyFile(t *testing.T, src string) string {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(t.TempDir(), filepath.Base(src))
	if err := os.WriteFile(dst, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return dst
}

// ext4Files checks the ext4 in img, first replaying its journal as a mount
// after a crash would if replay, with e2fsck -fn, and returns its files.
func ext4Files(t *testing.T, img string, replay bool) map[string]string {
	t.Helper()
	if replay {
		if out, err := exec.Command("e2fsck", "-E", "journal_only", "-p", img).CombinedOutput(); exitCode(err) > 1 {
			t.Fatalf("replay the journal of %s: %v\n%s", img, err, out)
		}
	}
	if out, err := exec.Command("e2fsck", "-fn", img).CombinedOutput(); err != nil {
		t.Fatalf("e2fsck -fn %s: %v\n%s", img, err, out)
	}
	dev, detach := attachLoopNow(t, img, 0, 0)
	defer detach()
	dir, unmount := mountRONow(t, dev)
	defer unmount()
	return readTree(t, dir)
}

// readTree returns the regular files below dir (but lost+found) by path.
func readTree(t *testing.T, dir string) map[string]string {
	t.Helper()
	files := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, e os.DirEntry, err error) error {
		switch {
		case err != nil:
			return err
		case e.IsDir() && e.Name() == "lost+found":
			return filepath.SkipDir
		case e.Type().IsRegular():
			b, err := os.ReadFile(p)
			rel, _ := filepath.Rel(dir, p)
			files[rel] = string(b)
			return err
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// checkExt4At checks the image of an ext4 disk at instant at against its
// workload's rounds.
func checkExt4At(t *testing.T, img string, rounds []fsRound, at time.Time) {
	t.Helper()
	want, unsure, r := expect(rounds, at)
	if r < 0 {
		t.Fatalf("instant %s is before the workload's first round", at.Format(time.RFC3339Nano))
	}
	got := ext4Files(t, img, true)
	var bad []string
	names := maps.Clone(got)
	maps.Copy(names, want)
	for _, name := range slices.Sorted(maps.Keys(names)) {
		w, inWant := want[name]
		g, inGot := got[name]
		switch {
		case unsure[name]:
		case inWant && !inGot:
			bad = append(bad, name+" missing")
		case !inWant && inGot:
			bad = append(bad, fmt.Sprintf("%s (%d bytes) there, not synced", name, len(g)))
		case w != g:
			bad = append(bad, fmt.Sprintf("%s holds other bytes (%d) than the %d synced", name, len(g), len(w)))
		}
	}
	if len(bad) > 0 {
		t.Errorf("instant %s (after round %d synced at %s; %d unsure): %s", at.Format(time.RFC3339Nano), r,
			rounds[r].synced.Format(time.RFC3339Nano), len(unsure), strings.Join(bad, "; "))
	}
}

// seqModel is the group's workload: write i (i from 1) to disk d began at
// start[d][i-1] and was durable at synced[d][i-1]; each write to A came
// after the write to B before it was durable, and each to B after A's.
type seqModel struct {
	mu            sync.Mutex
	start, synced [2][]time.Time
}

func (m *seqModel) snapshot() (start, synced [2][]time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for d := range 2 {
		start[d], synced[d] = slices.Clone(m.start[d]), slices.Clone(m.synced[d])
	}
	return start, synced
}

// quiet lists the spans between a write to B and the next to A.
func (m *seqModel) quiet(end time.Time) [][2]time.Time {
	start, synced := m.snapshot()
	var q [][2]time.Time
	for i, s := range synced[1] {
		next := end
		if i+1 < len(start[0]) {
			next = start[0][i+1]
		}
		q = append(q, [2]time.Time{s, next})
	}
	return q
}

// groupWorkload writes ever higher numbers to the file seq on disk A, then
// on disk B (a new file renamed over the old, then syncfs), each after the
// one before was durable, until stop is closed.
func groupWorkload(mnts [2]string, m *seqModel, stop <-chan struct{}) error {
	rng := rand.New(rand.NewPCG(8, 8))
	for i := 1; ; i++ {
		select {
		case <-stop:
			return nil
		default:
		}
		for d, mnt := range mnts {
			start := wall()
			tmp := filepath.Join(mnt, "seq.tmp")
			if err := writeFileSync(tmp, []byte(fmt.Sprintf("%d\n", i)), true); err != nil {
				return err
			}
			if err := os.Rename(tmp, filepath.Join(mnt, "seq")); err != nil {
				return err
			}
			if err := syncfs(mnt); err != nil {
				return err
			}
			m.mu.Lock()
			m.start[d], m.synced[d] = append(m.start[d], start), append(m.synced[d], wall())
			m.mu.Unlock()
		}
		time.Sleep(time.Duration(20+rng.IntN(60)) * time.Millisecond)
	}
}

// checkSeqs checks the numbers in the group's disks a and b at instant at:
// each between what was durable and what had begun by then, and B's never
// ahead of A's nor more than one behind.
func checkSeqs(t *testing.T, what string, a, b map[string]string, start, synced [2][]time.Time, at time.Time) {
	t.Helper()
	var seq [2]int
	for d, files := range []map[string]string{a, b} {
		if s, ok := files["seq"]; ok {
			n, err := strconv.Atoi(strings.TrimSpace(s))
			if err != nil {
				t.Fatalf("%s: disk %d's seq holds %q", what, d, s)
			}
			seq[d] = n
		}
		lo := sort.Search(len(synced[d]), func(i int) bool { return synced[d][i].After(at) })
		hi := sort.Search(len(start[d]), func(i int) bool { return start[d][i].After(at) })
		if seq[d] < lo || seq[d] > hi {
			t.Errorf("%s: disk %d holds %d; %d were durable and %d begun by then", what, d, seq[d], lo, hi)
		}
	}
	if seq[1] > seq[0] || seq[0] > seq[1]+1 {
		t.Errorf("%s: A holds %d and B %d: the group's instant breaks the order they were written in", what, seq[0], seq[1])
	}
}

// nbdRound is one round of an NBD workload: qemu-img convert of the base
// image (round 0), or qemu-io writes and a flush, from start to flushed.
type nbdRound struct {
	start, flushed time.Time
	writes         []nbdWrite // pat 0: write -z
}

type nbdModel struct {
	mu     sync.Mutex
	base   []byte
	rounds []nbdRound
}

func (m *nbdModel) snapshot() ([]byte, []nbdRound) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.base, slices.Clone(m.rounds)
}

// nbdWorkload converts a prepared image into the export with qemu-img,
// then writes non-overlapping ranges with qemu-io, each batch flushed,
// until stop is closed.
func nbdWorkload(url string, m *nbdModel, seed uint64, stop <-chan struct{}) error {
	const size, slot = 32 << 20, 64 << 10
	rng := rand.New(rand.NewPCG(seed, 23))
	base := make([]byte, size) // 4 MiB of data in 64 KiB pieces, zeros between
	for i := 0; i < 64; i++ {
		off := rng.IntN(size/slot) * slot
		for j := off; j < off+slot; j++ {
			base[j] = byte(rng.Uint32())
		}
	}
	dir, err := os.MkdirTemp("", "hindsight-nbd-base")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	src := filepath.Join(dir, "base.raw")
	if err := os.WriteFile(src, base, 0o600); err != nil {
		return err
	}
	start := wall()
	if err := qemu("qemu-img", "convert", "-n", "-f", "raw", "-O", "raw", src, url); err != nil {
		return err
	}
	if err := qemu("qemu-io", "-f", "raw", url, "-c", "flush"); err != nil {
		return err
	}
	m.mu.Lock()
	m.base, m.rounds = base, []nbdRound{{start: start, flushed: wall()}}
	m.mu.Unlock()
	for {
		select {
		case <-stop:
			return nil
		default:
		}
		var writes []nbdWrite
		args := []string{"-f", "raw", url}
		for _, s := range rng.Perm(size / slot)[:1+rng.IntN(4)] {
			w := nbdWrite{off: s * slot, n: (1 + rng.IntN(16)) * 4096, pat: byte(rng.IntN(256))}
			cmd := fmt.Sprintf("write -P %d %d %d", w.pat, w.off, w.n)
			if w.pat == 0 {
				cmd = fmt.Sprintf("write -z %d %d", w.off, w.n)
			}
			writes, args = append(writes, w), append(args, "-c", cmd)
		}
		start := wall()
		if err := qemu("qemu-io", append(args, "-c", "flush")...); err != nil {
			return err
		}
		m.mu.Lock()
		m.rounds = append(m.rounds, nbdRound{start: start, flushed: wall(), writes: writes})
		m.mu.Unlock()
		time.Sleep(time.Duration(30+rng.IntN(120)) * time.Millisecond)
	}
}

// qemu runs a QEMU tool; qemu-io may exit 0 after a failed command, so
// its output is read too.
func qemu(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil || strings.Contains(string(out), "rror") {
		return fmt.Errorf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return nil
}

func nbdQuiet(rounds []nbdRound, end time.Time) [][2]time.Time {
	var q [][2]time.Time
	for i, r := range rounds {
		next := end
		if i+1 < len(rounds) {
			next = rounds[i+1].start
		}
		q = append(q, [2]time.Time{r.flushed, next})
	}
	return q
}

// nbdCheck compares an NBD disk's image at instant at with the writes
// flushed by then; a range written by a round running at that instant may
// hold the old bytes or the new. It returns what differs, or "".
func nbdCheck(got, base []byte, rounds []nbdRound, at time.Time) string {
	want := bytes.Clone(base)
	k := 0
	for i := 1; i < len(rounds) && !rounds[i].flushed.After(at); i++ {
		for _, w := range rounds[i].writes {
			copy(want[w.off:w.off+w.n], bytes.Repeat([]byte{w.pat}, w.n))
		}
		k = i
	}
	if k+1 < len(rounds) && !rounds[k+1].start.After(at) {
		for _, w := range rounds[k+1].writes {
			for i := w.off; i < w.off+w.n; i++ {
				if got[i] != want[i] && got[i] != w.pat {
					return fmt.Sprintf("byte %d, written (%d) in the running round %d, holds %d", i, w.pat, k+1, got[i])
				}
			}
			copy(want[w.off:w.off+w.n], got[w.off:w.off+w.n])
		}
	}
	if len(got) != len(want) {
		return fmt.Sprintf("%d bytes, want %d", len(got), len(want))
	}
	if !bytes.Equal(got, want) {
		for i := range got {
			if got[i] != want[i] {
				return fmt.Sprintf("byte %d holds %d, want %d (after round %d)", i, got[i], want[i], k)
			}
		}
	}
	return ""
}

// checkCloneBeside clones disk at a past instant through the service,
// checks and writes the clone through a loop device, ends it, and checks
// that the instant is unchanged and the disk's workload went on meanwhile.
func checkCloneBeside(t *testing.T, s *svc, w *workloads, disk string, m *fsModel) {
	r, at := m.waitQuiet(t, w, 4, time.Second, false)
	instant := at.Format(time.RFC3339Nano)
	before := exportInstant(t, s.repo, disk, instant, t.TempDir())
	begun := wall()
	dir := s.tapDir(t)
	out := ok(t, "--repo", s.repo, "--json", "clone", disk, "--at", instant, "--name", "c1", "--mount", dir)
	ended := false
	t.Cleanup(func() {
		if !ended {
			hs(t, "--repo", s.repo, "clone-end", "c1")
		}
	})
	var st protStatus
	if err := json.Unmarshal([]byte(out), &st); err != nil || len(st.Disks) != 1 || st.FrontEnd != "clone" {
		t.Fatalf("clone --json: %v\n%s", err, out)
	}
	dev, detach := attachRWNow(t, st.Disks[0].Path)
	t.Cleanup(detach)
	mnt, unmount := mountRWDevNow(t, dev) // replays the instant's journal
	if got := readTree(t, mnt); !maps.Equal(got, m.snapshot()[r].files) {
		t.Errorf("the clone at %s does not hold the files synced in round %d", instant, r)
	}
	must(t, writeFileSync(filepath.Join(mnt, "clone-only"), []byte("written in the clone\n"), true))
	unmount()
	if out, err := exec.Command("e2fsck", "-fn", dev).CombinedOutput(); err != nil {
		t.Errorf("e2fsck -fn of the clone: %v\n%s", err, out)
	}
	detach()
	ok(t, "--repo", s.repo, "clone-end", "c1")
	ended = true
	if isMounted(dir) {
		t.Errorf("clone-end left %s mounted", dir)
	}
	if _, there := protectionsSummary(t, s.repo)["c1"]; there {
		t.Error("protections lists c1 after clone-end")
	}
	after := exportInstant(t, s.repo, disk, instant, t.TempDir())
	if a, b := hashFile(t, before), hashFile(t, after); a != b {
		t.Errorf("%s at %s changed while its clone was written", disk, instant)
	}
	went := 0
	for _, rd := range m.snapshot() {
		if rd.start.After(begun) && rd.synced.Before(wall()) {
			went++
		}
	}
	if went == 0 {
		t.Errorf("%s's workload synced no round while its clone was served", disk)
	}
}

// mountRWDevNow mounts the ext4 on dev read-write; unmount is also run at
// cleanup.
func mountRWDevNow(t *testing.T, dev string) (string, func()) {
	t.Helper()
	dir := t.TempDir()
	run(t, "mount", "-t", "ext4", dev, dir)
	done := false
	unmount := func() {
		if !done {
			done = true
			// A moment's EBUSY (a parallel test's tool passing by) is
			// retried; a mount that stays busy fails the test.
			var out []byte
			var err error
			for range 20 {
				if out, err = exec.Command("umount", dir).CombinedOutput(); err == nil {
					return
				}
				time.Sleep(250 * time.Millisecond)
			}
			exec.Command("umount", "-l", dir).Run()
			t.Errorf("umount %s: %v\n%s", dir, err, out)
		}
	}
	t.Cleanup(unmount)
	return dir, unmount
}

// checkAppBookmark takes an application bookmark of the group, freezing
// both filesystems, and checks that its images are clean without a journal
// replay and hold numbers the group's order allows at its time.
func checkAppBookmark(t *testing.T, repo string, w *workloads, m *seqModel, mntA, mntB string) {
	deadline := time.Now().Add(30 * time.Second)
	for start, _ := m.snapshot(); len(start[1]) < 3; start, _ = m.snapshot() {
		if err := w.failed(); err != nil {
			t.Fatal(err)
		}
		if time.Now().After(deadline) {
			t.Fatal("the group's workload did not write 3 numbers in 30s")
		}
		time.Sleep(100 * time.Millisecond)
	}
	bm := quiescedBookmark(t, repo, "vm", "app", "--freeze", mntA, "--freeze", mntB)
	var files [2]map[string]string
	for d, disk := range []string{"ga", "gb"} {
		img := filepath.Join(t.TempDir(), disk)
		ok(t, "--repo", repo, "export", disk, "--at", "bookmark:app", "--out", img)
		files[d] = ext4Files(t, img, false) // frozen: nothing to replay
	}
	start, synced := m.snapshot()
	checkSeqs(t, "bookmark app at "+bm.Time.Format(time.RFC3339Nano), files[0], files[1], start, synced, bm.Time)
}

// checkUnprotect protects a disk through the service, writes it, and
// unprotects it: protections lists it, then not; its tap is gone, its
// history stays, and it can be protected again.
func checkUnprotect(t *testing.T, s *svc) {
	dir := s.protectTap(t, "x")
	if got := protectionsSummary(t, s.repo)["x"]; got != "tap x" {
		t.Fatalf("protections lists x as %q, want \"tap x\"", got)
	}
	want := bytes.Repeat([]byte("unprotect"), (1<<20)/9)
	want = append(want, make([]byte, 1<<20-len(want))...)
	f, err := os.OpenFile(filepath.Join(dir, "x.img"), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(want, 0); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	ok(t, "--repo", s.repo, "unprotect", "x")
	if _, there := protectionsSummary(t, s.repo)["x"]; there {
		t.Error("protections lists x after unprotect")
	}
	if isMounted(dir) {
		t.Errorf("unprotect left %s mounted", dir)
	}
	newestEquals(t, s.repo, "x", want, "x after unprotect")
	if r := hs(t, "--repo", s.repo, "unprotect", "x"); r.code == 0 || !strings.Contains(r.stderr, "no such protection") {
		t.Errorf("unprotect of what is not protected: exit %d, %q", r.code, r.stderr)
	}
	dir = s.protectTap(t, "x")
	if got, err := os.ReadFile(filepath.Join(dir, "x.img")); err != nil || !bytes.Equal(got, want) {
		t.Errorf("x protected again does not hold what was written before: %v", err)
	}
	ok(t, "--repo", s.repo, "unprotect", "x")
}
