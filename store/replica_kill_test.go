package store

import (
	"bufio"
	"bytes"
	"encoding/binary"
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

// The kill test runs ApplySteps in a child process (this test binary, run
// with replKillEnv set and only TestReplicaApplyKillChild) and SIGKILLs it.
const replKillEnv = "HINDSIGHT_REPLICA_KILL_CHILD"

// killSteps is the stream the child applies: steps of 1-6 blocks of a
// 16-block disk, one millisecond apart, from a seed. Content repeats, and
// a fifth of the blocks are zeros.
const killSteps = 3000

type killStep struct {
	at     time.Time
	blocks map[uint64][]byte
}

func killStream(seed uint64) []killStep {
	rng := rand.New(rand.NewPCG(seed, 23))
	t0 := time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)
	var pool [][]byte
	out := make([]killStep, killSteps)
	for i := range out {
		st := killStep{at: t0.Add(time.Duration(i) * time.Millisecond), blocks: map[uint64][]byte{}}
		for range 1 + rng.IntN(6) {
			data := make([]byte, 4096)
			switch k := rng.IntN(5); {
			case k == 0:
			case k == 1 && len(pool) > 0:
				data = pool[rng.IntN(len(pool))]
			default:
				for j := 0; j < len(data); j += 8 {
					binary.LittleEndian.PutUint64(data[j:], rng.Uint64())
				}
				pool = append(pool, data)
			}
			st.blocks[uint64(rng.IntN(16))] = data
		}
		out[i] = st
	}
	return out
}

// killImage is the disk after steps[:n].
func killImage(steps []killStep, n int) []byte {
	img := make([]byte, 16*4096)
	for _, st := range steps[:n] {
		for b, data := range st.blocks {
			copy(img[b*4096:], data)
		}
	}
	return img
}

// replKillChild is the child (TestMain runs it): it opens the repository, creates
// the replica (or finds it), resumes the stream after its position with
// ApplySteps of 1-3 steps (content only where HasContent says it lacks it),
// and Syncs every few calls, saying "synced N" once steps[:N] are durable.
func replKillChild(dir string, seed uint64) error {
	steps := killStream(seed)
	r, err := Open(dir, Options{})
	if err != nil {
		return err
	}
	tl, disks, err := r.CreateReplica("web", "site-a", false, []DiskSpec{{Name: "web", Size: 16 * 4096, BlockSize: 4096}})
	if err != nil {
		return err
	}
	pos, err := r.ReplicaPosition(tl)
	if err != nil {
		return err
	}
	next := 0
	for next < len(steps) && !steps[next].at.After(pos) {
		next++
	}
	fmt.Println("ready", next)
	rng := rand.New(rand.NewPCG(seed, uint64(next)))
	for calls := 1; next < len(steps); calls++ {
		n := min(1+rng.IntN(3), len(steps)-next)
		var hs []Hash
		for _, st := range steps[next : next+n] {
			for _, data := range st.blocks {
				if !IsZero(data) {
					hs = append(hs, HashBlock(data))
				}
			}
		}
		have := make([]bool, len(hs))
		if err := r.HasContent(hs, have); err != nil {
			return err
		}
		held := map[Hash]bool{}
		for i, h := range hs {
			held[h] = held[h] || have[i]
		}
		in := make([]IncomingStep, n)
		for i, st := range steps[next : next+n] {
			in[i].Time = st.at
			for b, data := range st.blocks {
				ib := IncomingBlock{Disk: disks[0], Block: b}
				if !IsZero(data) {
					ib.Hash = HashBlock(data)
					if !held[ib.Hash] {
						ib.Stored, held[ib.Hash] = data, true
					}
				}
				in[i].Blocks = append(in[i].Blocks, ib)
			}
		}
		if err := r.ApplySteps(tl, in); err != nil {
			return err
		}
		next += n
		if calls%4 == 0 || next == len(steps) {
			if err := r.Sync(); err != nil {
				return err
			}
			fmt.Println("synced", next)
		}
	}
	fmt.Println("done")
	return r.Close()
}

