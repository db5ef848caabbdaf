package tests

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestTapStatusAndLiveMount: a known workload through the tap; `status`
// counts it exactly and a `mount` in another process shows it while protect
// still runs.
func TestTapStatusAndLiveMount(t *testing.T) {
	t.Parallel()
	needRoot(t)
	repo := newRepo(t)
	ok(t, "--repo", repo, "disk", "create", "s", "--size", "4M")
	img, p := protect(t, repo, "s")
	f, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(81, 82))
	want := make([]byte, 4<<20)
	blocks := make([][]byte, 100)
	for i := range blocks {
		blocks[i] = make([]byte, 4096)
		for j := range blocks[i] {
			blocks[i][j] = byte(rng.Uint32())
		}
	}
	for i := 0; i < 200; i++ { // every block content twice: dedupe halves the content
		off := int64(i) * 4096
		if _, err := f.WriteAt(blocks[i%100], off); err != nil {
			t.Fatal(err)
		}
		copy(want[off:], blocks[i%100])
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	f.Close()

	var st struct {
		LogicalBytes int64   `json:"logical_bytes"`
		StoredBytes  int64   `json:"stored_bytes"`
		Reduction    float64 `json:"reduction_ratio"`
		LagSeconds   float64 `json:"lag_seconds"`
		Capture      struct {
			FrontEnd     string `json:"front_end"`
			PID          int    `json:"pid"`
			Running      bool   `json:"running"`
			Writes       uint64 `json:"writes"`
			BytesWritten uint64 `json:"bytes_written"`
			Blocks       uint64 `json:"blocks_journaled"`
			Flushes      uint64 `json:"flushes"`
			Head         uint64 `json:"head"`
			Published    uint64 `json:"published"`
		} `json:"capture"`
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if err := json.Unmarshal([]byte(ok(t, "--repo", repo, "--json", "status", "s")), &st); err != nil {
			t.Fatal(err)
		}
		if st.Capture.Head > 0 && st.Capture.Published == st.Capture.Head || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	c := st.Capture
	if c.FrontEnd != "tap" || !c.Running || c.PID != p.cmd.Process.Pid || c.Writes != 200 || c.BytesWritten != 200*4096 ||
		c.Blocks != 200 || c.Flushes < 1 || c.Published != c.Head || st.LagSeconds != 0 {
		t.Errorf("capture status %+v, lag %v; want 200 writes of 4 KiB by tap pid %d, all published", c, st.LagSeconds, p.cmd.Process.Pid)
	}
	if st.LogicalBytes != 200*4096 {
		t.Errorf("logical bytes %d, want %d", st.LogicalBytes, 200*4096)
	}
	if st.Reduction < 1.9 || st.Reduction > 2.1 {
		t.Errorf("reduction %.3f for every block written twice, want about 2 (stored %d)", st.Reduction, st.StoredBytes)
	}

	// Another process's mount shows the newest published point.
	mnt := mountRepo(t, repo)
	got, err := os.ReadFile(filepath.Join(mnt, "s", "latest", "s-flat.vmdk"))
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("latest through a mount beside protect: %v, equal=%v", err, bytes.Equal(got, want))
	}
}
