package replica

import (
	"fmt"
	mrand "math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/hindsight-cdp/hindsight/store"
	"github.com/hindsight-cdp/hindsight/store/storetest"
)

const testToken = "0123456789abcdef0123456789abcdef"

// sourceRepo is a repository with a lone disk web (512-byte blocks, so
// that an import-sized step has more blocks than a frame holds) and a
// group g of two disks.
func sourceRepo(t testing.TB) (r *store.Repo, web store.Disk, g store.Group, gd []store.Disk) {
	t.Helper()
	r, _ = storetest.Repo(t)
	web, err := r.CreateDisk("web", 2<<20, 512)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"g1", "g2"} {
		if _, err := r.CreateDisk(n, 512<<10, 4096); err != nil {
			t.Fatal(err)
		}
	}
	if g, err = r.CreateGroup("g", []string{"g1", "g2"}); err != nil {
		t.Fatal(err)
	}
	if _, gd, err = r.Members("g"); err != nil {
		t.Fatal(err)
	}
	return r, web, g, gd
}

// waitMarks waits until the replica of name has as many bookmarks as the
// source (MARKS follow their points by up to a second).
func waitMarks(t testing.TB, src, dst *store.Repo, name string) {
	t.Helper()
	count := func(r *store.Repo) int {
		tl, ds, err := r.Members(name)
		if err != nil {
			t.Fatal(err)
		}
		h := ds[0]
		h.Timeline = tl
		bms, err := r.Bookmarks(h)
		if err != nil {
			t.Fatal(err)
		}
		return len(bms)
	}
	deadline := time.Now().Add(10 * time.Second)
	for count(dst) < count(src) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
}

func TestReplicateEndToEnd(t *testing.T) {
	rng := mrand.New(mrand.NewPCG(1, 2))
	dr := newSite(t, "dr", tokensFile(t, "# source token names", "primary "+testToken+" web,g"), nil)
	src, web, g, gd := sourceRepo(t)
	// History from before the stream starts: captures, a bookmark, an
	// import-sized step (sent in parts), a group's writes.
	writeRandom(t, src, []store.Disk{web}, 40, rng)
	if _, err := src.AddBookmark(web, "before", time.Now(), store.KindUser); err != nil {
		t.Fatal(err)
	}
	big := importStep(t, src, web, 3000, rng)
	if big.Blocks <= batchBlocks {
		t.Fatalf("the import step has %d blocks: not more than a frame holds", big.Blocks)
	}
	writeRandom(t, src, gd, 40, rng)

	tg := Target{Addr: dr.addr, CA: dr.ca.pem, Token: testToken}
	sw, _ := startSender(t, src, "web", tg, SendOptions{}, nil)
	sg, _ := startSender(t, src, "g", tg, SendOptions{}, nil)
	// And more while it streams: bookmarks made after their point was sent.
	for round := range 5 {
		writeRandom(t, src, []store.Disk{web}, 30, rng)
		writeRandom(t, src, gd, 30, rng)
		if _, err := src.AddBookmark(web, fmt.Sprintf("live-%d", round), time.Now(), store.KindUser); err != nil {
			t.Fatal(err)
		}
		if _, err := src.AddBookmark(g.Handle(), fmt.Sprintf("app-%d", round), time.Now(), store.KindApplication); err != nil {
			t.Fatal(err)
		}
		if round == 2 {
			importStep(t, src, gd[1], 100, rng)
		}
		time.Sleep(time.Duration(rng.IntN(50)) * time.Millisecond)
	}
	writeRandom(t, src, []store.Disk{web}, 10, rng)
	waitAcked(t, src, sw, 60*time.Second)
	waitAcked(t, src, sg, 60*time.Second)
	waitMarks(t, src, dr.r, "web")
	waitMarks(t, src, dr.r, "g")
	sameHistory(t, src, dr.r, "web", 12, rng)
	sameHistory(t, src, dr.r, "g", 12, rng)

	for _, name := range []string{"web", "g1", "g2"} {
		d, err := dr.r.Disk(name)
		if err != nil {
			t.Fatal(err)
		}
		if d.Replica == nil || d.Replica.Source != "primary" {
			t.Errorf("replica disk %s: replica record %+v, want source primary", name, d.Replica)
		}
	}
	pts, _ := src.Points(web.Timeline, time.Unix(0, 0), time.Now().Add(time.Hour), 0)
	st := sw.Status()
	if st.Steps != uint64(len(pts)) || st.State != "caught-up" || st.LagSeconds != 0 || st.LagBytes != 0 || st.Reconnects != 0 {
		t.Errorf("web sender: %+v, want %d steps sent once, caught up", st, len(pts))
	}
	if st.ContentSent == 0 || st.ContentSent >= st.Blocks || st.WireBytes == 0 {
		t.Errorf("web sender: %d blocks, %d with content: zeros and repeats should cost no content", st.Blocks, st.ContentSent)
	}
	rs := dr.srv.Status()
	if len(rs) != 2 || rs[0].Name != "g" || rs[1].Name != "web" || rs[1].Source != "primary" || !rs[1].Connected ||
		rs[1].Steps != uint64(len(pts)) || !rs[1].Position.Equal(pts[len(pts)-1].Time) || rs[1].Seq != pts[len(pts)-1].Seq {
		t.Errorf("server status %+v, want web with %d steps up to %+v", rs, len(pts), pts[len(pts)-1])
	}
}

