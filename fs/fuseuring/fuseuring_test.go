package fuseuring

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"golang.org/x/sys/unix"
)

// requireURing skips the test unless FUSE over io_uring can be used,
// turning the kernel switch on when it is off (root only).
func requireURing(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("FUSE over io_uring needs root")
	}
	err := Available()
	if errors.Is(err, ErrSwitchOff) {
		if err = Enable(); err == nil {
			t.Logf("turned on %s", SwitchPath)
			err = Available()
		}
	}
	if err != nil {
		t.Skip(err)
	}
}

// leakState is what a mount must give back.
type leakState struct {
	goroutines int
	fds        int
}

func takeLeakState(t testing.TB) leakState {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return leakState{goroutines: runtime.NumGoroutine(), fds: len(ents)}
}

// checkNoLeak waits briefly for goroutines to end, then fails the test if
// dir is still mounted or goroutines or fds are left over since before.
func checkNoLeak(t testing.TB, dir string, before leakState) {
	t.Helper()
	var now leakState
	for deadline := time.Now().Add(5 * time.Second); ; {
		now = takeLeakState(t)
		if now.goroutines <= before.goroutines && now.fds <= before.fds || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if now.goroutines > before.goroutines {
		buf := make([]byte, 1<<20)
		t.Errorf("goroutines: %d before mounting, %d after unmounting\n%s", before.goroutines, now.goroutines, buf[:runtime.Stack(buf, true)])
	}
	if now.fds > before.fds {
		t.Errorf("open fds: %d before mounting, %d after unmounting", before.fds, now.fds)
	}
	if isMounted(dir) {
		t.Errorf("%s still mounted", dir)
	}
}

func isMounted(dir string) bool {
	b, _ := os.ReadFile("/proc/self/mountinfo")
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 4 && f[4] == dir {
			return true
		}
	}
	return false
}

// mountTree mounts root at a new directory over io_uring; cleanup unmounts
// it (lazily if it stays busy), waits for the server and checks that
// nothing is left.
func mountTree(t *testing.T, root fs.InodeEmbedder, opts Options) (string, *Server) {
	t.Helper()
	requireURing(t)
	dir := t.TempDir()
	before := takeLeakState(t)
	if opts.Logf == nil {
		opts.Logf = t.Logf
	}
	opts.MaxWrite = 1 << 20
	opts.DisableXAttrs = true
	one := time.Second
	raw := fs.NewNodeFS(root, &fs.Options{MountOptions: opts.MountOptions, EntryTimeout: &one, AttrTimeout: &one})
	srv, err := Mount(context.Background(), dir, raw, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		unmountEventually(t, srv, dir)
		checkNoLeak(t, dir, before)
	})
	return dir, srv
}

