package tests

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// TestGCBesideLiveWork: prune and gc run through the service while a reader
// holds an old instant open through the mount, a clone of the disk is
// written, and the service captures new writes on the disk itself. No read
// fails or changes, nothing needed is freed, and every write is there
// afterwards; verify --full is clean.
func TestGCBesideLiveWork(t *testing.T) {
	t.Parallel()
	needRoot(t)
	const size = 16 << 20
	repo := newRepo(t)
	ok(t, "--repo", repo, "disk", "create", "web", "--size", "16M")
	s := startService(t, repo)
	img := filepath.Join(s.protectTap(t, "web"), "web.img")
	f, err := os.OpenFile(img, os.O_RDWR, 0)
	must(t, err)
	defer f.Close()

	rng := rand.New(rand.NewPCG(18, 3))
	var mu sync.Mutex
	model := make([]byte, size)
	// write puts 256 KiB of random data at one of the first slots 256 KiB
	// slots of w, syncs it, and applies it to m; it returns the time after
	// the sync. The history overwrites a few slots again and again, so
	// that pruning it leaves most of it unused.
	write := func(w *os.File, m []byte, rng *rand.Rand, slots int) (time.Time, error) {
		data := make([]byte, 256<<10)
		for i := range data {
			data[i] = byte(rng.Uint32())
		}
		off := int64(rng.IntN(slots)) * 256 << 10
		if _, err := w.WriteAt(data, off); err != nil {
			return time.Time{}, err
		}
		if err := w.Sync(); err != nil {
			return time.Time{}, err
		}
		mu.Lock()
		copy(m[off:], data)
		mu.Unlock()
		return wall(), nil
	}
	var at []time.Time
	snaps := map[int][]byte{}
	for i := range 40 {
		when, err := write(f, model, rng, 6)
		must(t, err)
		at = append(at, when)
		if i == 5 || i == 10 {
			snaps[i] = bytes.Clone(model)
		}
		time.Sleep(20 * time.Millisecond)
	}
	waitPublished(t, repo)

	// The reader: round 5's instant through the tree, held open.
	mnt := mountRepo(t, repo)
	rf, err := os.Open(filepath.Join(mnt, "web", at[5].Format("20060102T150405.000000000Z"), "web-flat.vmdk"))
	must(t, err)
	defer rf.Close()
	readHeld := func() error {
		got := make([]byte, size)
		if _, err := rf.ReadAt(got, 0); err != nil {
			return fmt.Errorf("read of the held instant: %w", err)
		}
		if !bytes.Equal(got, snaps[5]) {
			return fmt.Errorf("the held instant of round 5 changed")
		}
		return nil
	}
	must(t, readHeld())

	// The clone: round 10's instant, written beside.
	cdir := s.tapDir(t)
	ok(t, "--repo", repo, "clone", "web", "--at", at[10].Format(time.RFC3339Nano), "--name", "c", "--mount", cdir)
	ended := false
	t.Cleanup(func() {
		if !ended {
			hs(t, "--repo", repo, "clone-end", "c")
		}
	})
	cf, err := os.OpenFile(filepath.Join(cdir, "c.img"), os.O_RDWR, 0)
	must(t, err)
	defer cf.Close()
	cmodel := bytes.Clone(snaps[10])

	// A policy that keeps only the last hour, evaluated three hours ahead:
	// everything but the newest point, the clone's base and what the
	// writers add goes.
	ok(t, "--repo", repo, "policy", "set", "web", "--keep-all", "1h")
	stop := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, 3)
	reads, webRounds, cloneRounds := 0, 0, 0
	// Each loop paces itself, as live work does: the race-built binary on
	// two cores would otherwise spend the test serving a tight read loop.
	loop := func(n *int, step func() error) {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
			if err := step(); err != nil {
				errs <- err
				return
			}
			*n++
		}
	}
	wg.Add(3)
	wrng, crng := rand.New(rand.NewPCG(18, 4)), rand.New(rand.NewPCG(18, 5))
	go loop(&webRounds, func() error { _, err := write(f, model, wrng, size/(256<<10)); return err })
	go loop(&cloneRounds, func() error { _, err := write(cf, cmodel, crng, size/(256<<10)); return err })
	go loop(&reads, readHeld)

	var pr struct {
		Removed  []json.RawMessage `json:"removed"`
		Versions uint64            `json:"versions_collapsed"`
	}
	began := time.Now()
	out := ok(t, "--repo", repo, "--json", "prune", "web", "--now", time.Now().Add(3*time.Hour).UTC().Format(time.RFC3339))
	pruned := time.Since(began)
	if err := json.Unmarshal([]byte(out), &pr); err != nil || len(pr.Removed) < 20 || pr.Versions == 0 {
		t.Fatalf("prune --json: %v\n%s", err, out)
	}
	var gc struct {
		Freed     int   `json:"freed"`
		Rewritten int   `json:"rewritten"`
		Reclaimed int64 `json:"reclaimed_bytes"`
	}
	out = ok(t, "--repo", repo, "--json", "gc")
	if err := json.Unmarshal([]byte(out), &gc); err != nil || gc.Freed == 0 || gc.Rewritten == 0 {
		t.Fatalf("gc --json: %v\n%s", err, out)
	}
	collected := time.Since(began) - pruned
	time.Sleep(300 * time.Millisecond)
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if reads < 2 || webRounds == 0 || cloneRounds == 0 {
		t.Fatalf("the live work did not overlap prune and gc: %d reads, %d writes to web, %d to the clone", reads, webRounds, cloneRounds)
	}
	must(t, readHeld())
	got := make([]byte, size)
	if _, err := cf.ReadAt(got, 0); err != nil || !bytes.Equal(got, cmodel) {
		t.Fatalf("the clone does not hold what was written to it (%v)", err)
	}
	cf.Close()
	ok(t, "--repo", repo, "clone-end", "c")
	ended = true
	waitPublished(t, repo)
	exported := filepath.Join(t.TempDir(), "web.raw")
	ok(t, "--repo", repo, "export", "web", "--at", "latest", "--format", "raw", "--out", exported)
	if b, err := os.ReadFile(exported); err != nil || !bytes.Equal(b, model) {
		t.Fatalf("the newest instant of web does not hold every write (%v)", err)
	}
	ok(t, "--repo", repo, "verify", "--full")
	t.Logf("prune %v, gc %v: %d reads of the held instant, %d rounds written to web and %d to the clone meanwhile; gc reclaimed %d bytes",
		pruned.Round(time.Millisecond), collected.Round(time.Millisecond), reads, webRounds, cloneRounds, gc.Reclaimed)
}
