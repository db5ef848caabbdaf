package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// The replication tests stream a source repository's timelines into a
// second repository with StreamAfter, StoredContent, HasContent and
// ApplySteps (or IncomingPart), as cdp/replica does, and check both against
// an independent model: the writes of each step, in order.

// replTL is a timeline of a repository (a lone disk or a group) and the
// model of what was written to it.
type replTL struct {
	name  string
	group bool
	tl    uint32
	disks []Disk
	steps []map[repKey][]byte // each step's writes: (disk index, block) → content
	at    map[time.Time]int   // point time → step index, once learnt
}

type repKey struct {
	disk  int
	block uint64
}

// newReplTL creates a lone disk (one size) or a group of disks name0, name1…
func newReplTL(t *testing.T, r *Repo, name string, sizes ...int64) *replTL {
	t.Helper()
	x := &replTL{name: name, group: len(sizes) > 1}
	if !x.group {
		d, err := r.CreateDisk(name, sizes[0], 4096)
		if err != nil {
			t.Fatal(err)
		}
		x.tl, x.disks = d.Timeline, []Disk{d}
		return x
	}
	var names []string
	for i, s := range sizes {
		n := fmt.Sprintf("%s%d", name, i)
		if _, err := r.CreateDisk(n, s, 4096); err != nil {
			t.Fatal(err)
		}
		names = append(names, n)
	}
	if _, err := r.CreateGroup(name, names); err != nil {
		t.Fatal(err)
	}
	var err error
	if x.tl, x.disks, err = r.Members(name); err != nil {
		t.Fatal(err)
	}
	return x
}

// repGen makes block content: zeros (nil), a repeat of earlier content,
// compressible (stored zstd) or random (stored raw).
type repGen struct {
	rng  *rand.Rand
	pool [][]byte
}

func newRepGen(seed uint64) *repGen { return &repGen{rng: rand.New(rand.NewPCG(seed, 19))} }

func (g *repGen) next(n int) []byte {
	k := g.rng.IntN(8)
	if k == 0 {
		return nil
	}
	if k <= 2 && len(g.pool) > 0 {
		return g.pool[g.rng.IntN(len(g.pool))]
	}
	data := make([]byte, n)
	if k <= 4 {
		s := g.rng.IntN(1 << 20)
		for j := range data {
			data[j] = byte('a' + (j/64+s)%23)
		}
		data[0] = byte(s)
	} else {
		for j := range data {
			data[j] = byte(g.rng.Uint32())
		}
	}
	g.pool = append(g.pool, data)
	return data
}

// capture queues one step of 1-4 blocks anywhere on the timeline's disks.
func (x *replTL) capture(t *testing.T, r *Repo, g *repGen) {
	t.Helper()
	var ws []BlockWrite
	w := map[repKey][]byte{}
	for range 1 + g.rng.IntN(4) {
		di := g.rng.IntN(len(x.disks))
		d := x.disks[di]
		k := repKey{di, uint64(g.rng.IntN(int(d.Blocks())))}
		if _, ok := w[k]; ok {
			continue
		}
		data := g.next(d.BlockSize)
		ws = append(ws, BlockWrite{Disk: d, Block: k.block, Data: data})
		w[k] = orZeros(data, d.BlockSize)
	}
	if err := r.CaptureAsync(x.tl, ws); err != nil {
		t.Fatal(err)
	}
	x.steps = append(x.steps, w)
}