func unmountEventually(t testing.TB, srv *Server, dir string) {
	var err error
	for range 50 {
		if err = srv.Unmount(); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Errorf("unmount: %v; unmounting lazily", err)
	_ = unix.Unmount(dir, unix.MNT_DETACH)
	select {
	case <-srv.stopped:
	case <-time.After(10 * time.Second):
		t.Errorf("server of %s did not stop", dir)
	}
}

// openFile opens a file of a mount without os.OpenFile, which registers
// the fd with Go's poller: epoll_ctl makes the kernel ask the server for
// FUSE_POLL while the opening thread holds its P, and with every P held so,
// no queue could answer.
func openFile(t testing.TB, path string, flag int) *os.File {
	t.Helper()
	fd, err := unix.Open(path, flag|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	return os.NewFile(uintptr(fd), path)
}

func newTree(size int) *treeRoot {
	return &treeRoot{disk: &diskFile{data: make([]byte, size)}}
}

func TestMountServesOverRings(t *testing.T) {
	root := newTree(1 << 20)
	dir, srv := mountTree(t, root, Options{})
	n, err := possibleCPUs()
	if err != nil {
		t.Fatal(err)
	}
	if srv.Queues() != n {
		t.Errorf("%d queues, want one per possible CPU (%d)", srv.Queues(), n)
	}
	if _, err := os.Stat(filepath.Join(dir, "disk.img")); err != nil {
		t.Fatal(err)
	}
	if srv.Served() == 0 {
		t.Error("no request was served over a ring")
	}
}

// TestDiskModel checks reads, writes, fsync, stat, truncation, fallocate
// and lseek on the read-write file byte for byte against a model.
func TestDiskModel(t *testing.T) {
	const size = 8 << 20
	root := newTree(size)
	dir, _ := mountTree(t, root, Options{})
	f := openFile(t, filepath.Join(dir, "disk.img"), os.O_RDWR)
	defer f.Close()
	model := make([]byte, size)
	rng := rand.New(rand.NewPCG(1, 2))
	sizes := []int{1, 512, 4096, 4097, 65536, 128<<10 - 1, 1 << 20, 3<<20 + 17}
	for i := range 300 {
		n := sizes[rng.IntN(len(sizes))]
		off := rng.IntN(len(model) - n + 1)
		switch rng.IntN(4) {
		case 0, 1:
			buf := make([]byte, n)
			for j := range buf {
				buf[j] = byte(rng.Uint32())
			}
			if m, err := f.WriteAt(buf, int64(off)); err != nil || m != n {
				t.Fatalf("op %d: write %d at %d: %d, %v", i, n, off, m, err)
			}
			copy(model[off:], buf)
		case 2:
			buf := make([]byte, n)
			if m, err := f.ReadAt(buf, int64(off)); err != nil || m != n {
				t.Fatalf("op %d: read %d at %d: %d, %v", i, n, off, m, err)
			}
			if !bytes.Equal(buf, model[off:off+n]) {
				t.Fatalf("op %d: read %d at %d differs from the model", i, n, off)
			}
		case 3:
			if err := unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, int64(off), int64(n)); err != nil {
				t.Fatalf("op %d: punch %d at %d: %v", i, n, off, err)
			}
			clear(model[off : off+n])
		}
		if i%50 == 0 {
			if err := f.Sync(); err != nil {
				t.Fatalf("fsync: %v", err)
			}
		}
	}
	if got := root.disk.snapshot(); !bytes.Equal(got, model) {
		t.Fatal("the file's content differs from the model")
	}
	if root.disk.fsyncs.Load() != 6 {
		t.Errorf("%d FSYNC requests, want 6", root.disk.fsyncs.Load())
	}

	// Size: fallocate extends, ftruncate shrinks and grows, stat follows.
	if err := unix.Fallocate(int(f.Fd()), 0, size, 4096); err != nil {
		t.Fatal(err)
	}
	model = append(model, make([]byte, 4096)...)
	if err := f.Truncate(size / 2); err != nil {
		t.Fatal(err)
	}
	model = model[:size/2]
	if err := f.Truncate(size/2 + 100); err != nil {
		t.Fatal(err)
	}
	model = append(model, make([]byte, 100)...)
	st, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	if st.Size() != int64(len(model)) || st.Mode() != 0o600 {
		t.Errorf("stat: size %d mode %v, want %d -rw-------", st.Size(), st.Mode(), len(model))
	}
	got := make([]byte, len(model)+4096)
	n, err := f.ReadAt(got, 0)
	if n != len(model) || !bytes.Equal(got[:n], model) {
		t.Errorf("whole read: %d bytes, %v; equal to the model: %v", n, err, bytes.Equal(got[:n], model))
	}
	if off, err := unix.Seek(int(f.Fd()), 1000, unix.SEEK_DATA); err != nil || off != 1000 {
		t.Errorf("SEEK_DATA: %d, %v", off, err)
	}
	if off, err := unix.Seek(int(f.Fd()), 1000, unix.SEEK_HOLE); err != nil || off != int64(len(model)) {
		t.Errorf("SEEK_HOLE: %d, %v", off, err)
	}
	flushes := root.disk.flushes.Load()
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if root.disk.flushes.Load() != flushes+1 {
		t.Error("close sent no FLUSH")
	}
}

// TestReadOnlyTree lists, looks up, stats and reads the read-only files.
func TestReadOnlyTree(t *testing.T) {
	dir, _ := mountTree(t, newTree(4096), Options{})
	ents, err := os.ReadDir(filepath.Join(dir, "docs"))
	if err != nil {
		t.Fatal(err)
	}
	var names, want []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	for i := range docCount {
		want = append(want, fmt.Sprintf("f%02d", i))
	}
	if !slices.Equal(names, want) {
		t.Errorf("docs/ lists %v, want %v", names, want)
	}
	if ents, err := os.ReadDir(filepath.Join(dir, "empty")); err != nil || len(ents) != 0 {
		t.Errorf("empty/: %v, %v", ents, err)
	}
	for i := range docCount {
		p := filepath.Join(dir, "docs", fmt.Sprintf("f%02d", i))
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if st.Size() != int64(len(docContent(i))) || !bytes.Equal(b, docContent(i)) {
			t.Errorf("%s: size %d, content equal: %v", p, st.Size(), bytes.Equal(b, docContent(i)))
		}
		if err := unix.Access(p, unix.R_OK); err != nil {
			t.Errorf("access %s: %v", p, err)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "docs", "nothing")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stat of a missing name: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "docs", "f00"), nil, 0); err == nil {
		t.Error("a read-only file opened for writing")
	}
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	if st.Blocks != 1000 || st.Bfree != 400 || st.Bavail != 300 || st.Bsize != 4096 || st.Namelen != 255 {
		t.Errorf("statfs: %+v", st)
	}
	if _, err := unix.Getxattr(filepath.Join(dir, "docs", "f00"), "user.x", make([]byte, 64)); !errors.Is(err, unix.ENOTSUP) && !errors.Is(err, unix.ENODATA) {
		t.Errorf("getxattr: %v", err)
	}
	if _, err := unix.Listxattr(filepath.Join(dir, "docs", "f00"), make([]byte, 64)); err != nil && !errors.Is(err, unix.ENOTSUP) {
		t.Errorf("listxattr: %v", err)
	}
	if err := os.Mkdir(filepath.Join(dir, "new"), 0o755); !errors.Is(err, unix.ENOSYS) && !errors.Is(err, unix.EROFS) && !errors.Is(err, unix.EPERM) && !errors.Is(err, unix.ENOTSUP) {
		t.Errorf("mkdir, which the tree does not implement: %v", err)
	}
}

