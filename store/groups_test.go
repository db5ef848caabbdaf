package store

import (
	"bytes"
	"errors"
	"io"
	"testing"
	"time"
)

func readAll(t *testing.T, r *Repo, d Disk, seq uint64) []byte {
	t.Helper()
	im, err := r.Image(d, seq)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, d.Size)
	if _, err := im.ReadAt(buf, 0); err != nil && !errors.Is(err, io.EOF) {
		t.Fatal(err)
	}
	return buf
}

func TestGroupSharesTimeline(t *testing.T) {
	_, r := newRepo(t)
	a, _ := r.CreateDisk("a", 8*4096, 4096)
	b, _ := r.CreateDisk("b", 8*4096, 4096)
	lone, _ := r.CreateDisk("lone", 8*4096, 4096)
	if _, err := r.Capture(lone.Timeline, []BlockWrite{{Disk: lone, Block: 0, Data: block(1)}}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.CreateGroup("vm", []string{"a", "lone"}); !errors.Is(err, ErrNotEmpty) {
		t.Fatalf("a disk with history joined a group: %v", err)
	}
	if _, err := r.CreateGroup("a", nil); !errors.Is(err, ErrDiskExists) {
		t.Fatalf("group named like a disk: %v", err)
	}
	g, err := r.CreateGroup("vm", []string{"a", "b"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.CreateDisk("vm", 4096, 4096); !errors.Is(err, ErrDiskExists) {
		t.Fatalf("disk named like a group: %v", err)
	}
	if _, err := r.JoinGroup("vm", "a"); err == nil {
		t.Fatal("a disk joined its group twice")
	}
	tl, disks, err := r.Members("vm")
	if err != nil || tl != g.ID || len(disks) != 2 || disks[0].Name != "a" || disks[1].Group != "vm" {
		t.Fatalf("Members(vm) = %d %+v %v", tl, disks, err)
	}
	a, b = disks[0], disks[1]
	// Alternate writes on one timeline: each point shows both disks at one position.
	var seqs []uint64
	for i := 0; i < 6; i++ {
		d := []Disk{a, b}[i%2]
		p, err := r.Capture(g.ID, []BlockWrite{{Disk: d, Block: uint64(i / 2), Data: block(byte(i + 1))}})
		if err != nil {
			t.Fatal(err)
		}
		seqs = append(seqs, p.Seq)
	}
	pts, err := r.Points(g.ID, time.Time{}, time.Now(), 0)
	if err != nil || len(pts) != 6 {
		t.Fatalf("group points: %d %v", len(pts), err)
	}
	for i, seq := range seqs {
		ia, ib := readAll(t, r, a, seq), readAll(t, r, b, seq)
		for k := 0; k <= i; k++ {
			img := []([]byte){ia, ib}[k%2]
			if !bytes.Equal(img[(k/2)*4096:(k/2+1)*4096], block(byte(k+1))) {
				t.Fatalf("point %d: write %d missing", i, k)
			}
		}
	}
	bm, err := r.AddBookmark(b, "both", time.Now(), KindUser)
	if err != nil || bm.Disk != "vm" {
		t.Fatalf("group bookmark: %+v %v", bm, err)
	}
	if got, err := r.Bookmark(a, "both"); err != nil || got.Seq != bm.Seq {
		t.Fatalf("bookmark not shared by the group's disks: %+v %v", got, err)
	}
	if err := r.DeleteDisk("a"); !errors.Is(err, ErrInUse) {
		t.Fatalf("deleted a group member: %v", err)
	}
}

func TestCloneCopyOnWrite(t *testing.T) {
	_, r := newRepo(t)
	d, _ := r.CreateDisk("base", 8*4096, 4096)
	p1, _ := r.Capture(d.Timeline, []BlockWrite{{Disk: d, Block: 1, Data: block(1)}, {Disk: d, Block: 2, Data: block(2)}})
	if _, err := r.Capture(d.Timeline, []BlockWrite{{Disk: d, Block: 1, Data: block(9)}}); err != nil {
		t.Fatal(err)
	}
	want := readAll(t, r, d, p1.Seq)
	c, err := r.CloneDisk("c", d, p1.Seq)
	if err != nil {
		t.Fatal(err)
	}
	last, err := r.LastPoint(c.Timeline)
	if err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, r, c, last.Seq); !bytes.Equal(got, want) {
		t.Fatal("fresh clone differs from its base instant")
	}
	baseHead := readAll(t, r, d, r.Head())
	p, err := r.Capture(c.Timeline, []BlockWrite{{Disk: c, Block: 2, Data: block(7)}, {Disk: c, Block: 3, Data: make([]byte, 4096)}})
	if err != nil {
		t.Fatal(err)
	}
	copy(want[2*4096:], block(7))
	if got := readAll(t, r, c, p.Seq); !bytes.Equal(got, want) {
		t.Fatal("clone after a write differs from the model")
	}
	if !bytes.Equal(readAll(t, r, d, r.Head()), baseHead) || !bytes.Equal(readAll(t, r, d, p1.Seq), readAll(t, r, c, last.Seq)) {
		t.Fatal("writing the clone changed its base")
	}
	cc, err := r.CloneDisk("cc", c, p.Seq) // a clone of a clone
	if err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, r, cc, r.Head()); !bytes.Equal(got, want) {
		t.Fatal("clone of a clone differs")
	}
	if err := r.DeleteDisk("c"); !errors.Is(err, ErrInUse) {
		t.Fatalf("deleted a clone's base: %v", err)
	}
	for _, n := range []string{"cc", "c"} {
		if err := r.DeleteDisk(n); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := r.Disk("c"); !errors.Is(err, ErrUnknownDisk) {
		t.Fatalf("deleted clone still there: %v", err)
	}
	if !bytes.Equal(readAll(t, r, d, r.Head()), baseHead) {
		t.Fatal("deleting the clone changed its base")
	}
	if _, err := r.CloneDisk("c", d, r.Head()+1); err == nil {
		t.Fatal("clone at an uncommitted position")
	}
}

// A point journaled after a bookmark comes after the bookmark's instant, so
// the bookmark keeps showing the point it named, also after a reopen.
func TestPointsComeAfterBookmarks(t *testing.T) {
	dir, r := newRepo(t)
	d, _ := r.CreateDisk("d", 4*4096, 4096)
	t0 := time.Now().Add(-time.Hour)
	s, _ := r.Begin(d.Timeline, t0)
	s.Put(d, 0, block(1))
	p, err := s.Commit()
	if err != nil {
		t.Fatal(err)
	}
	bm, err := r.AddBookmark(d, "b", t0.Add(30*time.Minute), KindUser)
	if err != nil || bm.Seq != p.Seq {
		t.Fatalf("bookmark: %+v %v", bm, err)
	}
	if _, err := r.Begin(d.Timeline, t0.Add(10*time.Minute)); !errors.Is(err, ErrTimeOrder) {
		t.Fatalf("a point before a bookmark's instant was accepted: %v", err)
	}
	r.Close()
	r, err = Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := r.Begin(d.Timeline, t0.Add(20*time.Minute)); !errors.Is(err, ErrTimeOrder) {
		t.Fatalf("after a reopen, a point before a bookmark's instant was accepted: %v", err)
	}
	s, err = r.Begin(d.Timeline, t0.Add(40*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	s.Abort()
}

func TestCloneGroupOneTimeline(t *testing.T) {
	_, r := newRepo(t)
	a, _ := r.CreateDisk("a", 4*4096, 4096)
	b, _ := r.CreateDisk("b", 8*4096, 4096)
	g, _ := r.CreateGroup("vm", []string{"a", "b"})
	a, b = mustDisk(t, r, "a"), mustDisk(t, r, "b")
	p, err := r.Capture(g.ID, []BlockWrite{{Disk: a, Block: 0, Data: block(1)}, {Disk: b, Block: 7, Data: block(2)}})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := r.CloneGroup("vm-i", []string{"vm-i-a", "a"}, []Disk{a, b}, p.Seq); !errors.Is(err, ErrDiskExists) {
		t.Fatalf("a clone named like a disk: %v", err)
	}
	cg, clones, err := r.CloneGroup("vm-i", []string{"vm-i-a", "vm-i-b"}, []Disk{a, b}, p.Seq)
	if err != nil {
		t.Fatal(err)
	}
	for i, c := range clones {
		base := []Disk{a, b}[i]
		if c.Timeline != cg.ID || c.Group != "vm-i" || !bytes.Equal(readAll(t, r, c, r.Head()), readAll(t, r, base, p.Seq)) {
			t.Fatalf("clone %s: %+v", c.Name, c)
		}
	}
	w1, _ := r.Capture(cg.ID, []BlockWrite{{Disk: clones[0], Block: 1, Data: block(3)}})
	w2, _ := r.Capture(cg.ID, []BlockWrite{{Disk: clones[1], Block: 1, Data: block(4)}})
	if pts, _ := r.Points(cg.ID, time.Time{}, time.Now(), 0); len(pts) != 3 || pts[1].Seq != w1.Seq || pts[2].Seq != w2.Seq {
		t.Fatalf("clone group points: %+v", pts)
	}
	if err := r.DeleteDisk("vm-i-a"); !errors.Is(err, ErrInUse) {
		t.Fatalf("deleted one disk of a clone group: %v", err)
	}
	if err := r.DeleteGroup("vm-i"); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"vm-i-a", "vm-i-b"} {
		if _, err := r.Disk(n); !errors.Is(err, ErrUnknownDisk) {
			t.Fatalf("%s after DeleteGroup: %v", n, err)
		}
	}
	if _, err := r.Group("vm-i"); !errors.Is(err, ErrUnknownGroup) {
		t.Fatalf("group after DeleteGroup: %v", err)
	}
	if !bytes.Equal(readAll(t, r, a, r.Head()), readAll(t, r, a, p.Seq)) {
		t.Fatal("the clones' writes or deletion changed their base")
	}
	if _, err := r.CloneDisk("c", a, p.Seq); err != nil {
		t.Fatal(err)
	}
	if err := r.DeleteGroup("vm"); !errors.Is(err, ErrInUse) {
		t.Fatalf("deleted a group whose disk is a clone's base: %v", err)
	}
}

func mustDisk(t *testing.T, r *Repo, name string) Disk {
	t.Helper()
	d, err := r.Disk(name)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestProfiles(t *testing.T) {
	_, r := newRepo(t)
	r.CreateDisk("a", 4096, 4096)
	r.CreateDisk("lone", 4096, 4096)
	r.CreateGroup("vm", []string{"a"})
	if err := r.SetProfile("vm", Profile{MemoryMB: 4096, CPUs: 2}); err != nil {
		t.Fatal(err)
	}
	if err := r.SetProfile("vm", Profile{GuestID: "ubuntu64Guest"}); err != nil { // zero fields keep theirs
		t.Fatal(err)
	}
	if g, _ := r.Group("vm"); g.Profile == nil || *g.Profile != (Profile{MemoryMB: 4096, CPUs: 2, GuestID: "ubuntu64Guest"}) {
		t.Fatalf("group profile %+v", g.Profile)
	}
	if err := r.SetProfile("a", Profile{CPUs: 1}); err == nil {
		t.Fatal("a group member got a profile of its own")
	}
	if err := r.SetProfile("lone", Profile{CPUs: 8}); err != nil || mustDisk(t, r, "lone").Profile.CPUs != 8 {
		t.Fatalf("lone disk profile: %v", err)
	}
	if err := r.SetController("a", "pvscsi"); err != nil || mustDisk(t, r, "a").Controller != "pvscsi" || mustDisk(t, r, "a").Group != "vm" {
		t.Fatalf("controller: %v %+v", err, mustDisk(t, r, "a"))
	}
	if err := r.SetController("vm", "pvscsi"); !errors.Is(err, ErrUnknownDisk) {
		t.Fatalf("a group got a controller: %v", err)
	}
	if err := r.SetProfile("nope", Profile{CPUs: 1}); !errors.Is(err, ErrUnknownDisk) {
		t.Fatalf("unknown name: %v", err)
	}
}
