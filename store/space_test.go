package store

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// fakeSpace is a filesystem whose free space the test sets.
type fakeSpace struct{ free, total atomic.Uint64 }

func (f *fakeSpace) statfs(string) (uint64, uint64, error) { return f.free.Load(), f.total.Load(), nil }

// openFake opens a new repository whose free space fs says, with a reserve
// of minFree; the guard reads it again only after spaceRefreshBytes.
func openFake(t *testing.T, fs *fakeSpace, minFree uint64) *Repo {
	t.Helper()
	dir := t.TempDir()
	if err := Init(dir); err != nil {
		t.Fatal(err)
	}
	r, err := Open(dir, Options{MinFree: minFree, statfs: fs.statfs})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	setEvery(r, time.Hour)
	return r
}

func setEvery(r *Repo, d time.Duration) {
	r.space.mu.Lock()
	r.space.every = d
	r.space.at = time.Time{} // read the free space at the next write
	r.space.mu.Unlock()
}

func noSpace(t *testing.T, what string, err error) {
	t.Helper()
	var errno syscall.Errno
	if !errors.Is(err, ErrNoSpace) || !errors.Is(err, syscall.ENOSPC) || !errors.As(err, &errno) || errno != syscall.ENOSPC {
		t.Fatalf("%s: %v, want ErrNoSpace that is ENOSPC", what, err)
	}
}

// TestSpaceGuardCapture: captured writes are refused once they would eat
// into the reserve, counting what was accepted since the free space was
// last read; nothing of a refused write is journaled; what was accepted
// syncs; writes are accepted again once space is back.
func TestSpaceGuardCapture(t *testing.T) {
	fs := &fakeSpace{}
	const reserve = 1 << 20
	fs.total.Store(1 << 30)
	fs.free.Store(reserve + 10*4096)
	r := openFake(t, fs, reserve)
	d, err := r.CreateDisk("c", 64*4096, 4096)
	if err != nil {
		t.Fatal(err)
	}
	head := r.Head()
	for i := range 10 {
		if err := r.CaptureAsync(d.Timeline, []BlockWrite{{d, uint64(i), block(byte(i + 1))}}); err != nil {
			t.Fatalf("write %d of 10 that fit: %v", i, err)
		}
	}
	if n, now := r.Refused(); n != 0 || now {
		t.Fatalf("Refused() = %d, %v before any refusal", n, now)
	}
	noSpace(t, "the 11th write", r.CaptureAsync(d.Timeline, []BlockWrite{{d, 10, block(11)}}))
	if n, now := r.Refused(); n != 1 || !now {
		t.Fatalf("Refused() = %d, %v after one refusal", n, now)
	}
	// Below the reserve, a zero block (no content, but a version) is refused too.
	fs.free.Store(reserve - 1)
	setEvery(r, time.Hour)
	noSpace(t, "a zero write", r.CaptureAsync(d.Timeline, []BlockWrite{{d, 10, nil}}))
	if err := r.Sync(); err != nil {
		t.Fatalf("Sync of the accepted writes: %v", err)
	}
	if got := r.Head(); got != head+10 {
		t.Fatalf("head %d after 10 accepted writes from %d: a refused write was journaled", got, head)
	}
	buf := make([]byte, 11*4096)
	if _, err := r.ReadNewest(d, buf, 0); err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		if !bytes.Equal(buf[i*4096:(i+1)*4096], block(byte(i+1))) {
			t.Fatalf("accepted block %d reads back wrong", i)
		}
	}
	if !IsZero(buf[10*4096:]) {
		t.Fatal("the refused write is visible")
	}
	if free, total, low := r.Space(); free != reserve-1 || total != 1<<30 || !low {
		t.Fatalf("Space() = %d, %d, %v", free, total, low)
	}

	// Space is back: the next write after the refresh interval is accepted.
	fs.free.Store(1 << 30)
	setEvery(r, spaceRefresh)
	if err := r.CaptureAsync(d.Timeline, []BlockWrite{{d, 10, block(11)}}); err != nil {
		t.Fatalf("write once space is back: %v", err)
	}
	if n, now := r.Refused(); n != 2 || now {
		t.Fatalf("Refused() = %d, %v after two refusals and an accepted write", n, now)
	}
	if err := r.Sync(); err != nil {
		t.Fatal(err)
	}
	if _, err := r.ReadNewest(d, buf[:4096], 10*4096); err != nil || !bytes.Equal(buf[:4096], block(11)) {
		t.Fatalf("the write after space came back reads %v", err)
	}
	if _, _, low := r.Space(); low {
		t.Fatal("Space() says low with 1 GiB free")
	}
	if got := r.MinFree(); got != reserve {
		t.Fatalf("MinFree() = %d, want %d", got, reserve)
	}
}