// TestConcurrentWriters writes from goroutines on threads pinned to each
// CPU, so that every queue serves, each into its own region, and checks
// the result against the model.
func TestConcurrentWriters(t *testing.T) {
	const writers, region = 8, 1 << 20
	root := newTree(writers * region)
	dir, srv := mountTree(t, root, Options{Depth: 2})
	model := make([]byte, writers*region)
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			var set unix.CPUSet
			set.Set(w % runtime.NumCPU())
			_ = unix.SchedSetaffinity(0, &set)
			fd, err := unix.Open(filepath.Join(dir, "disk.img"), os.O_RDWR|unix.O_CLOEXEC, 0)
			if err != nil {
				errs <- err
				return
			}
			f := os.NewFile(uintptr(fd), "disk.img")
			defer f.Close()
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			mine := model[w*region : (w+1)*region]
			for i := range 400 {
				n := 1 + rng.IntN(64<<10)
				if i%10 == 0 {
					n = 128<<10 + rng.IntN(256<<10)
				}
				off := rng.IntN(region - n + 1)
				buf := make([]byte, n)
				for j := range buf {
					buf[j] = byte(rng.Uint32())
				}
				if _, err := f.WriteAt(buf, int64(w*region+off)); err != nil {
					errs <- fmt.Errorf("writer %d: %w", w, err)
					return
				}
				copy(mine[off:], buf)
				if i%37 == 0 {
					if err := f.Sync(); err != nil {
						errs <- fmt.Errorf("writer %d: fsync: %w", w, err)
						return
					}
				}
				if i%5 == 0 {
					got := make([]byte, n)
					if _, err := f.ReadAt(got, int64(w*region+off)); err != nil || !bytes.Equal(got, buf) {
						errs <- fmt.Errorf("writer %d: read back %d at %d: %v", w, n, off, err)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if !bytes.Equal(root.disk.snapshot(), model) {
		t.Error("the file's content differs from the model")
	}
	served := srv.Served()
	for _, q := range srv.queues {
		if q.served.Load() == 0 {
			t.Errorf("queue %d served nothing of %d requests", q.qid, served)
		}
	}
}

// TestUnmountBusy: Unmount refuses while a file is open and succeeds once
// it is closed.
func TestUnmountBusy(t *testing.T) {
	dir, srv := mountTree(t, newTree(4096), Options{})
	f := openFile(t, filepath.Join(dir, "disk.img"), os.O_RDONLY)
	if err := srv.Unmount(); !errors.Is(err, unix.EBUSY) {
		t.Errorf("unmount with an open file: %v, want EBUSY", err)
	}
	f.Close()
	if err := srv.Unmount(); err != nil {
		t.Fatal(err)
	}
	if err := srv.Unmount(); err != nil {
		t.Errorf("second unmount: %v", err)
	}
}

// TestUnmountFromOutside: umount -l while writers run; the server stops
// once the last file is closed, and the writers see errors or success,
// never a hang.
func TestUnmountFromOutside(t *testing.T) {
	dir, srv := mountTree(t, newTree(1<<20), Options{})
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 4096)
			for {
				fd, err := unix.Open(filepath.Join(dir, "disk.img"), os.O_RDWR|unix.O_CLOEXEC, 0)
				if err != nil {
					return // detached: the name is gone
				}
				f := os.NewFile(uintptr(fd), "disk.img")
				for i := range 100 {
					if _, err := f.WriteAt(buf, int64((w*100+i)%256)*4096); err != nil {
						break
					}
				}
				f.Close()
				select {
				case <-stop:
					return
				default:
				}
			}
		}()
	}
	time.Sleep(200 * time.Millisecond)
	if out, err := exec.Command("umount", "-l", dir).CombinedOutput(); err != nil {
		t.Fatalf("umount -l: %v %s", err, out)
	}
	close(stop)
	done := make(chan struct{})
	go func() { wg.Wait(); srv.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("writers or server still running 20 s after umount -l")
	}
}