// importAll journals every block of every disk as one step (Begin, Put, Commit).
func (x *replTL) importAll(t *testing.T, r *Repo, g *repGen) {
	t.Helper()
	st, err := r.Begin(x.tl, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	w := map[repKey][]byte{}
	for di, d := range x.disks {
		for b := range d.Blocks() {
			data := orZeros(g.next(d.BlockSize), d.BlockSize)
			if err := st.Put(d, b, data); err != nil {
				t.Fatal(err)
			}
			w[repKey{di, b}] = data
		}
	}
	if _, err := st.Commit(); err != nil {
		t.Fatal(err)
	}
	x.steps = append(x.steps, w)
}

func orZeros(data []byte, n int) []byte {
	if data == nil {
		return make([]byte, n)
	}
	return data
}

// learn maps the timeline's points to the model's steps: one point per step.
func (x *replTL) learn(t *testing.T, r *Repo) {
	t.Helper()
	pts := repPoints(t, r, x.tl)
	if len(pts) != len(x.steps) {
		t.Fatalf("%s has %d points for %d steps written", x.name, len(pts), len(x.steps))
	}
	x.at = map[time.Time]int{}
	for i, p := range pts {
		x.at[p.Time] = i
	}
}

// writeSteps captures n steps, syncs them and learns their points.
func (x *replTL) writeSteps(t *testing.T, r *Repo, g *repGen, n int) {
	t.Helper()
	for range n {
		x.capture(t, r, g)
	}
	if err := r.Sync(); err != nil {
		t.Fatal(err)
	}
	x.learn(t, r)
}

// image is disk di as the model has it after step k.
func (x *replTL) image(di, k int) []byte {
	d := x.disks[di]
	img := make([]byte, d.Size)
	for _, w := range x.steps[:k+1] {
		for key, data := range w {
			if key.disk == di {
				copy(img[int64(key.block)*int64(d.BlockSize):], data)
			}
		}
	}
	return img
}

// repPoints lists every point of timeline tl, oldest first.
func repPoints(t *testing.T, r *Repo, tl uint32) []Point {
	t.Helper()
	var pts []Point
	if err := r.scan(pointPrefix(tl), func(k, v []byte) error {
		p, err := decodePoint(k, v)
		pts = append(pts, p)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return pts
}

// repSender replicates timeline x of src into dst as cdp/replica does:
// it asks which content dst lacks, one batch of steps at a time, and sends
// each missing content once per batch.
type repSender struct {
	t        *testing.T
	src, dst *Repo
	x        *replTL
	dtl      uint32
	ddisks   []Disk
	idx      map[uint32]int // source disk ID → index
	batch    int            // steps per ApplySteps
	part     int            // a step of more blocks goes through IncomingPart in parts of this many
	onStep   func(n int)    // called as the stream gives its step n (from 0)
	counts   bool           // check block counts of points too
	content  int            // blocks whose content was sent
	moved    int            // of them, content gc moved since its version was written
	blocks   int            // blocks sent
}

func newRepSender(t *testing.T, src, dst *Repo, x *replTL, source string) *repSender {
	t.Helper()
	specs := make([]DiskSpec, len(x.disks))
	s := &repSender{t: t, src: src, dst: dst, x: x, idx: map[uint32]int{}, batch: 4, part: 1 << 30, counts: true}
	for i, d := range x.disks {
		specs[i] = DiskSpec{Name: d.Name, Size: d.Size, BlockSize: d.BlockSize}
		s.idx[d.ID] = i
	}
	var err error
	if s.dtl, s.ddisks, err = dst.CreateReplica(x.name, source, x.group, specs); err != nil {
		t.Fatal(err)
	}
	return s
}

type repStep struct {
	point  Point
	blocks []StreamBlock
	marks  []Bookmark
}

var errRepStop = errors.New("test: stream stopped")

// run streams what src holds durable after dst's position, stopping with
// errRepStop once stop steps were taken (stop < 0: at the end). Steps taken
// are applied; dst is not synced.
func (s *repSender) run(stop int) error {
	after, err := s.dst.ReplicaPosition(s.dtl)
	if err != nil {
		return err
	}
	var pending []repStep
	n := 0
	err = s.src.StreamAfter(context.Background(), s.x.tl, after, s.src.Durable(), func(st *StreamStep) error {
		if n == stop {
			return errRepStop
		}
		if s.onStep != nil {
			s.onStep(n)
		}
		n++
		rs := repStep{point: st.Point, blocks: slices.Clone(st.Blocks), marks: slices.Clone(st.Bookmarks)}
		if len(rs.blocks) > s.part {
			err := s.apply(pending)
			pending = nil
			return errors.Join(err, s.applyParts(rs))
		}
		pending = append(pending, rs)
		if len(pending) < s.batch {
			return nil
		}
		err := s.apply(pending)
		pending = nil
		return err
	})
	return errors.Join(err, s.apply(pending))
}

// missing asks has which distinct content of blocks it lacks.
func (s *repSender) missing(blocks []StreamBlock, has func([]Hash, []bool) error) map[Hash]bool {
	var hs []Hash
	seen := map[Hash]bool{}
	for _, b := range blocks {
		if b.Hash != (Hash{}) && !seen[b.Hash] {
			seen[b.Hash] = true
			hs = append(hs, b.Hash)
		}
	}
	have := make([]bool, len(hs))
	if err := has(hs, have); err != nil {
		s.t.Fatal(err)
	}
	out := map[Hash]bool{}
	for i, h := range hs {
		if !have[i] {
			out[h] = true
		}
	}
	return out
}

// incoming turns blocks into what is sent: content only for the first
// block of each content in missing.
func (s *repSender) incoming(blocks []StreamBlock, missing map[Hash]bool) []IncomingBlock {
	out := make([]IncomingBlock, len(blocks))
	for i, b := range blocks {
		d := s.ddisks[s.idx[b.Disk]]
		out[i] = IncomingBlock{Disk: d, Block: b.Block, Hash: b.Hash}
		if missing[b.Hash] {
			var err error
			if out[i].Stored, out[i].Zstd, err = s.src.StoredContent(b, d.BlockSize); err != nil {
				s.t.Fatal(err)
			}
			delete(missing, b.Hash)
			s.content++
			if s.src.isRetired(b.loc.seg) {
				s.moved++
			}
		}
		s.blocks++
	}
	return out
}

func (s *repSender) apply(steps []repStep) error {
	if len(steps) == 0 {
		return nil
	}
	var all []StreamBlock
	for _, st := range steps {
		all = append(all, st.blocks...)
	}
	missing := s.missing(all, s.dst.HasContent)
	in := make([]IncomingStep, len(steps))
	for i, st := range steps {
		in[i] = IncomingStep{Time: st.point.Time, Blocks: s.incoming(st.blocks, missing)}
	}
	if err := s.dst.ApplySteps(s.dtl, in); err != nil {
		return err
	}
	return s.mark(steps)
}

func (s *repSender) applyParts(st repStep) error {
	p, err := s.dst.BeginIncoming(s.dtl, st.point.Time)
	if err != nil {
		return err
	}
	for off := 0; off < len(st.blocks); off += s.part {
		part := st.blocks[off:min(off+s.part, len(st.blocks))]
		if err := p.Put(s.incoming(part, s.missing(part, p.HasContent))); err != nil {
			p.Abort()
			return err
		}
	}
	if _, err := p.Commit(); err != nil {
		return err
	}
	return s.mark([]repStep{st})
}

func (s *repSender) mark(steps []repStep) error {
	for _, st := range steps {
		for _, bm := range st.marks {
			if _, err := s.dst.Mark(s.ddisks[0], Bookmark{Name: bm.Name, Time: bm.Time, Kind: bm.Kind, Files: bm.Files, Pinned: bm.Pinned}); err != nil {
				return err
			}
		}
	}
	return nil
}

// check compares the replica with the source at every point of the source,
// both with the model, and their bookmarks.
func (s *repSender) check() {
	s.t.Helper()
	sp := repPoints(s.t, s.src, s.x.tl)
	s.checkPrefix(len(sp))
	sb, err := s.src.Bookmarks(s.x.disks[0])
	if err != nil {
		s.t.Fatal(err)
	}
	db, err := s.dst.Bookmarks(s.ddisks[0])
	if err != nil {
		s.t.Fatal(err)
	}
	if len(sb) != len(db) {
		s.t.Fatalf("%s: the replica has %d bookmarks, the source %d", s.x.name, len(db), len(sb))
	}
	for i := range sb {
		a, b := sb[i], db[i]
		if a.Name != b.Name || !a.Time.Equal(b.Time) || a.Kind != b.Kind || a.Pinned != b.Pinned || fmt.Sprint(a.Files) != fmt.Sprint(b.Files) {
			s.t.Fatalf("%s: bookmark %+v on the replica, %+v on the source", s.x.name, b, a)
		}
	}
}

// checkPrefix checks that the replica's points are the source's first n,
// each showing what the source and the model show.
func (s *repSender) checkPrefix(n int) {
	s.t.Helper()
	sp, dp := repPoints(s.t, s.src, s.x.tl), repPoints(s.t, s.dst, s.dtl)
	if len(dp) != n {
		s.t.Fatalf("%s: the replica has %d points, want the source's first %d of %d", s.x.name, len(dp), n, len(sp))
	}
	for i, p := range dp {
		if !p.Time.Equal(sp[i].Time) || (s.counts && p.Blocks != sp[i].Blocks) {
			s.t.Fatalf("%s: point %d is %v (%d blocks) on the replica, %v (%d blocks) on the source", s.x.name, i, p.Time, p.Blocks, sp[i].Time, sp[i].Blocks)
		}
		k, ok := s.x.at[p.Time]
		if !ok {
			s.t.Fatalf("%s: point %v is no step of the model", s.x.name, p.Time)
		}
		for di := range s.x.disks {
			want := s.x.image(di, k)
			if !bytes.Equal(readAll(s.t, s.src, s.x.disks[di], sp[i].Seq), want) {
				s.t.Fatalf("%s: the source's %s at %v differs from the model", s.x.name, s.x.disks[di].Name, p.Time)
			}
			if !bytes.Equal(readAll(s.t, s.dst, s.ddisks[di], p.Seq), want) {
				s.t.Fatalf("%s: the replica's %s at %v (point %d) differs from the source's", s.x.name, s.ddisks[di].Name, p.Time, i)
			}
		}
	}
}

// checkModel checks that every point of the replica shows what the model
// shows at its time (the source may no longer have it).
func (s *repSender) checkModel() {
	s.t.Helper()
	for _, p := range repPoints(s.t, s.dst, s.dtl) {
		k, ok := s.x.at[p.Time]
		for di := range s.x.disks {
			if !ok || !bytes.Equal(readAll(s.t, s.dst, s.ddisks[di], p.Seq), s.x.image(di, k)) {
				s.t.Fatalf("%s: the replica's point %v shows an image the source never had", s.x.name, p.Time)
			}
		}
	}
}

// distinctContent counts the distinct non-zero contents the models hold.
func distinctContent(xs ...*replTL) int {
	seen := map[Hash]bool{}
	for _, x := range xs {
		for _, w := range x.steps {
			for _, data := range w {
				if !IsZero(data) {
					seen[HashBlock(data)] = true
				}
			}
		}
	}
	return len(seen)
}

// bookmarkSome names two points of the newest k steps of x: one at its
// time, one just after it.
func bookmarkSome(t *testing.T, r *Repo, x *replTL, g *repGen, k int, tag string) {
	t.Helper()
	pts := repPoints(t, r, x.tl)
	for i, kind := range []string{KindUser, KindApplication} {
		j := len(pts) - 1 - g.rng.IntN(k)
		at := pts[j].Time
		if i == 1 && (j+1 == len(pts) || pts[j+1].Time.After(at.Add(time.Nanosecond))) {
			at = at.Add(time.Nanosecond)
		}
		bm := Bookmark{Name: fmt.Sprintf("%s-%s-%d", x.name, tag, i), Time: at, Kind: kind, Pinned: i == 0,
			Files: map[string]string{"label": tag}}
		if _, err := r.Mark(x.disks[0], bm); err != nil && !errors.Is(err, ErrBookmarkExists) {
			t.Fatal(err)
		}
	}
}

// TestReplicaRoundTrip: a lone disk and a group of two, written in four
// rounds (captured steps with zeros and repeated content, an import-sized
// step, bookmarks), each round streamed into a replica from its position.
// After each round every point of the replica equals the source's and the
// model, point times and block counts agree, and content crossed once per
// distinct content. The import goes through IncomingPart in parts, the
// other steps in batches whose repeated content is sent once.
func TestReplicaRoundTrip(t *testing.T) {
	_, src := newRepo(t)
	_, dst := newRepo(t)
	g := newRepGen(1)
	web := newReplTL(t, src, "web", 32*4096)
	db := newReplTL(t, src, "db", 16*4096, 24*4096)
	var senders []*repSender
	for _, x := range []*replTL{web, db} {
		s := newRepSender(t, src, dst, x, "site-a")
		s.batch, s.part = 5, 12
		senders = append(senders, s)
	}
	for round := range 4 {
		for range 40 {
			if g.rng.IntN(2) == 0 {
				web.capture(t, src, g)
			} else {
				db.capture(t, src, g)
			}
		}
		if round == 1 {
			web.importAll(t, src, g)
			db.importAll(t, src, g)
		}
		if err := src.Sync(); err != nil {
			t.Fatal(err)
		}
		for _, x := range []*replTL{web, db} {
			x.learn(t, src)
			bookmarkSome(t, src, x, g, 10, fmt.Sprint(round))
		}
		for _, s := range senders {
			if err := s.run(-1); err != nil {
				t.Fatalf("round %d: %v", round, err)
			}
		}
		if err := dst.Sync(); err != nil {
			t.Fatal(err)
		}
		for _, s := range senders {
			s.check()
		}
	}
	sent := senders[0].content + senders[1].content
	if want := distinctContent(web, db); sent != want {
		t.Fatalf("%d blocks of content crossed for %d distinct contents", sent, want)
	}
	t.Logf("%d steps, %d blocks sent, %d with content", len(web.steps)+len(db.steps), senders[0].blocks+senders[1].blocks, sent)
	verifyClean(t, dst)
}

// TestReplicaResume: a stream stopped mid-way resumes from ReplicaPosition
// after the replica is closed and opened again, and after a crash that
// loses what was not synced: the replica holds a prefix of the source's
// points each time, and in the end all of them, with no gap and no repeat.
func TestReplicaResume(t *testing.T) {
	_, src := newRepo(t)
	g := newRepGen(2)
	web := newReplTL(t, src, "web", 32*4096)
	db := newReplTL(t, src, "db", 16*4096, 16*4096)
	for i := range 120 {
		web.capture(t, src, g)
		db.capture(t, src, g)
		if i == 60 {
			web.importAll(t, src, g)
		}
	}
	if err := src.Sync(); err != nil {
		t.Fatal(err)
	}
	for _, x := range []*replTL{web, db} {
		x.learn(t, src)
		bookmarkSome(t, src, x, g, 100, "r")
	}
	for _, x := range []*replTL{web, db} {
		dir, dst := newRepo(t)
		s := newRepSender(t, src, dst, x, "site-a")
		s.batch, s.part = 3, 20
		// A clean stop, then close and open.
		if err := s.run(37); !errors.Is(err, errRepStop) {
			t.Fatal(err)
		}
		if err := dst.Close(); err != nil {
			t.Fatal(err)
		}
		s.dst = reopen(t, dir)
		s.checkPrefix(37)
		// A crash: 20 steps synced, 25 more not.
		if err := s.run(20); !errors.Is(err, errRepStop) {
			t.Fatal(err)
		}
		if err := s.dst.Sync(); err != nil {
			t.Fatal(err)
		}
		if err := s.run(25); !errors.Is(err, errRepStop) {
			t.Fatal(err)
		}
		crash(s.dst)
		s.dst = reopen(t, dir)
		n := len(repPoints(t, s.dst, s.dtl))
		if n < 57 || n > 82 {
			t.Fatalf("%s: %d points after the crash, want 57 to 82", x.name, n)
		}
		s.checkPrefix(n)
		pos, err := s.dst.ReplicaPosition(s.dtl)
		if err != nil || !pos.Equal(repPoints(t, s.dst, s.dtl)[n-1].Time) {
			t.Fatalf("%s: position %v (%v) is not the newest point", x.name, pos, err)
		}
		if err := s.run(-1); err != nil {
			t.Fatal(err)
		}
		if err := s.dst.Sync(); err != nil {
			t.Fatal(err)
		}
		s.check()
		verifyClean(t, s.dst)
	}
}

func reopen(t *testing.T, dir string) *Repo {
	t.Helper()
	r, err := Open(dir, Options{})
	if err != nil {
		t.Fatalf("open %s again: %v", dir, err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// TestTestFailoverClone: a clone of a replica at one of its points (a test
// failover) reads that point and takes writes of its own while the stream
// goes on into the replica; the replica and the point stay as they were.
func TestTestFailoverClone(t *testing.T) {
	_, src := newRepo(t)
	_, dst := newRepo(t)
	g := newRepGen(5)
	web := newReplTL(t, src, "web", 32*4096)
	s := newRepSender(t, src, dst, web, "site-a")
	for range 20 {
		web.capture(t, src, g)
	}
	if err := src.Sync(); err != nil {
		t.Fatal(err)
	}
	web.learn(t, src)
	if err := s.run(-1); err != nil {
		t.Fatal(err)
	}
	if err := dst.Sync(); err != nil {
		t.Fatal(err)
	}
	rd := s.ddisks[0]
	base, err := dst.LastPoint(rd.Timeline)
	if err != nil {
		t.Fatal(err)
	}
	want := make([]byte, rd.Size)
	im, err := dst.Image(rd, base.Seq)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := im.ReadAt(want, 0); err != nil {
		t.Fatal(err)
	}
	clone, err := dst.CloneDisk("web-test", rd, base.Seq)
	if err != nil {
		t.Fatal(err)
	}
	if clone.Replica != nil {
		t.Fatal("a clone of a replica is itself marked a replica: it could not be written")
	}
	own := bytes.Repeat([]byte{0x5a}, 4096)
	if _, err := dst.Capture(clone.Timeline, []BlockWrite{{Disk: clone, Block: 3, Data: own}}); err != nil {
		t.Fatal(err)
	}
	for range 20 { // the stream goes on beside the clone
		web.capture(t, src, g)
	}
	if err := src.Sync(); err != nil {
		t.Fatal(err)
	}
	web.learn(t, src)
	if err := s.run(-1); err != nil {
		t.Fatalf("the stream stopped beside a clone of its replica: %v", err)
	}
	if err := dst.Sync(); err != nil {
		t.Fatal(err)
	}
	s.check()
	got := make([]byte, rd.Size)
	if im, err = dst.Image(rd, base.Seq); err != nil {
		t.Fatal(err)
	}
	if _, err := im.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("the replica's point the clone was made from reads otherwise")
	}
	copy(want[3*4096:], own)
	head, err := dst.LastPoint(clone.Timeline)
	if err != nil {
		t.Fatal(err)
	}
	if im, err = dst.Image(clone, head.Seq); err != nil {
		t.Fatal(err)
	}
	if _, err := im.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("the clone does not read as the replica's point with its own write")
	}
}