// TestReplicateCuts cuts the connection at random moments while the
// source writes: the replica ends identical, and the acknowledged
// positions strictly increase across all connections.
func TestReplicateCuts(t *testing.T) {
	rng := mrand.New(mrand.NewPCG(3, 4))
	dr := newSite(t, "dr", tokensFile(t, "primary "+testToken+" web,g"), nil)
	src, web, _, gd := sourceRepo(t)
	px := newProxy(t, dr.addr, 0)
	var mu sync.Mutex
	var acks []uint64
	tg := Target{Addr: px.addr(), CA: dr.ca.pem, Token: testToken}
	tune := func(s *Sender) {
		s.readTimeout = 2 * time.Second
		s.onAck = func(seq uint64, _ time.Time) {
			mu.Lock()
			acks = append(acks, seq)
			mu.Unlock()
		}
	}
	sw, _ := startSender(t, src, "web", tg, SendOptions{}, tune)
	sg, _ := startSender(t, src, "g", tg, SendOptions{}, nil)
	// The cutter cuts at random moments, 25 times; the source writes until
	// it is done.
	cutter := make(chan struct{})
	cuts := 0
	go func() {
		defer close(cutter)
		for ; cuts < 25; cuts++ {
			time.Sleep(time.Duration(50+rng.IntN(350)) * time.Millisecond)
			px.cut()
		}
	}()
	wrng := mrand.New(mrand.NewPCG(5, 6))
	for round := 0; ; round++ {
		select {
		case <-cutter:
		default:
			writeRandom(t, src, []store.Disk{web}, 20, wrng)
			writeRandom(t, src, gd, 10, wrng)
			if round%8 == 3 {
				importStep(t, src, web, 2500, wrng)
			}
			if round%5 == 0 {
				if _, err := src.AddBookmark(web, fmt.Sprintf("b%d", round), time.Now(), store.KindUser); err != nil {
					t.Fatal(err)
				}
			}
			time.Sleep(20 * time.Millisecond)
			continue
		}
		break
	}
	waitAcked(t, src, sw, 60*time.Second)
	waitAcked(t, src, sg, 60*time.Second)
	waitMarks(t, src, dr.r, "web")
	sameHistory(t, src, dr.r, "web", 12, rng)
	sameHistory(t, src, dr.r, "g", 10, rng)
	mu.Lock()
	defer mu.Unlock()
	if !slices.IsSorted(acks) || len(slices.Compact(slices.Clone(acks))) != len(acks) {
		t.Errorf("acknowledged positions do not strictly increase: %v", acks)
	}
	st := sw.Status()
	t.Logf("%d cuts, %d reconnects of web, %d acknowledgements, %d steps sent for %d", cuts, st.Reconnects, len(acks), st.Steps, src.Head())
	if st.Reconnects < 10 {
		t.Errorf("%d cuts and %d reconnects: the test did not cut enough", cuts, st.Reconnects)
	}
}

// TestReplicateEfficiency writes blocks of which 30% repeat content the
// target already holds: the bytes the proxy relays stay within 0.75 × the
// written content compressed (each block with zstd, as the test computes
// it), plus 5%.
func TestReplicateEfficiency(t *testing.T) {
	rng := mrand.New(mrand.NewPCG(11, 12))
	dr := newSite(t, "dr", tokensFile(t, "primary "+testToken+" web"), nil)
	src, d := repoWith(t, "web", 16<<20)
	px := newProxy(t, dr.addr, 0)
	tg := Target{Addr: px.addr(), CA: dr.ca.pem, Token: testToken}
	write := func(blk int, data []byte) {
		if err := src.CaptureAsync(d.Timeline, []store.BlockWrite{{Disk: d, Block: uint64(blk), Data: data}}); err != nil {
			t.Fatal(err)
		}
	}
	// What the target holds before: 800 blocks.
	held := make([][]byte, 800)
	for i := range held {
		held[i] = block(rng, d.BlockSize)
		write(i, held[i])
	}
	s, stop := startSender(t, src, "web", tg, SendOptions{}, nil)
	waitAcked(t, src, s, 60*time.Second)
	stop() // a new connection: the source knows nothing of what the target holds
	before := px.bytes.Load()

	enc, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	var written, fresh, dups int
	for i := range 2400 {
		data := block(rng, d.BlockSize)
		if rng.IntN(10) < 3 {
			data = held[rng.IntN(len(held))]
			dups++
		} else {
			fresh += len(enc.EncodeAll(data, nil))
		}
		written += len(enc.EncodeAll(data, nil))
		write(1000+i, data)
		if i%16 == 15 {
			if err := src.Sync(); err != nil {
				t.Fatal(err)
			}
		}
	}
	s, _ = startSender(t, src, "web", tg, SendOptions{}, nil)
	waitAcked(t, src, s, 60*time.Second)
	wire := px.bytes.Load() - before
	bound := 0.75 * float64(written) * 1.05
	st := s.Status()
	t.Logf("2400 blocks, %d repeating held content: wire %d bytes; written content compressed %d (wire %.3f×), new content compressed %d (wire %.3f×); content sent for %d blocks, %d bytes",
		dups, wire, written, float64(wire)/float64(written), fresh, float64(wire)/float64(fresh), st.ContentSent, st.ContentBytes)
	if float64(wire) > bound {
		t.Errorf("%d bytes crossed, more than 0.75 × %d + 5%% = %.0f", wire, written, bound)
	}
	if st.ContentSent != uint64(2400-dups) {
		t.Errorf("content of %d blocks sent, want the %d new ones", st.ContentSent, 2400-dups)
	}
	sameHistory(t, src, dr.r, "web", 3, rng)
}
