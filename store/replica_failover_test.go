package store

import (
	"bytes"
	"context"
	"errors"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
)

// repState is what a refused ApplySteps must leave as it was.
type repState struct {
	head   uint64
	points []Point
	image  []byte
}

func stateOf(t *testing.T, r *Repo, d Disk) repState {
	t.Helper()
	return repState{head: r.Head(), points: repPoints(t, r, d.Timeline), image: readAll(t, r, d, r.Head())}
}

func seedBlock(seed uint64) []byte {
	rng := xorshift(seed)
	out := make([]byte, 4096)
	for i := range out {
		out[i] = byte(rng())
	}
	return out
}

func xorshift(seed uint64) func() uint64 {
	x := seed*0x9e3779b97f4a7c15 + 1
	return func() uint64 { x ^= x << 13; x ^= x >> 7; x ^= x << 17; return x }
}

// TestReplicaApplyRefusals: content whose hash differs, content that is no
// zstd frame, content too large (raw or compressed), a zstd frame that
// decodes to far more than a block, content sent by hash that is not held
// (or held only by a later block), a time not after the newest (also as the
// second step of a call), no time at all, a block outside the disk: each is
// refused with its error, and nothing of the call is journaled, not even
// after a crash that replays the log.
func TestReplicaApplyRefusals(t *testing.T) {
	dir, r := newRepo(t)
	tl, disks, err := r.CreateReplica("web", "site-a", false, []DiskSpec{{Name: "web", Size: 16 * 4096, BlockSize: 4096}})
	if err != nil {
		t.Fatal(err)
	}
	d := disks[0]
	// Segments this small rotate often: what a refused call appended
	// reaches the file, as it would under a heavier stream.
	r.segs.limit = 64 << 10
	t0 := time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)
	raw := func(b uint64, data []byte) IncomingBlock {
		return IncomingBlock{Disk: d, Block: b, Hash: HashBlock(data), Stored: data}
	}
	held := seedBlock(1)
	if err := r.ApplySteps(tl, []IncomingStep{{Time: t0, Blocks: []IncomingBlock{raw(0, held), raw(1, seedBlock(2))}}}); err != nil {
		t.Fatal(err)
	}
	if err := r.Sync(); err != nil {
		t.Fatal(err)
	}
	good := func(i int) IncomingStep {
		return IncomingStep{Time: t0.Add(time.Duration(i) * time.Second), Blocks: []IncomingBlock{raw(2, seedBlock(uint64(100+i)))}}
	}
	enc, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	bomb := enc.EncodeAll(make([]byte, 32<<20), nil) // 32 MiB of zeros
	other, missing := seedBlock(3), seedBlock(4)
	padded := enc.EncodeAll(other, nil) // a valid frame, larger than the block
	enc.Close()
	if len(bomb) >= 4096 {
		t.Fatalf("the bomb takes %d bytes: no smaller than a block", len(bomb))
	}
	cases := []struct {
		name  string
		steps []IncomingStep
		want  error
	}{
		{"hash differs", []IncomingStep{good(1), {Time: t0.Add(2 * time.Second), Blocks: []IncomingBlock{{Disk: d, Block: 3, Hash: HashBlock(other), Stored: seedBlock(5)}}}}, ErrBadContent},
		{"no zstd frame", []IncomingStep{good(1), {Time: t0.Add(2 * time.Second), Blocks: []IncomingBlock{{Disk: d, Block: 3, Hash: HashBlock(other), Stored: other[:900], Zstd: true}}}}, ErrBadContent},
		{"raw of another size", []IncomingStep{{Time: t0.Add(2 * time.Second), Blocks: []IncomingBlock{{Disk: d, Block: 3, Hash: HashBlock(other), Stored: append(slices.Clone(other), 0)}}}}, ErrBadContent},
		{"compressed no smaller than a block", []IncomingStep{{Time: t0.Add(2 * time.Second), Blocks: []IncomingBlock{{Disk: d, Block: 3, Hash: HashBlock(other), Stored: padded, Zstd: true}}}}, ErrBadContent},
		{"oversized", []IncomingStep{{Time: t0.Add(2 * time.Second), Blocks: []IncomingBlock{{Disk: d, Block: 3, Hash: HashBlock(other), Stored: make([]byte, maxStored+1), Zstd: true}}}}, ErrBadContent},
		{"zstd bomb", []IncomingStep{good(1), {Time: t0.Add(2 * time.Second), Blocks: []IncomingBlock{{Disk: d, Block: 3, Hash: HashBlock(other), Stored: bomb, Zstd: true}}}}, ErrBadContent},
		{"not held", []IncomingStep{good(1), {Time: t0.Add(2 * time.Second), Blocks: []IncomingBlock{{Disk: d, Block: 3, Hash: HashBlock(missing)}}}}, ErrMissingContent},
		{"held only by a later block", []IncomingStep{{Time: t0.Add(2 * time.Second), Blocks: []IncomingBlock{{Disk: d, Block: 3, Hash: HashBlock(missing)}, raw(4, missing)}}}, ErrMissingContent},
		{"time of the newest", []IncomingStep{{Time: t0, Blocks: []IncomingBlock{raw(3, held)}}}, ErrTimeOrder},
		{"second step before the first", []IncomingStep{good(5), good(4)}, ErrTimeOrder},
		{"no time", []IncomingStep{{Blocks: []IncomingBlock{raw(3, held)}}}, ErrTimeOrder},
		{"outside the disk", []IncomingStep{good(1), {Time: t0.Add(2 * time.Second), Blocks: []IncomingBlock{raw(16, other)}}}, ErrOutOfRange},
	}
	before := stateOf(t, r, d)
	for _, c := range cases {
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		alloc := ms.TotalAlloc
		err := r.ApplySteps(tl, c.steps)
		runtime.ReadMemStats(&ms)
		if !errors.Is(err, c.want) {
			t.Fatalf("%s: %v, want %v", c.name, err, c.want)
		}
		if n := ms.TotalAlloc - alloc; n > 16<<20 {
			t.Fatalf("%s: refusing it allocated %d MiB", c.name, n>>20)
		}
		if after := stateOf(t, r, d); after.head != before.head || !slices.Equal(after.points, before.points) || !bytes.Equal(after.image, before.image) {
			t.Fatalf("%s: refused, yet the journal changed: head %d → %d, %d → %d points", c.name, before.head, after.head, len(before.points), len(after.points))
		}
		t.Logf("%s: %v", c.name, err)
	}
	// Good steps still apply after every refusal; then a crash loses the
	// unsynced ones, and the log replays nothing that was refused.
	for i := 1; i < 40; i++ {
		if err := r.ApplySteps(tl, []IncomingStep{good(i)}); err != nil {
			t.Fatal(err)
		}
	}
	crash(r)
	r = reopen(t, dir)
	pts := repPoints(t, r, tl)
	for i, p := range pts[1:] {
		if !p.Time.Equal(good(i + 1).Time) {
			t.Fatalf("after the crash point %d is at %v, not at good step %d's time", i+1, p.Time, i+1)
		}
		if got := readAll(t, r, d, p.Seq)[2*4096 : 3*4096]; !bytes.Equal(got, seedBlock(uint64(101+i))) {
			t.Fatalf("after the crash block 2 at point %d is not good step %d's", i+1, i+1)
		}
	}
	verifyClean(t, r)
}