// TestInterrupt: a client killed while its fsync is in the server gets the
// request interrupted; the handler sees its context end, as with go-fuse.
func TestInterrupt(t *testing.T) {
	root := newTree(4096)
	root.disk.hold = make(chan struct{})
	root.disk.held = make(chan error, 1)
	defer close(root.disk.hold)
	dir, _ := mountTree(t, root, Options{})
	cmd := exec.Command("dd", "if=/dev/zero", "of="+filepath.Join(dir, "disk.img"), "bs=4096", "count=1", "conv=notrunc,fsync")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); root.disk.fsyncs.Load() == 0; {
		if time.Now().After(deadline) {
			t.Fatal("dd sent no FSYNC")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-root.disk.held:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("held FSYNC ended with %v, want its context cancelled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the interrupted FSYNC was not cancelled")
	}
	if err := cmd.Wait(); err == nil {
		t.Error("dd succeeded although killed")
	}
}

// TestAbortCancelsHeld: a request that a handler holds when the
// connection is aborted gets its context cancelled, as go-fuse cancels
// requests when the connection dies; the client gets an error and the
// server stops.
func TestAbortCancelsHeld(t *testing.T) {
	root := newTree(4096)
	root.disk.hold = make(chan struct{})
	root.disk.held = make(chan error, 1)
	defer close(root.disk.hold)
	dir, srv := mountTree(t, root, Options{})
	abort := fusectlAbort(t, dir)
	cmd := exec.Command("dd", "if=/dev/zero", "of="+filepath.Join(dir, "disk.img"), "bs=4096", "count=1", "conv=notrunc,fsync")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); root.disk.fsyncs.Load() == 0; {
		if time.Now().After(deadline) {
			t.Fatal("dd sent no FSYNC")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := os.WriteFile(abort, []byte("1"), 0); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-root.disk.held:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("held FSYNC ended with %v, want its context cancelled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("held FSYNC not cancelled")
	}
	if err := cmd.Wait(); err == nil {
		t.Error("dd succeeded on an aborted connection")
	}
	select {
	case <-srv.stopped:
	case <-time.After(10 * time.Second):
		t.Fatal("server still running after the abort")
	}
}

// fusectlAbort returns the abort file of the FUSE connection mounted at
// dir, mounting the fusectl file system if nothing has.
func fusectlAbort(t *testing.T, dir string) string {
	const ctl = "/sys/fs/fuse/connections"
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		t.Fatal(err)
	}
	abort := fmt.Sprintf("%s/%d/abort", ctl, unix.Minor(st.Dev))
	if _, err := os.Stat(abort); err == nil {
		return abort
	}
	if err := unix.Mount("fusectl", ctl, "fusectl", 0, ""); err != nil {
		t.Skipf("mount fusectl: %v", err)
	}
	t.Cleanup(func() { _ = unix.Unmount(ctl, unix.MNT_DETACH) })
	return abort
}