// TestReplicaApplyKilled: a replica applying a stream is SIGKILLed 16
// times at random moments; after each kill it opens holding exactly a
// prefix of the stream, with every step it had synced, whole steps only
// (each point's block count and image are the model's), and its position
// is its newest point's time; the next child resumes from there, and the
// last one finishes the stream. The seed is printed and can be set with
// HINDSIGHT_REPLICA_KILL_SEED.
func TestReplicaApplyKilled(t *testing.T) {
	seed := killSeed(t, "HINDSIGHT_REPLICA_KILL_SEED")
	rng := rand.New(rand.NewPCG(seed, 29))
	steps := killStream(seed)
	dir, r := newRepo(t)
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	const kills = 16
	killed, synced := 0, 0
	for round := 0; ; round++ {
		kill := round < kills
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s|%d", replKillEnv, dir, seed))
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		var stderr strings.Builder
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill() })
		lines := bufio.NewScanner(out)
		// Kill once the child said it synced a few times, a little later.
		syncs, last := 1+rng.IntN(12), ""
		for lines.Scan() {
			last = lines.Text()
			if n, ok := strings.CutPrefix(last, "synced "); ok {
				v, _ := strconv.Atoi(n)
				synced = max(synced, v)
				if syncs--; kill && syncs == 0 {
					time.Sleep(time.Duration(rng.IntN(3000)) * time.Microsecond)
					cmd.Process.Signal(syscall.SIGKILL)
					break
				}
			}
			if strings.HasPrefix(last, "error") {
				break
			}
		}
		for lines.Scan() {
			if l := lines.Text(); strings.HasPrefix(l, "synced ") {
				v, _ := strconv.Atoi(strings.TrimPrefix(l, "synced "))
				synced = max(synced, v) // said before the kill landed
			}
		}
		werr := cmd.Wait()
		ws, _ := cmd.ProcessState.Sys().(syscall.WaitStatus)
		switch {
		case ws.Signaled() && ws.Signal() == syscall.SIGKILL:
			killed++
		case werr != nil || strings.HasPrefix(last, "error"):
			t.Fatalf("round %d: the child failed (%v): %s %s", round, werr, last, stderr.String())
		}
		r := reopen(t, dir)
		n := checkKillPrefix(t, r, steps, synced, rng)
		t.Logf("round %d: %d steps, %d synced, at %v", round, n, synced, time.Now().Format("15:04:05.000"))
		if err := r.Close(); err != nil {
			t.Fatal(err)
		}
		if !kill || n == len(steps) {
			if n != len(steps) {
				t.Fatalf("the last child ended with %d of %d steps", n, len(steps))
			}
			break
		}
	}
	t.Logf("%d kills landed mid-stream", killed)
	if killed < kills/2 {
		t.Fatalf("only %d of %d kills landed mid-stream: the test proves little", killed, kills)
	}
}

// checkKillPrefix checks that r's replica is steps[:n] for some n ≥ synced
// and returns n.
func checkKillPrefix(t *testing.T, r *Repo, steps []killStep, synced int, rng *rand.Rand) int {
	t.Helper()
	d := mustDisk(t, r, "web")
	pts := repPoints(t, r, d.Timeline)
	n := len(pts)
	if n < synced || n > len(steps) {
		t.Fatalf("the replica holds %d steps; %d were synced, %d exist", n, synced, len(steps))
	}
	for i, p := range pts {
		if !p.Time.Equal(steps[i].at) || p.Blocks != uint64(len(steps[i].blocks)) {
			t.Fatalf("point %d is %v with %d blocks; step %d is %v with %d", i, p.Time, p.Blocks, i, steps[i].at, len(steps[i].blocks))
		}
	}
	if pos, err := r.ReplicaPosition(d.Timeline); err != nil || (n > 0 && !pos.Equal(pts[n-1].Time)) {
		t.Fatalf("position %v (%v), newest point %v", pos, err, pts[n-1].Time)
	}
	if n == 0 {
		return 0
	}
	for _, i := range []int{n - 1, max(synced-1, 0), rng.IntN(n), rng.IntN(n)} {
		if !bytes.Equal(readAll(t, r, d, pts[i].Seq), killImage(steps, i+1)) {
			t.Fatalf("the replica at step %d differs from the stream", i)
		}
	}
	return n
}