// TestSpaceGuardImport: a step is refused at Begin below the reserve, and
// an import that reaches it part way fails before appending the block that
// would not fit; aborted, it leaves the journal as it was.
func TestSpaceGuardImport(t *testing.T) {
	fs := &fakeSpace{}
	const reserve = 1 << 20
	fs.total.Store(1 << 30)
	fs.free.Store(reserve - 1)
	r := openFake(t, fs, reserve)
	d, err := r.CreateDisk("i", 64*4096, 4096) // metadata is not refused
	if err != nil {
		t.Fatal(err)
	}
	_, err = r.Begin(d.Timeline, time.Time{})
	noSpace(t, "Begin below the reserve", err)

	fs.free.Store(reserve + 16*4096)
	setEvery(r, time.Hour)
	s, err := r.Begin(d.Timeline, time.Time{})
	if err != nil {
		t.Fatalf("Begin above the reserve: %v", err)
	}
	rng := rand.New(rand.NewPCG(3, 4))
	var n int
	for n = 0; n < 64; n++ {
		b := make([]byte, 4096)
		for i := range b {
			b[i] = byte(rng.Uint32()) // incompressible: stored whole
		}
		if err = s.Put(d, uint64(n), b); err != nil {
			break
		}
	}
	noSpace(t, "an import past the reserve", err)
	if n != 16 {
		t.Fatalf("the import was refused at block %d, want 16 (16 blocks fit)", n)
	}
	if err := s.Abort(); err != nil {
		t.Fatal(err)
	}
	head := r.Head()
	if err := r.Sync(); err != nil {
		t.Fatalf("Sync after the refused import: %v", err)
	}
	if err := r.Publish(); err != nil {
		t.Fatal(err)
	}
	rep, err := r.Verify(context.Background(), VerifyOptions{Full: true})
	if err != nil || len(rep.Problems) != 0 || rep.Head != head {
		t.Fatalf("verify after the refused import: %v %+v", err, rep)
	}
}

// TestSpaceDefaultReserve: the default reserve is DefaultMinFree, or an
// eighth of a filesystem smaller than 8 × that; MinFree overrides it.
func TestSpaceDefaultReserve(t *testing.T) {
	g := &spaceGuard{}
	for _, c := range []struct{ total, want uint64 }{
		{48 << 20, 6 << 20},
		{1 << 30, 128 << 20},
		{4 << 30, DefaultMinFree},
		{1 << 40, DefaultMinFree},
	} {
		if got := g.reserve(c.total); got != c.want {
			t.Errorf("reserve of a %d-byte filesystem: %d, want %d", c.total, got, c.want)
		}
	}
	g.minFree = 7 << 20
	if got := g.reserve(1 << 40); got != 7<<20 {
		t.Errorf("reserve with MinFree: %d", got)
	}
}

// TestSpaceGuardRealFilesystem fills a real (tmpfs) filesystem under the
// journal: captured writes are refused with ErrNoSpace before the journal
// meets ENOSPC, everything accepted syncs and verifies, and once a ballast
// file is removed writes go on.
func TestSpaceGuardRealFilesystem(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a tmpfs")
	}
	mnt := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=96m", "hindsight-space", mnt).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if err := exec.Command("umount", mnt).Run(); err != nil {
			exec.Command("umount", "-l", mnt).Run()
		}
	})
	dir := filepath.Join(mnt, "repo")
	if err := Init(dir); err != nil {
		t.Fatal(err)
	}
	const reserve = 24 << 20
	r, err := Open(dir, Options{MinFree: reserve})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	d, err := r.CreateDisk("c", 64<<20, 4096)
	if err != nil {
		t.Fatal(err)
	}
	// Ballast leaves ~40 MiB above the reserve: what the writer holds
	// unwritten (up to a few 8 MiB segment chunks) counts as used, so a
	// refusal may come that much early.
	free, _, _ := r.Space()
	ballast := filepath.Join(mnt, "ballast")
	if err := os.WriteFile(ballast, make([]byte, free-reserve-40<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(5, 6))
	want := make([]byte, d.Size)
	const wsize = 16 * 4096
	var i int
	for i = 0; ; i++ {
		off := int64(i*wsize) % d.Size
		data := want[off : off+wsize]
		for j := range data {
			data[j] = byte(rng.Uint32())
		}
		ws := make([]BlockWrite, wsize/4096)
		for k := range ws {
			ws[k] = BlockWrite{d, uint64(off/4096) + uint64(k), data[k*4096 : (k+1)*4096]}
		}
		err := r.CaptureAsync(d.Timeline, ws)
		if err != nil {
			noSpace(t, "a write onto the full filesystem", err)
			clear(data) // not journaled: the disk still holds zeros there (first pass)
			break
		}
		if i%16 == 15 {
			if err := r.Sync(); err != nil {
				t.Fatalf("sync %d: %v", i, err)
			}
		}
		if i > 2000 {
			t.Fatal("no write was refused")
		}
	}
	if i < 200 {
		t.Fatalf("refused after %d writes of 64 KiB, with ~40 MiB above the reserve", i)
	}
	if err := r.Sync(); err != nil {
		t.Fatalf("Sync after the refusal: %v", err)
	}
	if err := r.Publish(); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, d.Size)
	if _, err := r.ReadNewest(d, got, 0); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("the disk after the refusal reads back wrong (%v)", err)
	}
	if rep, err := r.Verify(context.Background(), VerifyOptions{Full: true}); err != nil || len(rep.Problems) != 0 {
		t.Fatalf("verify: %v %+v", err, rep)
	}
	if err := os.Remove(ballast); err != nil {
		t.Fatal(err)
	}
	time.Sleep(spaceRefresh + 10*time.Millisecond)
	if err := r.CaptureAsync(d.Timeline, []BlockWrite{{d, 0, block(9)}}); err != nil {
		t.Fatalf("write after space was freed: %v", err)
	}
	if err := r.Sync(); err != nil {
		t.Fatal(err)
	}
}