// TestReplicaApplyRepeatedContent: content sent once in a call serves the
// blocks after it that name it by hash alone, in the same step and in later
// steps of the call; nothing is stored twice.
func TestReplicaApplyRepeatedContent(t *testing.T) {
	_, r := newRepo(t)
	tl, disks, err := r.CreateReplica("web", "site-a", false, []DiskSpec{{Name: "web", Size: 8 * 4096, BlockSize: 4096}})
	if err != nil {
		t.Fatal(err)
	}
	d, a, b := disks[0], seedBlock(7), seedBlock(8)
	t0 := time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)
	steps := []IncomingStep{
		{Time: t0, Blocks: []IncomingBlock{{Disk: d, Block: 0, Hash: HashBlock(a), Stored: a}, {Disk: d, Block: 1, Hash: HashBlock(a)}}},
		{Time: t0.Add(time.Second), Blocks: []IncomingBlock{{Disk: d, Block: 2, Hash: HashBlock(a)}, {Disk: d, Block: 3, Hash: HashBlock(b), Stored: b}}},
		{Time: t0.Add(2 * time.Second), Blocks: []IncomingBlock{{Disk: d, Block: 4, Hash: HashBlock(b)}}},
	}
	if err := r.ApplySteps(tl, steps); err != nil {
		t.Fatal(err)
	}
	if err := r.Sync(); err != nil {
		t.Fatal(err)
	}
	want := slices.Concat(a, a, a, b, b, make([]byte, 3*4096))
	if !bytes.Equal(readAll(t, r, d, r.Head()), want) {
		t.Fatal("the image is not the blocks sent")
	}
	if n := storedBytes(t, r); n != 2*4096 {
		t.Fatalf("%d bytes stored for two blocks of content", n)
	}
	verifyClean(t, r)
}

