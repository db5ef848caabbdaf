package fs

import (
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hindsight-cdp/hindsight/cdp/timespec"
)

// latest follows new points while what was opened before keeps its bytes;
// new disks, points and bookmarks show without remounting.
func TestLatestFollows(t *testing.T) {
	src, f := newFixture()
	mnt := testMount(t, src, Options{Now: f.clock()})
	latest := filepath.Join(mnt, "vm1", "latest")

	old, err := os.Open(filepath.Join(latest, "vm1-flat.vmdk"))
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	oldDir, err := os.OpenRoot(latest) // pins the instant latest was
	if err != nil {
		t.Fatal(err)
	}
	defer oldDir.Close()
	oldImg := src.image("vm1", f.p[5].Seq)
	if got := mustReadAll(t, old); sum(got) != sum(oldImg) {
		t.Fatal("latest before the new point differs from the model")
	}
	oldInfo := readInfo(t, filepath.Join(latest, "info.json"))

	p6 := src.addPoint("vm1", t0.Add(55*time.Minute))
	in := readInfo(t, filepath.Join(latest, "info.json"))
	if in.Seq != p6.Seq || !in.Time.Equal(p6.Time) {
		t.Fatalf("latest after a new point: seq %d time %s, want %d %s", in.Seq, in.Time, p6.Seq, p6.Time)
	}
	checkImages(t, latest, "vm1", src.image("vm1", p6.Seq))

	// The file opened before still reads the old instant, from offset 0
	// again, and so does a file opened now through the old directory.
	if _, err := old.Seek(0, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	if sum(mustReadAll(t, old)) != sum(oldImg) {
		t.Error("a file opened before the new point changed")
	}
	f2, err := oldDir.Open("vm1-flat.vmdk")
	if err != nil {
		t.Fatal(err)
	}
	defer f2.Close()
	if sum(mustReadAll(t, f2)) != sum(oldImg) {
		t.Error("a file opened through the directory pinned before the new point changed")
	}
	if data, err := oldDir.Open("info.json"); err != nil {
		t.Fatal(err)
	} else {
		b := mustReadAll(t, data)
		data.Close()
		if !infoEqual(oldInfo, decodeInfo(t, b)) {
			t.Errorf("old info.json changed: %s", b)
		}
	}

	// The new point is listed; a new bookmark and a new disk appear.
	if !slices.Contains(names(t, filepath.Join(mnt, "vm1")), timespec.Format(p6.Time)) {
		t.Error("new point not listed")
	}
	src.addBookmark("vm1", "new-mark", p6, "crash")
	if !slices.Contains(names(t, filepath.Join(mnt, "vm1", "bookmarks")), "new-mark") {
		t.Error("new bookmark not listed")
	}
	if in := readInfo(t, filepath.Join(mnt, "vm1", "bookmarks", "new-mark", "info.json")); in.Seq != p6.Seq {
		t.Errorf("bookmarks/new-mark: seq %d, want %d", in.Seq, p6.Seq)
	}
	if _, err := os.Stat(filepath.Join(mnt, "vm3")); !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("vm3 before it exists: %v", err)
	}
	src.addDisk("vm3", 128<<10, t0.Add(56*time.Minute))
	if _, err := os.Stat(filepath.Join(mnt, "vm3", "latest")); !errors.Is(err, syscall.ENOENT) {
		t.Errorf("vm3/latest before its first point: %v", err)
	}
	p := src.addPoint("vm3", t0.Add(57*time.Minute))
	if !slices.Contains(names(t, mnt), "vm3") {
		t.Error("new disk not listed")
	}
	checkImages(t, filepath.Join(mnt, "vm3", "latest"), "vm3", src.image("vm3", p.Seq))
}

