package store

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// recordsCase journals, across several writer opens: imports, captured and
// synced writes, disks, a group, bookmarks and a clone, and says what the
// repository must hold.
type recordsCase struct {
	dir    string
	points map[string][]Point // by disk
	images map[string][]byte  // newest image by disk
	marks  []string
	groups []string
	start  time.Time
}

func (c *recordsCase) snapshot(t *testing.T) {
	t.Helper()
	r, err := Open(c.dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	c.points, c.images, c.marks, c.groups = map[string][]Point{}, map[string][]byte{}, nil, nil
	disks, err := r.Disks()
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range disks {
		ps, err := r.Points(d.Timeline, time.Time{}, time.Time{}, 0)
		if err != nil {
			t.Fatal(err)
		}
		c.points[d.Name] = ps
		if len(ps) > 0 {
			c.images[d.Name] = readAll(t, r, d, r.Head())
		}
		bms, err := r.Bookmarks(d)
		if err != nil {
			t.Fatal(err)
		}
		for _, bm := range bms {
			c.marks = append(c.marks, d.Name+"/"+bm.Name)
		}
	}
	gs, err := r.Groups()
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range gs {
		c.groups = append(c.groups, g.Name+":"+string(bytes.Join(func() [][]byte {
			var out [][]byte
			for _, d := range g.Disks {
				out = append(out, []byte(d))
			}
			return out
		}(), []byte(","))))
	}
	slices.Sort(c.marks)
}

// newRecordsCase makes a repository, takes its first step, and returns it
// with a copy of its index as it stood then.
func newRecordsCase(t *testing.T) (*recordsCase, string) {
	t.Helper()
	c := &recordsCase{dir: t.TempDir(), start: time.Now().Add(-time.Hour).Truncate(time.Minute)}
	if err := Init(c.dir); err != nil {
		t.Fatal(err)
	}
	c.step(t, 0)
	old := filepath.Join(t.TempDir(), "db")
	copyDir(t, filepath.Join(c.dir, "db"), old)
	return c, old
}

func copyDir(t *testing.T, from, to string) {
	t.Helper()
	if out, err := exec.Command("cp", "-a", from, to).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
}

func (c *recordsCase) step(t *testing.T, i int) {
	t.Helper()
	r, err := Open(c.dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	at := c.start.Add(time.Duration(i) * time.Minute)
	name := []string{"web", "db", "logs"}[i%3]
	d, err := r.Disk(name)
	if err != nil {
		if d, err = r.CreateDisk(name, 32*4096, 4096); err != nil {
			t.Fatal(err)
		}
	}
	s, err := r.Begin(d.Timeline, at) // an import
	if err != nil {
		t.Fatal(err)
	}
	for b := range 8 {
		if err := s.Put(d, uint64(b+i), block(byte(i*8+b+1))); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Commit(); err != nil {
		t.Fatal(err)
	}
	if _, err := r.CaptureAt(d.Timeline, at.Add(time.Second), []BlockWrite{{Disk: d, Block: 31, Data: block(byte(200 + i))}}); err != nil {
		t.Fatal(err)
	}
	if err := r.Sync(); err != nil {
		t.Fatal(err)
	}
	if _, err := r.AddBookmark(d, "mark"+string(rune('a'+i)), at.Add(2*time.Second), "user"); err != nil {
		t.Fatal(err)
	}
	if i == 2 {
		if _, err := r.CreateDisk("empty", 8*4096, 4096); err != nil {
			t.Fatal(err)
		}
		if _, err := r.CreateGroup("vm", []string{"empty"}); err != nil {
			t.Fatal(err)
		}
	}
	if i == 4 {
		if _, err := r.CloneDisk("web-test", d, r.Head()); err != nil {
			t.Fatal(err)
		}
	}
}

// TestLostIndexTail: with an older copy of the index put back, or the
// newest pebble WAL garbled, every point, bookmark, group and clone
// acknowledged before is there after reopening, and every image reads the
// same.
func TestLostIndexTail(t *testing.T) {
	for _, how := range []string{"older index", "garbled WAL", "index rebuilt"} {
		t.Run(how, func(t *testing.T) {
			c, old := newRecordsCase(t)
			// want is an unharmed twin: the same steps at the same times
			// (a snapshot opens the writer, which moves the WAL to tables).
			twin := &recordsCase{dir: t.TempDir(), start: c.start}
			if err := Init(twin.dir); err != nil {
				t.Fatal(err)
			}
			for i := 0; i < 6; i++ {
				if i > 0 {
					c.step(t, i)
				}
				twin.step(t, i)
			}
			twin.snapshot(t)
			want := *twin
			if how == "index rebuilt" { // a damaged table: the index made anew from the logs
				ssts, _ := filepath.Glob(filepath.Join(c.dir, "db", "*.sst"))
				for _, f := range ssts {
					os.Truncate(f, 100)
				}
				if _, err := Open(c.dir, Options{}); !errors.Is(err, ErrCorrupt) {
					t.Fatalf("writer over damaged tables: %v", err)
				}
				aside, err := RebuildIndex(c.dir, Options{})
				if err != nil {
					t.Fatal(err)
				}
				if _, err := os.Stat(aside); err != nil {
					t.Fatalf("the damaged index was not kept: %v", err)
				}
			} else if how == "older index" {
				os.RemoveAll(filepath.Join(c.dir, "db"))
				copyDir(t, old, filepath.Join(c.dir, "db"))
			} else {
				// The newest WAL garbled from its middle on: pebble takes
				// the damage for the log's end and drops what follows.
				logs, _ := filepath.Glob(filepath.Join(c.dir, "db", "*.log"))
				slices.Sort(logs)
				b, _ := os.ReadFile(logs[len(logs)-1])
				for i := len(b) / 2; i < len(b); i += 97 {
					b[i] ^= 0x5a
				}
				os.WriteFile(logs[len(logs)-1], b, 0o644)
			}
			c.snapshot(t)
			if len(c.points) != len(want.points) {
				t.Fatalf("disks after the loss: %d, want %d", len(c.points), len(want.points))
			}
			for name, ps := range want.points {
				if !slices.Equal(c.points[name], ps) {
					t.Errorf("points of %s after the loss:\n%v\nwant\n%v", name, c.points[name], ps)
				}
				if !bytes.Equal(c.images[name], want.images[name]) {
					t.Errorf("newest image of %s differs after the loss", name)
				}
			}
			if !slices.Equal(c.marks, want.marks) || !slices.Equal(c.groups, want.groups) {
				t.Errorf("bookmarks %v groups %v after the loss; want %v %v", c.marks, c.groups, want.marks, want.groups)
			}
			r, err := Open(c.dir, Options{ReadOnly: true})
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			rep, err := r.Verify(t.Context(), VerifyOptions{Full: true})
			if err != nil || len(rep.Problems) > 0 {
				t.Fatalf("verify after the loss: %+v %v", rep, err)
			}
		})
	}
}

// TestLostRecordsRefused: records.log missing or shorter than the index
// records is refused (ErrCorrupt); so is a rebuild without records.log.
func TestLostRecordsRefused(t *testing.T) {
	c, old := newRecordsCase(t)
	fi, _ := os.Stat(filepath.Join(c.dir, recordsFile))
	for i := 1; i < 4; i++ {
		c.step(t, i)
	}
	os.RemoveAll(filepath.Join(c.dir, "db"))
	copyDir(t, old, filepath.Join(c.dir, "db"))
	os.Truncate(filepath.Join(c.dir, recordsFile), fi.Size()-1) // shorter than even the old index records
	if _, err := Open(c.dir, Options{}); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("open with records.log shorter than the index records: %v", err)
	}
	os.Remove(filepath.Join(c.dir, recordsFile))
	if _, err := Open(c.dir, Options{}); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("open without records.log: %v", err)
	}
	if _, err := RebuildIndex(c.dir, Options{}); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("rebuild without records.log: %v", err)
	}
	if _, err := os.Stat(filepath.Join(c.dir, "db")); err != nil {
		t.Fatalf("a refused rebuild left no index in place: %v", err)
	}
}
