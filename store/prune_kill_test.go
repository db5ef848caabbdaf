package store

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The kill test runs prune and gc in a child process (this test binary,
// started with killChildEnv set) and SIGKILLs it at random moments.
const killChildEnv = "HINDSIGHT_PRUNE_KILL_CHILD"

func TestMain(m *testing.M) {
	if spec := os.Getenv(killChildEnv); spec != "" {
		if err := pruneChild(spec); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	if spec := os.Getenv(replKillEnv); spec != "" { // TestReplicaApplyKilled's child
		dir, seedText, _ := strings.Cut(spec, "|")
		seed, _ := strconv.ParseUint(seedText, 10, 64)
		if err := replKillChild(dir, seed); err != nil {
			fmt.Println("error", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// pruneChild opens the repository, says "ready", prunes timeline 1 to the
// positions named (comma-separated), says "gc" and collects, then says "done".
func pruneChild(spec string) error {
	dir, keepList, _ := strings.Cut(spec, "|")
	var keep []uint64
	for _, f := range strings.Split(keepList, ",") {
		if f == "" {
			continue
		}
		s, err := strconv.ParseUint(f, 10, 64)
		if err != nil {
			return err
		}
		keep = append(keep, s)
	}
	r, err := Open(dir, Options{})
	if err != nil {
		return err
	}
	fmt.Println("ready")
	d, err := r.Disk("web")
	if err != nil {
		return err
	}
	if _, err := r.Prune(context.Background(), d.Timeline, PruneOptions{Keep: keep}); err != nil {
		return err
	}
	fmt.Println("gc")
	if _, err := r.Collect(context.Background(), GCOptions{MaxUnused: 0.01}); err != nil {
		return err
	}
	fmt.Println("done")
	return r.Close()
}

// TestPruneAndCollectKilled: prune and gc each SIGKILLed at 20 or more
// random moments (even rounds kill during the prune, odd ones during gc).
// After each kill the repository opens, verify --full is clean, every
// point that still exists shows exactly what was written at it, and every
// position kept so far still exists. The seed is printed and can be set
// with HINDSIGHT_PRUNE_KILL_SEED.
func TestPruneAndCollectKilled(t *testing.T) {
	seed := killSeed(t, "HINDSIGHT_PRUNE_KILL_SEED")
	rng := rand.New(rand.NewPCG(seed, 11))
	dir, r := newRepo(t)
	d, err := r.CreateDisk("web", 512*4096, 4096)
	if err != nil {
		t.Fatal(err)
	}
	h := writeHistory(t, r, d, time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC), 800, seed)
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	// Each even round drops one in eight of the points kept so far, so each
	// has work to do; odd rounds keep all and are killed during gc. Kept so
	// far: must exist.
	kept := map[uint64]bool{}
	for _, p := range h.points {
		kept[p.Seq] = true
	}
	inPrune, inGC := 0, 0
	const rounds = 52
	for round := range rounds {
		var keep []string
		next := map[uint64]bool{}
		i := 0
		for _, p := range h.points {
			if !kept[p.Seq] {
				continue
			}
			if i%8 != 7 || round%2 == 1 {
				keep = append(keep, strconv.FormatUint(p.Seq, 10))
				next[p.Seq] = true
			}
			i++
		}
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), killChildEnv+"="+dir+"|"+strings.Join(keep, ","))
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		var stderr strings.Builder
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		lines := bufio.NewScanner(out)
		if !lines.Scan() || lines.Text() != "ready" {
			cmd.Wait()
			t.Fatalf("round %d: child did not start: %s", round, stderr.String())
		}
		gcPhase := round%2 == 1
		if gcPhase && !(lines.Scan() && lines.Text() == "gc") {
			cmd.Wait()
			t.Fatalf("round %d: child failed before gc: %s", round, stderr.String())
		}
		time.Sleep(time.Duration(rng.IntN(12)) * time.Millisecond)
		cmd.Process.Signal(syscall.SIGKILL)
		phase := "prune"
		if gcPhase {
			phase = "gc"
		}
		for lines.Scan() {
			phase = lines.Text()
		}
		werr := cmd.Wait()
		switch {
		case phase == "prune":
			inPrune++
		case phase == "gc":
			inGC++
		}
		if phase != "done" {
			if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || ws.Signal() != syscall.SIGKILL {
				t.Fatalf("round %d: child failed (%v): %s", round, werr, stderr.String())
			}
		}
		r, err := Open(dir, Options{})
		if err != nil {
			t.Fatalf("round %d: open after the kill: %v", round, err)
		}
		verifyClean(t, r)
		// Every point that exists is exact; every kept one exists.
		var exist []Point
		for _, p := range h.points {
			got, err := r.PointAt(d.Timeline, p.Time)
			if err == nil && got.Seq == p.Seq {
				exist = append(exist, p)
			} else if kept[p.Seq] && next[p.Seq] {
				t.Fatalf("round %d: kept point %d is gone (resolves to %v, %v)", round, p.Seq, got.Seq, err)
			}
		}
		for range 6 {
			p := exist[rng.IntN(len(exist))]
			checkImage(t, r, d, p.Seq, h.images[p.Seq])
		}
		checkImage(t, r, d, h.points[len(h.points)-1].Seq, h.images[h.points[len(h.points)-1].Seq])
		if err := r.Close(); err != nil {
			t.Fatal(err)
		}
		if round%2 == 0 {
			kept = next
		}
	}
	t.Logf("kills: %d during prune, %d during gc, %d after both ended", inPrune, inGC, rounds-inPrune-inGC)
	if inPrune < 20 || inGC < 20 {
		t.Fatalf("too few kills landed during prune (%d) or gc (%d): the test proves little", inPrune, inGC)
	}
}

// killSeed is the seed of a kill test's random moments: env's value when
// set, to repeat a run, else the clock's; logged either way.
func killSeed(t *testing.T, env string) uint64 {
	t.Helper()
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv(env); s != "" {
		seed, _ = strconv.ParseUint(s, 10, 64)
	}
	t.Logf("seed %d (%s)", seed, env)
	return seed
}