// A relative name means another instant as the clock moves.
func TestRelativeFollowsClock(t *testing.T) {
	src, f := newFixture()
	mnt := testMount(t, src, Options{Now: f.clock()})
	dir := filepath.Join(mnt, "vm1", "-15m")
	if in := readInfo(t, filepath.Join(dir, "info.json")); in.Seq != f.p[4].Seq { // 10:45 → p4 (10:40)
		t.Fatalf("-15m at 11:00: seq %d, want %d", in.Seq, f.p[4].Seq)
	}
	f.now.Add(int64(10 * time.Minute))
	in := readInfo(t, filepath.Join(dir, "info.json")) // 10:55 → p5 (10:50)
	if in.Seq != f.p[5].Seq || !in.Requested.Equal(t0.Add(55*time.Minute)) {
		t.Errorf("-15m at 11:10: seq %d requested %s, want %d %s", in.Seq, in.Requested, f.p[5].Seq, t0.Add(55*time.Minute))
	}
	// An absolute time that was in the future resolves once it has passed.
	future := filepath.Join(mnt, "vm1", "20261125T111500Z")
	if _, err := os.Stat(future); !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("11:15 at 11:10: %v, want ENOENT", err)
	}
	f.now.Add(int64(10 * time.Minute))
	if in := readInfo(t, filepath.Join(future, "info.json")); in.Seq != f.p[5].Seq {
		t.Errorf("11:15 at 11:20: seq %d, want %d", in.Seq, f.p[5].Seq)
	}
}

// Every name of one point shares the image inode, and so the page cache:
// what was read through one name is not read from the source again.
func TestSharedImageInode(t *testing.T) {
	src, f := newFixture()
	mnt := testMount(t, src, Options{Now: f.clock()})
	dirs := []string{
		timespec.Format(f.p[3].Time),
		"2026-11-25T10:35:00Z",
		"20261125T103959Z",
		"bookmarks/app",
	}
	ino := func(path string) uint64 {
		st, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		return st.Sys().(*syscall.Stat_t).Ino
	}
	for _, file := range []string{"vm1-flat.vmdk", "vm1.vhd", "vm1.vmdk"} {
		want := ino(filepath.Join(mnt, "vm1", dirs[0], file))
		for _, d := range dirs[1:] {
			if got := ino(filepath.Join(mnt, "vm1", d, file)); got != want {
				t.Errorf("%s/%s: inode %d, %s/%s has %d", d, file, got, dirs[0], file, want)
			}
		}
	}
	infos := map[uint64]string{}
	for _, d := range dirs {
		i := ino(filepath.Join(mnt, "vm1", d, "info.json"))
		if other, ok := infos[i]; ok {
			t.Errorf("%s/info.json and %s/info.json share inode %d", d, other, i)
		}
		infos[i] = d
	}

	want := sum(src.image("vm1", f.p[3].Seq))
	if sum(mustRead(t, filepath.Join(mnt, "vm1", dirs[0], "vm1-flat.vmdk"))) != want {
		t.Fatal("flat image differs")
	}
	before := src.readAts.Load()
	for _, d := range dirs {
		if sum(mustRead(t, filepath.Join(mnt, "vm1", d, "vm1-flat.vmdk"))) != want {
			t.Fatalf("%s: flat image differs", d)
		}
	}
	if n := src.readAts.Load() - before; n != 0 {
		t.Errorf("%d reads reached the source for an image already in the page cache", n)
	}
}

