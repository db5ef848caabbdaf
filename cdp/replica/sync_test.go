package replica

import (
	"bytes"
	"context"
	"errors"
	mrand "math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hindsight-cdp/hindsight/store"
)

// writeOne captures one block of d and makes it durable; it returns the
// durable position and the step's point.
func writeOne(t *testing.T, r *store.Repo, d store.Disk, rng *mrand.Rand) (uint64, store.Point) {
	t.Helper()
	if err := r.CaptureAsync(d.Timeline, []store.BlockWrite{{Disk: d, Block: rng.Uint64N(d.Blocks()), Data: block(rng, d.BlockSize)}}); err != nil {
		t.Fatal(err)
	}
	if err := r.Sync(); err != nil {
		t.Fatal(err)
	}
	p, err := r.LastPoint(d.Timeline)
	if err != nil {
		t.Fatal(err)
	}
	return r.Durable(), p
}

func waitState(t *testing.T, s *Sender, ok func(Status) bool, what string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for st := s.Status(); !ok(st); st = s.Status() {
		if time.Now().After(deadline) {
			t.Fatalf("sender never %s: %+v", what, st)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestSyncWaitAcked: a --sync flush returns only once the replica has the
// write durable; with the link stalled, Stall mode keeps waiting and
// Async mode gives up after SyncTimeout, says so, and recovers.
func TestSyncWaitAcked(t *testing.T) {
	rng := mrand.New(mrand.NewPCG(13, 14))
	dr := newSite(t, "dr", tokensFile(t, "primary "+testToken+" web,db"), nil)
	src, web := repoWith(t, "web", 1<<20)
	db, err := src.CreateDisk("db", 1<<20, 4096)
	if err != nil {
		t.Fatal(err)
	}
	px := newProxy(t, dr.addr, 0)
	tg := Target{Addr: px.addr(), CA: dr.ca.pem, Token: testToken}
	stall, _ := startSender(t, src, "web", tg, SendOptions{Sync: true}, nil)
	alog, alb := testLog(t, "async sender")
	async, _ := startSender(t, src, "db", tg, SendOptions{Sync: true, OnLinkLoss: Async, SyncTimeout: 500 * time.Millisecond, Log: alog}, nil)
	caughtUp := func(st Status) bool { return st.State == "caught-up" }
	waitState(t, stall, caughtUp, "caught up")
	waitState(t, async, caughtUp, "caught up")

	var lat []time.Duration
	for range 40 {
		seq, p := writeOne(t, src, web, rng)
		start := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := stall.WaitAcked(ctx, seq)
		cancel()
		lat = append(lat, time.Since(start))
		if err != nil {
			t.Fatal(err)
		}
		rp, err := dr.r.LastPoint(dr.mustDisk(t, "web").Timeline)
		if err != nil || !rp.Time.Equal(p.Time) || dr.r.Durable() < rp.Seq {
			t.Fatalf("WaitAcked(%d) returned; the replica's newest point is %+v (%v), durable to %d; want %s durable", seq, rp, err, dr.r.Durable(), p.Time)
		}
	}
	slices.Sort(lat)
	t.Logf("sync replication wait after a flush: p50 %v, p99 %v", lat[len(lat)/2], lat[len(lat)*99/100])

	px.stalled.Store(true)
	seq, _ := writeOne(t, src, web, rng)
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		done <- stall.WaitAcked(ctx, seq)
	}()
	select {
	case err := <-done:
		t.Fatalf("WaitAcked returned (%v) with the link stalled, in Stall mode", err)
	case <-time.After(3 * time.Second):
	}
	if st := stall.Status(); st.LagBytes != 4096 || st.LagSeconds <= 0 || st.State != "streaming" {
		t.Errorf("with one write held up: %+v, want 4096 bytes and some seconds of lag", st)
	}
	seq2, _ := writeOne(t, src, db, rng)
	start := time.Now()
	if err := async.WaitAcked(context.Background(), seq2); err != nil {
		t.Fatal(err)
	}
	if el := time.Since(start); el < 500*time.Millisecond || el > 3*time.Second || !async.Status().Degraded {
		t.Fatalf("Async WaitAcked returned after %v, degraded %v: want after the 500ms timeout, degraded", el, async.Status().Degraded)
	}
	seq3, _ := writeOne(t, src, db, rng)
	start = time.Now()
	if err := async.WaitAcked(context.Background(), seq3); err != nil || time.Since(start) > 100*time.Millisecond {
		t.Fatalf("a degraded stream's WaitAcked took %v (%v): want at once", time.Since(start), err)
	}
	if !strings.Contains(alb.String(), "no acknowledgement within the sync timeout") {
		t.Errorf("the fall back to asynchronous was not logged")
	}
	px.stalled.Store(false)
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("WaitAcked did not return once the link came back")
	}
	waitState(t, async, func(st Status) bool { return !st.Degraded }, "synchronous again")
	if !strings.Contains(alb.String(), "caught up: flushes wait for the replica again") {
		t.Errorf("the return to synchronous was not logged")
	}
}

func (s *site) mustDisk(t *testing.T, name string) store.Disk {
	t.Helper()
	d, err := s.r.Disk(name)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestFailoverFailback: A replicates to B; B fails over and takes writes;
// B fails back to A, sending only the blocks written since, and A ends
// identical to B (A's own writes that never reached B are undone).
func TestFailoverFailback(t *testing.T) {
	rng := mrand.New(mrand.NewPCG(15, 16))
	a := newSite(t, "A", tokensFile(t, "dr "+otherToken+" web"), nil)
	b := newSite(t, "B", tokensFile(t, "primary "+testToken+" web"), nil)
	web, err := a.r.CreateDisk("web", 1<<20, 4096)
	if err != nil {
		t.Fatal(err)
	}
	writeRandom(t, a.r, []store.Disk{web}, 60, rng)
	px := newProxy(t, b.addr, 0)
	ab, stop := startSender(t, a.r, "web", Target{Addr: px.addr(), CA: b.ca.pem, Token: testToken}, SendOptions{}, func(s *Sender) { s.readTimeout = time.Second })
	waitAcked(t, a.r, ab, 30*time.Second)
	toA := Target{Addr: a.addr, CA: a.ca.pem, Token: otherToken}
	if _, err := NewSender(b.r, "web", toA, SendOptions{Failback: true}); !errors.Is(err, store.ErrReplica) {
		t.Fatalf("a sender of a replica: %v, want ErrReplica", err)
	}

	// The link breaks; A writes what B never gets; B fails over while A's
	// stream is still open there: the stream ends, and A is refused after.
	px.stalled.Store(true)
	writeRandom(t, a.r, []store.Disk{web}, 10, rng)
	h, err := b.srv.Failover("web")
	if err != nil {
		t.Fatal(err)
	}
	px.stalled.Store(false)
	waitState(t, ab, func(st Status) bool { return strings.Contains(st.LastError, "is a writable disk here") }, "refused after the failover")
	stop()
	bweb := b.mustDisk(t, "web")
	if bweb.Replica != nil || bweb.Handover == nil {
		t.Fatalf("after failover B's web is %+v", bweb)
	}
	written := 0
	for range 40 {
		var ws []store.BlockWrite
		for _, blk := range rng.Perm(int(bweb.Blocks()))[:1+rng.IntN(3)] {
			ws = append(ws, store.BlockWrite{Disk: bweb, Block: uint64(blk), Data: block(rng, bweb.BlockSize)})
		}
		if err := b.r.CaptureAsync(bweb.Timeline, ws); err != nil {
			t.Fatal(err)
		}
		written += len(ws)
	}
	ba, _ := startSender(t, b.r, "web", toA, SendOptions{Failback: true}, nil)
	waitAcked(t, b.r, ba, 30*time.Second)

	aweb := a.mustDisk(t, "web")
	if aweb.Replica == nil || aweb.Replica.Source != "dr" {
		t.Errorf("after failback A's web is %+v, want a replica of dr", aweb)
	}
	if !bytes.Equal(image(t, a.r, aweb, a.r.Head()), image(t, b.r, bweb, b.r.Head())) {
		t.Fatal("after failback A's web differs from B's")
	}
	if st := ba.Status(); st.Blocks != uint64(written) || st.Steps != 40 {
		t.Errorf("failback sent %d blocks in %d steps; %d blocks in 40 steps were written since the failover", st.Blocks, st.Steps, written)
	}
	since := func(r *store.Repo, tl uint32) []store.Point {
		ps, err := r.Points(tl, h.At.Add(time.Nanosecond), time.Now().Add(time.Hour), 0)
		if err != nil {
			t.Fatal(err)
		}
		return ps
	}
	pa, pb := since(a.r, aweb.Timeline), since(b.r, bweb.Timeline)
	if len(pa) != len(pb) || len(pb) != 40 {
		t.Fatalf("points since the handover: %d at A, %d at B, want 40", len(pa), len(pb))
	}
	for i := range pa {
		if !pa[i].Time.Equal(pb[i].Time) || pa[i].Blocks != pb[i].Blocks {
			t.Fatalf("point %d since the handover: A %+v, B %+v", i, pa[i], pb[i])
		}
	}
	marks, err := a.r.Bookmarks(aweb)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(marks, func(bm store.Bookmark) bool { return strings.HasPrefix(bm.Name, "failback-") }) {
		t.Errorf("A has no failback bookmark: %+v", marks)
	}
}

// TestBandwidth: a sender limited to a rate writes no faster than it.
func TestBandwidth(t *testing.T) {
	rng := mrand.New(mrand.NewPCG(19, 20))
	dr := newSite(t, "dr", tokensFile(t, "primary "+testToken+" web"), nil)
	src, web := repoWith(t, "web", 4<<20)
	for i := range 600 {
		if err := src.CaptureAsync(web.Timeline, []store.BlockWrite{{Disk: web, Block: uint64(i), Data: block(rng, 4096)}}); err != nil {
			t.Fatal(err)
		}
	}
	const limit = 512 << 10
	start := time.Now()
	s, _ := startSender(t, src, "web", Target{Addr: dr.addr, CA: dr.ca.pem, Token: testToken}, SendOptions{Bandwidth: limit}, nil)
	waitAcked(t, src, s, time.Minute)
	el := time.Since(start)
	rate := float64(s.Status().WireBytes) / el.Seconds()
	t.Logf("%d bytes in %v: %.0f bytes/s with a limit of %d", s.Status().WireBytes, el, rate, limit)
	if rate > 1.2*limit || s.Status().WireBytes < 1<<20 {
		t.Errorf("%.0f bytes/s over the wire, limit %d", rate, limit)
	}
}