// TestStarvedQueueIsBoosted: a CPU-bound process pinned to the client's
// CPU would starve a SCHED_IDLE queue thread there; the guard gives it its
// normal priority back, so requests keep flowing.
func TestStarvedQueueIsBoosted(t *testing.T) {
	if testing.Short() {
		t.Skip("timing test")
	}
	root := newTree(1 << 20)
	dir, srv := mountTree(t, root, Options{})
	hog := exec.Command("taskset", "-c", "0", "sh", "-c", "while :; do :; done")
	if err := hog.Start(); err != nil {
		t.Skip(err)
	}
	defer func() { _ = hog.Process.Kill(); _ = hog.Wait() }()

	const writes = 5000
	done := make(chan error, 1)
	start := time.Now()
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		var set unix.CPUSet
		set.Set(0)
		if err := unix.SchedSetaffinity(0, &set); err != nil {
			done <- err
			return
		}
		fd, err := unix.Open(filepath.Join(dir, "disk.img"), unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			done <- err
			return
		}
		defer unix.Close(fd)
		buf := make([]byte, 4096)
		for i := range writes {
			if _, err := unix.Pwrite(fd, buf, int64(i%256)*4096); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("writes still not done after 30 s") // the client then hangs on: cleanup aborts nothing
	}
	// Unguarded, a SCHED_IDLE queue thread beside a busy loop serves a
	// few hundred requests a second.
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("%d writes beside a busy loop took %v", writes, d)
	}
	t.Logf("%d writes beside a busy loop in %v; %d requests served", writes, time.Since(start), srv.Served())
}

// An idle mount costs no CPU: once no request flows and no queue thread is
// boosted, the scheduling guard parks until the next request, instead of
// reading every queue thread's schedstat ten times a second.
func TestIdleGuardParks(t *testing.T) {
	root := newTree(1 << 20)
	dir, srv := mountTree(t, root, Options{})
	if !srv.idle {
		t.Fatal("queue threads are not at SCHED_IDLE: no guard runs")
	}
	parked := func(want bool, within time.Duration) {
		t.Helper()
		deadline := time.Now().Add(within)
		for srv.guardParked.Load() != want {
			if time.Now().After(deadline) {
				t.Fatalf("guard parked = %v after %v; want %v", !want, within, want)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	f := openFile(t, filepath.Join(dir, "disk.img"), os.O_RDWR)
	defer f.Close() // before the unmount at cleanup
	if _, err := f.WriteAt(make([]byte, 4096), 0); err != nil {
		t.Fatal(err)
	}
	parked(true, 2*time.Second)
	wakes := srv.guardWakes.Load()
	time.Sleep(300 * time.Millisecond) // three idle ticks: nothing wakes it
	if !srv.guardParked.Load() || srv.guardWakes.Load() != wakes {
		t.Fatal("the guard woke without a request")
	}
	if _, err := f.WriteAt(make([]byte, 4096), 4096); err != nil {
		t.Fatal(err)
	}
	if srv.guardWakes.Load() == wakes {
		t.Fatal("a request did not wake the guard")
	}
	parked(true, 2*time.Second)
}
