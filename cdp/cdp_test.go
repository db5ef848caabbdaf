package cdp

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/hindsight-cdp/hindsight/cdp/timespec"
	"github.com/hindsight-cdp/hindsight/store"
	"github.com/hindsight-cdp/hindsight/store/storetest"
)

func newRepo(t *testing.T) *store.Repo { return newRepoB(t) }

func newRepoB(t testing.TB) *store.Repo {
	t.Helper()
	r, _ := storetest.Repo(t)
	return r
}

func readAll(t *testing.T, r io.ReaderAt, size int64) []byte {
	t.Helper()
	b := make([]byte, size)
	if n, err := r.ReadAt(b, 0); int64(n) != size || (err != nil && err != io.EOF) {
		t.Fatalf("read image: %d, %v", n, err)
	}
	return b
}

func TestImportJournalsOnlyChanges(t *testing.T) {
	r := newRepo(t)
	d, _ := r.CreateDisk("d", 3<<20+4096, 4096) // not a whole number of chunks
	rng := rand.New(rand.NewPCG(1, 1))
	img := make([]byte, d.Size)
	for i := range img[:1<<20] {
		img[i] = byte(rng.Uint32())
	}
	at := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	res, err := Import(context.Background(), r, d, bytes.NewReader(img), d.Size, at, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Changed != 256 || !res.Point.Time.Equal(at) || res.Read != d.Size {
		t.Fatalf("first import: %+v; want 256 non-zero blocks changed", res)
	}
	img[5] ^= 1
	img[d.Size-1] = 7
	res, err = Import(context.Background(), r, d, bytes.NewReader(img), d.Size, time.Time{}, nil)
	if err != nil || res.Changed != 2 {
		t.Fatalf("second import: %+v, %v; want 2 blocks changed", res, err)
	}
	im, _ := r.Image(d, res.Point.Seq)
	if !bytes.Equal(readAll(t, im, d.Size), img) {
		t.Fatal("imported image reads back wrong")
	}
	if _, err := Import(context.Background(), r, d, bytes.NewReader(img[:4096]), 4096, time.Time{}, nil); !errors.Is(err, ErrSizeMismatch) {
		t.Fatalf("wrong size: %v", err)
	}
	if _, err := Import(context.Background(), r, d, bytes.NewReader(img), d.Size, time.Now().Add(time.Hour), nil); !errors.Is(err, ErrFuture) {
		t.Fatalf("future: %v", err)
	}
}

func TestImportCancelled(t *testing.T) {
	r := newRepo(t)
	d, _ := r.CreateDisk("d", 64<<20, 4096)
	img := bytes.Repeat([]byte{1, 2, 3, 4}, int(d.Size/4))
	ctx, cancel := context.WithCancel(context.Background())
	_, err := Import(ctx, r, d, bytes.NewReader(img), d.Size, time.Time{}, func(n int64) {
		if n >= 8<<20 {
			cancel()
		}
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled import: %v", err)
	}
	if _, err := r.LastPoint(d.Timeline); !errors.Is(err, store.ErrNoPoint) {
		t.Fatalf("a cancelled import left a point: %v", err)
	}
}

func TestResolve(t *testing.T) {
	r := newRepo(t)
	d, _ := r.CreateDisk("d", 1<<20, 4096)
	img := make([]byte, d.Size)
	t0 := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	var pts []store.Point
	for i := 0; i < 3; i++ {
		img[i] = 1
		res, err := Import(context.Background(), r, d, bytes.NewReader(img), d.Size, t0.Add(time.Duration(i)*time.Hour), nil)
		if err != nil {
			t.Fatal(err)
		}
		pts = append(pts, res.Point)
	}
	r.AddBookmark(d, "bm", t0.Add(90*time.Minute), store.KindUser)
	now := t0.Add(3 * time.Hour)
	cases := []struct {
		spec string
		seq  uint64
		err  error
	}{
		{"latest", pts[2].Seq, nil},
		{"20261125T103000Z", pts[0].Seq, nil},
		{"2026-11-25T11:00:00Z", pts[1].Seq, nil},
		{"-150m", pts[0].Seq, nil},
		{"bookmark:bm", pts[1].Seq, nil},
		{"bookmark:none", 0, store.ErrUnknownBookmark},
		{"2026-11-25T09:59:59Z", 0, store.ErrNoPoint},
		{"-1m", pts[2].Seq, nil},
		{"+1m", 0, timespec.ErrBadTime},
		{"2026-11-25T14:00:00Z", 0, ErrFuture},
	}
	for _, c := range cases {
		in, err := Resolve(r, d, c.spec, now)
		if c.err != nil {
			if !errors.Is(err, c.err) {
				t.Errorf("Resolve(%q): %v, want %v", c.spec, err, c.err)
			}
			continue
		}
		if err != nil || in.Point.Seq != c.seq {
			t.Errorf("Resolve(%q) = %+v, %v; want seq %d", c.spec, in, err, c.seq)
		}
	}
}

func TestLiveFollowsWriter(t *testing.T) {
	r := newRepo(t)
	d, _ := r.CreateDisk("d", 1<<20, 4096)
	img := make([]byte, d.Size)
	img[0] = 1
	first, err := Import(context.Background(), r, d, bytes.NewReader(img), d.Size, time.Time{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	l, err := OpenLive(r.Dir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ctx := context.Background()
	old, err := l.Image(ctx, "d", first.Point.Seq)
	if err != nil {
		t.Fatal(err)
	}
	want := bytes.Clone(img)
	for i := 0; i < 3; i++ {
		img[4096*(i+1)] = byte(i + 2)
		if _, err := Import(ctx, r, d, bytes.NewReader(img), d.Size, time.Time{}, nil); err != nil {
			t.Fatal(err)
		}
		p, err := l.Latest(ctx, "d")
		if err != nil || p.Seq != uint64(i+2) {
			t.Fatalf("live latest after import %d: %+v, %v", i, p, err)
		}
		if !bytes.Equal(readAll(t, old, d.Size), want) {
			t.Fatal("an image opened on an older view changed")
		}
	}
	if _, err := r.CreateDisk("e", 4096, 4096); err != nil {
		t.Fatal(err)
	}
	// Disks may lag one refresh behind: it is started in the background.
	deadline := time.Now().Add(5 * time.Second)
	for {
		ds, err := l.Disks(ctx)
		if err == nil && len(ds) == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("live disks after a create: %v, %v", ds, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	// Lookups learn of new views from the inotify watcher, without a syscall.
	if l.watch == nil {
		t.Fatal("no watch on the views directory")
	}
	for gen, _ := store.NewestView(r.Dir()); l.published.Load() != gen; {
		if time.Now().After(deadline) {
			t.Fatalf("watcher saw view %d, newest is %d", l.published.Load(), gen)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if _, err := l.Resolve(ctx, "nope", time.Now()); !errors.Is(err, store.ErrUnknownDisk) {
		t.Fatalf("unknown disk: %v", err)
	}
}