// Unaligned reads and reads across the end of every file answer exactly
// what the model holds.
func TestReadAt(t *testing.T) {
	src, f := newFixture()
	mnt := testMount(t, src, Options{Now: f.clock()})
	dir := filepath.Join(mnt, "vm2", "latest")
	raw := src.image("vm2", f.vm2[1].Seq)
	vhd := mustRead(t, filepath.Join(dir, "vm2.vhd"))
	if !slices.Equal(vhd[:len(raw)], raw) {
		t.Fatal("vhd data differs")
	}
	rng := rand.New(rand.NewPCG(3, 4))
	for _, tc := range []struct {
		name string
		want []byte
	}{{"vm2-flat.vmdk", raw}, {"vm2.vhd", vhd}} {
		fh, err := os.Open(filepath.Join(dir, tc.name))
		if err != nil {
			t.Fatal(err)
		}
		size := int64(len(tc.want))
		for i := range 200 {
			off := rng.Int64N(size + 10)
			n := 1 + rng.IntN(70000)
			if i%10 == 0 {
				off = size - int64(rng.IntN(600)) // around the end
			}
			buf := make([]byte, n)
			got, err := fh.ReadAt(buf, off)
			wantN := int(max(0, min(int64(n), size-off)))
			if got != wantN || (got < n && err != io.EOF) || (got == n && err != nil) {
				t.Fatalf("%s ReadAt(%d, %d) = %d, %v; want %d", tc.name, n, off, got, err, wantN)
			}
			if got > 0 && !slices.Equal(buf[:got], tc.want[off:off+int64(got)]) {
				t.Fatalf("%s ReadAt(%d, %d): wrong bytes", tc.name, n, off)
			}
		}
		fh.Close()
	}
}

// Readers of latest, listed and unlisted instants check every image against
// the model while points keep coming.
func TestConcurrentReaders(t *testing.T) {
	src, f := newFixture()
	f.now.Store(t0.Add(24 * time.Hour).UnixNano())
	mnt := testMount(t, src, Options{Now: f.clock()})

	stop := make(chan struct{})
	var adder sync.WaitGroup
	adder.Add(1)
	go func() {
		defer adder.Done()
		defer close(stop)
		for i := range 40 {
			src.addPoint("vm1", t0.Add(time.Hour+time.Duration(i)*time.Minute))
			if i%10 == 0 {
				src.addBookmark("vm1", fmt.Sprint("mark", i), src.points("vm1")[6+i], "crash")
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()

	var readers sync.WaitGroup
	errs := make(chan error, 100)
	for r := range 4 {
		readers.Add(1)
		go func() {
			defer readers.Done()
			rng := rand.New(rand.NewPCG(uint64(r), 9))
			for n := 0; ; n++ {
				select {
				case <-stop:
					if n > 3 {
						return
					}
				default:
				}
				var name string
				switch rng.IntN(4) {
				case 0:
					name = "latest"
				case 1: // listed
					list, err := os.ReadDir(filepath.Join(mnt, "vm1"))
					if err != nil {
						errs <- err
						return
					}
					name = list[rng.IntN(len(list))].Name()
					if name == "bookmarks" || name == "by-time" {
						name = "latest"
					}
				case 2: // any time, mostly unlisted
					at := t0.Add(time.Duration(rng.Int64N(int64(100 * time.Minute))))
					name = at.Format(time.RFC3339Nano)
				case 3:
					name = "-23h" + fmt.Sprint(rng.IntN(60)) + "m"
				}
				if err := checkInstant(src, filepath.Join(mnt, "vm1", name)); err != nil {
					errs <- fmt.Errorf("vm1/%s: %w", name, err)
					return
				}
			}
		}()
	}
	adder.Wait()
	readers.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// checkInstant reads info.json and the flat image through one directory
// handle, so both come from the same instant, and compares with the model.
func checkInstant(src *fakeSource, dir string) error {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	data, err := root.ReadFile("info.json")
	if err != nil {
		return err
	}
	var in info
	if err := jsonUnmarshal(data, &in); err != nil {
		return err
	}
	img, err := root.ReadFile("vm1-flat.vmdk")
	if err != nil {
		return err
	}
	if sum(img) != sum(src.image("vm1", in.Seq)) {
		return fmt.Errorf("image differs from the model at seq %d", in.Seq)
	}
	return nil
}

func mustReadAll(t *testing.T, r io.Reader) []byte {
	t.Helper()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func decodeInfo(t *testing.T, b []byte) info {
	t.Helper()
	var in info
	if err := jsonUnmarshal(b, &in); err != nil {
		t.Fatal(err)
	}
	return in
}
