package store

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// historyRepo journals points steps of unrelated writes (each to 8 random
// blocks of 1024..4095) in which every step%every == 0 also rewrites block 7
// and, every other time, block 9. It returns the disk and the seqs at which
// block 7 or 9 changed.
func historyRepo(tb testing.TB, r *Repo, steps, every int) (Disk, []uint64) {
	tb.Helper()
	d, err := r.CreateDisk(fmt.Sprintf("d%d-%d", steps, every), 16<<20, 4096)
	if err != nil {
		tb.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, uint64(steps)))
	data := make([]byte, 4096)
	var want []uint64
	at := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	for i := 0; i < steps; i++ {
		var ws []BlockWrite
		for k := 0; k < 8; k++ {
			b := make([]byte, 4096)
			b[0], b[1] = byte(i), byte(k+1)
			ws = append(ws, BlockWrite{Disk: d, Block: 1024 + rng.Uint64N(3072), Data: b})
		}
		if i%every == 0 {
			data[0]++
			ws = append(ws, BlockWrite{Disk: d, Block: 7, Data: slices.Clone(data)})
			if i%(2*every) == 0 {
				ws = append(ws, BlockWrite{Disk: d, Block: 9, Data: slices.Clone(data)})
			}
		}
		p, err := r.CaptureAt(d.Timeline, at.Add(time.Duration(i)*time.Millisecond), ws)
		if err != nil {
			tb.Fatal(err)
		}
		if i%every == 0 {
			want = append(want, p.Seq)
		}
	}
	if err := r.Sync(); err != nil {
		tb.Fatal(err)
	}
	return d, want
}

func TestBlockVersions(t *testing.T) {
	_, r := newRepo(t)
	historyRepo(t, r, 30, 1) // another disk with the same blocks: not counted
	d, want := historyRepo(t, r, 200, 10)
	got, err := r.BlockVersions(d, []uint64{9, 7, 8}, 0, r.Head())
	if err != nil || !slices.Equal(got, want) {
		t.Fatalf("BlockVersions = %v, %v; want %v", got, err, want)
	}
	// (after, upto] bounds, both ends.
	got, _ = r.BlockVersions(d, []uint64{7}, want[2], want[5])
	if !slices.Equal(got, want[3:6]) {
		t.Errorf("(%d, %d]: %v, want %v", want[2], want[5], got, want[3:6])
	}
	if got, _ := r.BlockVersions(d, []uint64{8}, 0, r.Head()); len(got) != 0 {
		t.Errorf("never-written block: %v", got)
	}
	if _, err := r.BlockVersions(d, []uint64{d.Blocks()}, 0, r.Head()); err == nil {
		t.Error("block past the end accepted")
	}
	for _, seq := range want {
		if p, err := r.PointOf(d.Timeline, seq); err != nil || p.Seq != seq {
			t.Errorf("PointOf(%d) = %+v, %v", seq, p, err)
		}
	}
	if _, err := r.PointOf(d.Timeline, 1); err == nil { // a step of the other disk's timeline
		t.Error("PointOf found a position of another timeline")
	}
}

// BenchmarkBlockVersions: the cost of finding a block's changes grows with
// its changes, not with the journal: 20 changes among 2,000 or 20,000 steps
// cost about the same; 200 changes among 2,000 cost more.
func BenchmarkBlockVersions(b *testing.B) {
	for _, c := range []struct{ steps, every int }{{2000, 100}, {20000, 1000}, {2000, 10}} {
		b.Run(fmt.Sprintf("steps=%d/changes=%d", c.steps, c.steps/c.every), func(b *testing.B) {
			dir := b.TempDir()
			if err := Init(dir); err != nil {
				b.Fatal(err)
			}
			r, err := Open(dir, Options{})
			if err != nil {
				b.Fatal(err)
			}
			defer r.Close()
			d, want := historyRepo(b, r, c.steps, c.every)
			b.ResetTimer()
			for b.Loop() {
				got, err := r.BlockVersions(d, []uint64{7, 9}, 0, r.Head())
				if err != nil || len(got) != len(want) {
					b.Fatal(len(got), err)
				}
			}
		})
	}
}