// TestReplicaIncomingParts: a step in parts sees the content of its earlier
// parts and of the repository without waiting for the writer it holds; a
// part after the step ended is refused, not journaled.
func TestReplicaIncomingParts(t *testing.T) {
	_, r := newRepo(t)
	tl, disks, err := r.CreateReplica("web", "site-a", false, []DiskSpec{{Name: "web", Size: 8 * 4096, BlockSize: 4096}})
	if err != nil {
		t.Fatal(err)
	}
	d, a, b, c := disks[0], seedBlock(11), seedBlock(12), seedBlock(13)
	t0 := time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)
	if err := r.ApplySteps(tl, []IncomingStep{{Time: t0, Blocks: []IncomingBlock{{Disk: d, Block: 0, Hash: HashBlock(a), Stored: a}}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.BeginIncoming(tl, time.Time{}); !errors.Is(err, ErrTimeOrder) {
		t.Fatalf("a step without a time: %v", err)
	}
	p, err := r.BeginIncoming(tl, t0.Add(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Put([]IncomingBlock{{Disk: d, Block: 1, Hash: HashBlock(b), Stored: b}}); err != nil {
		t.Fatal(err)
	}
	have := make([]bool, 3)
	done := make(chan error, 1)
	go func() { done <- p.HasContent([]Hash{HashBlock(a), HashBlock(b), HashBlock(c)}, have) }()
	select {
	case err := <-done:
		if err != nil || !have[0] || !have[1] || have[2] {
			t.Fatalf("the part holds %v (%v), want true true false", have, err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("asking the part what it holds waits for the writer the part holds")
	}
	if err := p.Put([]IncomingBlock{{Disk: d, Block: 2, Hash: HashBlock(b)}, {Disk: d, Block: 3, Hash: HashBlock(a)}}); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := p.Put([]IncomingBlock{{Disk: d, Block: 4, Hash: HashBlock(a)}}); err == nil {
		t.Fatal("a part after Commit was taken")
	}
	if err := p.HasContent([]Hash{HashBlock(a)}, have[:1]); err == nil {
		t.Fatal("a part after Commit answered")
	}
	if want := slices.Concat(a, b, b, a, make([]byte, 4*4096)); !bytes.Equal(readAll(t, r, d, r.Head()), want) {
		t.Fatal("the image is not the parts sent")
	}
	if pts := repPoints(t, r, tl); len(pts) != 2 || pts[1].Blocks != 3 {
		t.Fatalf("points %+v, want the step of 3 blocks last", pts)
	}
}

// TestReplicaDurableWait: applied steps are durable after Sync, and
// DurableWait returns exactly then.
func TestReplicaDurableWait(t *testing.T) {
	_, r := newRepo(t)
	tl, disks, err := r.CreateReplica("web", "site-a", false, []DiskSpec{{Name: "web", Size: 8 * 4096, BlockSize: 4096}})
	if err != nil {
		t.Fatal(err)
	}
	a := seedBlock(21)
	before := r.Durable()
	if err := r.ApplySteps(tl, []IncomingStep{{Time: time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC), Blocks: []IncomingBlock{{Disk: disks[0], Block: 0, Hash: HashBlock(a), Stored: a}}}}); err != nil {
		t.Fatal(err)
	}
	if r.Durable() != before || r.Head() != before+1 {
		t.Fatalf("durable %d, head %d after an unsynced step past %d", r.Durable(), r.Head(), before)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := r.DurableWait(ctx, before); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("DurableWait before Sync: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- r.DurableWait(context.Background(), before) }()
	time.Sleep(20 * time.Millisecond)
	if err := r.Sync(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil || r.Durable() != r.Head() {
			t.Fatalf("DurableWait: %v, durable %d head %d", err, r.Durable(), r.Head())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("DurableWait did not return after Sync")
	}
}

// TestCreateReplicaRefusals: an existing replica is found again; one of
// another source, of other geometry, a writable disk of the name, specs
// naming a disk twice, or a lone disk's spec of another name are refused.
func TestCreateReplicaRefusals(t *testing.T) {
	_, r := newRepo(t)
	spec := DiskSpec{Name: "web", Size: 8 * 4096, BlockSize: 4096}
	tl, disks, err := r.CreateReplica("web", "site-a", false, []DiskSpec{spec})
	if err != nil {
		t.Fatal(err)
	}
	if tl2, disks2, err := r.CreateReplica("web", "site-a", false, []DiskSpec{spec}); err != nil || tl2 != tl || disks2[0].ID != disks[0].ID {
		t.Fatalf("the existing replica again: %v", err)
	}
	if _, _, err := r.CreateReplica("web", "site-b", false, []DiskSpec{spec}); !errors.Is(err, ErrNotReplica) {
		t.Fatalf("another source: %v", err)
	}
	if _, _, err := r.CreateReplica("web", "site-a", false, []DiskSpec{{Name: "web", Size: 16 * 4096, BlockSize: 4096}}); !errors.Is(err, ErrNotReplica) {
		t.Fatalf("other geometry: %v", err)
	}
	if _, err := r.CreateDisk("mine", 8*4096, 4096); err != nil {
		t.Fatal(err)
	}
	if _, _, err := r.CreateReplica("mine", "site-a", false, []DiskSpec{{Name: "mine", Size: 8 * 4096, BlockSize: 4096}}); !errors.Is(err, ErrNotReplica) {
		t.Fatalf("a writable disk: %v", err)
	}
	if _, _, err := r.CreateReplica("x", "site-a", false, []DiskSpec{spec}); err == nil {
		t.Fatal("a lone disk's spec of another name was taken")
	}
	two := []DiskSpec{{Name: "g0", Size: 4096, BlockSize: 4096}, {Name: "g0", Size: 4096, BlockSize: 4096}}
	if _, _, err := r.CreateReplica("g", "site-a", true, two); err == nil {
		t.Fatal("a group naming one disk twice was created")
	}
	if _, _, err := r.CreateReplica("h", "site-a", true, []DiskSpec{{Name: "h", Size: 4096, BlockSize: 4096}}); err == nil {
		t.Fatal("a group with a disk of its own name was created")
	}
	if _, err := r.Disk("g0"); !errors.Is(err, ErrUnknownDisk) {
		t.Fatalf("a refused group left disk g0: %v", err)
	}
}

// TestReplicaFailoverClockAhead: a replica whose source's clock runs ahead
// of this site's fails over all the same, with its handover bookmark, and
// takes writes after it.
func TestReplicaFailoverClockAhead(t *testing.T) {
	_, r := newRepo(t)
	tl, disks, err := r.CreateReplica("web", "site-a", false, []DiskSpec{{Name: "web", Size: 8 * 4096, BlockSize: 4096}})
	if err != nil {
		t.Fatal(err)
	}
	a := seedBlock(31)
	ahead := time.Now().Add(time.Hour).UTC()
	if err := r.ApplySteps(tl, []IncomingStep{{Time: ahead, Blocks: []IncomingBlock{{Disk: disks[0], Block: 0, Hash: HashBlock(a), Stored: a}}}}); err != nil {
		t.Fatal(err)
	}
	h, err := r.Failover("web")
	if err != nil {
		t.Fatalf("failover: %v", err)
	}
	if !h.Diverged.Equal(ahead) || !h.At.After(ahead) {
		t.Fatalf("handover %+v after a point at %v", h, ahead)
	}
	d := mustDisk(t, r, "web")
	if d.Replica != nil || d.Handover == nil || !d.Handover.At.Equal(h.At) {
		t.Fatalf("after failover the disk is %+v", d)
	}
	bm, err := r.Bookmark(d, "failover-"+stamp(h.At))
	if err != nil || !bm.Time.Equal(h.At) {
		t.Fatalf("handover bookmark %+v: %v", bm, err)
	}
	if _, err := r.Failover("web"); !errors.Is(err, ErrNotReplica) {
		t.Fatalf("a second failover: %v", err)
	}
	if err := r.CaptureAsync(d.Timeline, []BlockWrite{{Disk: d, Block: 1, Data: a}}); err != nil {
		t.Fatal(err)
	}
	if err := r.Sync(); err != nil {
		t.Fatal(err)
	}
	if p, err := r.LastPoint(tl); err != nil || !p.Time.After(h.At) {
		t.Fatalf("the write after failover is at %v (%v), not after %v", p.Time, err, h.At)
	}
	if _, err := r.CreateGroup("empty", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Failover("empty"); err == nil {
		t.Fatal("an empty group failed over")
	}
	if err := r.AcceptFailback(context.Background(), "empty", "site-b", ahead, ahead.Add(time.Second)); err == nil {
		t.Fatal("an empty group accepted a failback")
	}
}

// TestReplicaFailoverFailback: site A replicates a lone disk and a group to
// B and writes a tail B never gets; B fails over and writes; A refuses a
// failback from a point it lacks or to a time before its own writes, then
// accepts it (beside captures to another of its disks) so that its image
// at the handover is its image at the divergence; B's writes since then
// stream to A, and only they, and both sites end with equal images.
func TestReplicaFailoverFailback(t *testing.T) {
	_, a := newRepo(t)
	_, b := newRepo(t)
	g := newRepGen(6)
	other, err := a.CreateDisk("other", 8*4096, 4096)
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range []*replTL{newReplTL(t, a, "web", 24*4096), newReplTL(t, a, "db", 16*4096, 16*4096)} {
		x.writeSteps(t, a, g, 40)
		ab := newRepSender(t, a, b, x, "site-a")
		if err := ab.run(-1); err != nil {
			t.Fatal(err)
		}
		if err := b.Sync(); err != nil {
			t.Fatal(err)
		}
		ab.check()
		x.writeSteps(t, a, g, 10) // A's tail: never replicated
		time.Sleep(time.Millisecond)

		h, err := b.Failover(x.name)
		if err != nil {
			t.Fatal(err)
		}
		if !h.Diverged.Equal(repPoints(t, a, x.tl)[39].Time) || h.Source != "site-a" || !h.At.After(h.Diverged) {
			t.Fatalf("handover %+v", h)
		}
		_, bdisks, _ := b.Members(x.name)
		for _, d := range bdisks {
			if d.Replica != nil || d.Handover == nil || !sameHandover(*d.Handover, h) {
				t.Fatalf("%s on B after failover: %+v", d.Name, d)
			}
		}
		if x.group {
			if grp, err := b.Group(x.name); err != nil || grp.Replica != nil || grp.Handover == nil {
				t.Fatalf("group on B after failover: %+v %v", grp, err)
			}
		}
		// B's own writes, modelled on from the shared history.
		bx := &replTL{name: x.name, group: x.group, tl: ab.dtl, disks: bdisks, steps: slices.Clone(x.steps[:40])}
		bx.writeSteps(t, b, g, 15)

		ctx := context.Background()
		before := repPoints(t, a, x.tl)
		if err := a.AcceptFailback(ctx, x.name, "site-b", h.Diverged.Add(time.Nanosecond), h.At); !errors.Is(err, ErrNotReplica) {
			t.Fatalf("failback from a point A lacks: %v", err)
		}
		// Another protected disk of A goes on being written, beside the
		// refusals and the failback: they read what its writes change.
		stop := make(chan struct{})
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				if err := a.CaptureAsync(other.Timeline, []BlockWrite{{Disk: other, Block: uint64(i % 8), Data: block(byte(i))}}); err != nil {
					t.Error(err)
					return
				}
				time.Sleep(50 * time.Microsecond)
			}
		}()
		for range 200 {
			if err := a.AcceptFailback(ctx, x.name, "site-b", h.Diverged, before[len(before)-1].Time); !errors.Is(err, ErrTimeOrder) {
				t.Fatalf("failback to a time before A's last write: %v", err)
			}
		}
		if after := repPoints(t, a, x.tl); !slices.Equal(after, before) || mustDisk(t, a, x.disks[0].Name).Replica != nil {
			t.Fatal("a refused failback changed A")
		}
		err = a.AcceptFailback(ctx, x.name, "site-b", h.Diverged, h.At)
		close(stop)
		wg.Wait()
		if err != nil {
			t.Fatal(err)
		}
		_, adisks, _ := a.Members(x.name)
		for _, d := range adisks {
			if d.Replica == nil || d.Replica.Source != "site-b" || d.Handover != nil {
				t.Fatalf("%s on A after accepting the failback: %+v", d.Name, d)
			}
		}
		p, err := a.PointAt(x.tl, h.At)
		if err != nil || !p.Time.Equal(h.At) {
			t.Fatalf("A's point at the handover: %+v %v", p, err)
		}
		bm, err := a.Bookmark(adisks[0], "failback-"+stamp(h.At))
		if err != nil || !bm.Time.Equal(before[len(before)-1].Time) {
			t.Fatalf("A's bookmark of its head before the failback: %+v %v", bm, err)
		}
		for di, d := range adisks {
			if !bytes.Equal(readAll(t, a, d, p.Seq), x.image(di, 39)) {
				t.Fatalf("%s on A at the handover is not its image at the divergence", d.Name)
			}
			if !bytes.Equal(readAll(t, a, d, bm.Seq), x.image(di, 49)) {
				t.Fatalf("%s on A at its failback bookmark is not its last image", d.Name)
			}
		}
		accepted := repPoints(t, a, x.tl)
		if err := a.AcceptFailback(ctx, x.name, "site-b", h.Diverged, h.At); err != nil || !slices.Equal(repPoints(t, a, x.tl), accepted) {
			t.Fatalf("accepting the failback again: %v", err)
		}

		ba := newRepSender(t, b, a, bx, "site-b")
		if err := ba.run(-1); err != nil {
			t.Fatal(err)
		}
		if err := a.Sync(); err != nil {
			t.Fatal(err)
		}
		written := 0
		for _, w := range bx.steps[40:] {
			written += len(w)
		}
		if ba.blocks != written {
			t.Fatalf("failback sent %d blocks; B wrote %d since the divergence", ba.blocks, written)
		}
		ap := repPoints(t, a, x.tl)
		for _, bp := range repPoints(t, b, bx.tl)[40:] {
			i := slices.IndexFunc(ap, func(p Point) bool { return p.Time.Equal(bp.Time) })
			if i < 0 {
				t.Fatalf("A lacks B's point %v", bp.Time)
			}
			for di := range bdisks {
				want := bx.image(di, bx.at[bp.Time])
				if !bytes.Equal(readAll(t, b, bdisks[di], bp.Seq), want) || !bytes.Equal(readAll(t, a, adisks[di], ap[i].Seq), want) {
					t.Fatalf("%s at %v differs between the sites", bdisks[di].Name, bp.Time)
				}
			}
		}
		verifyClean(t, a)
	}
}

func sameHandover(a, b Handover) bool {
	return a.Source == b.Source && a.Diverged.Equal(b.Diverged) && a.At.Equal(b.At)
}

// TestReplicaFailbackBesideQueuedWrites: writes still queued when the
// failback is accepted (the other site's clock ahead, so they come before
// its handover) are reverted with the rest: the image at the handover is
// the image at the divergence, and the failback bookmark shows them.
func TestReplicaFailbackBesideQueuedWrites(t *testing.T) {
	_, r := newRepo(t)
	g := newRepGen(8)
	x := newReplTL(t, r, "web", 64*4096)
	x.writeSteps(t, r, g, 20)
	diverged := repPoints(t, r, x.tl)[19].Time
	for range 300 {
		x.capture(t, r, g)
	}
	at := time.Now().Add(time.Hour).UTC()
	if err := r.AcceptFailback(context.Background(), "web", "site-b", diverged, at); err != nil {
		t.Fatal(err)
	}
	p, err := r.PointAt(x.tl, at)
	if err != nil || !p.Time.Equal(at) {
		t.Fatalf("the point at the handover: %+v %v", p, err)
	}
	if !bytes.Equal(readAll(t, r, x.disks[0], p.Seq), x.image(0, 19)) {
		t.Fatal("the image at the handover is not the image at the divergence: queued writes escaped the revert")
	}
	bm, err := r.Bookmark(x.disks[0], "failback-"+stamp(at))
	if err != nil || !bytes.Equal(readAll(t, r, x.disks[0], bm.Seq), x.image(0, 319)) {
		t.Fatalf("the failback bookmark does not show the last write (%v)", err)
	}
}
