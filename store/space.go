package store

import (
	"fmt"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// A journal that meets a full filesystem half way through a step is left
// with a sticky error (the capture queue, the segment writer) or, if pebble
// meets it, ends the process. So the writer refuses new writes while the
// repository's filesystem has less than Options.MinFree available, before
// anything of them is queued or appended: CaptureAsync, Begin, and each
// block an import appends (segments.add). What was accepted before, and
// everything the journal does with it (commits, flushes, compactions,
// Sync), then runs in the reserve, and never meets ENOSPC. Writes are
// accepted again as soon as space is back: nothing is sticky.
//
// The check costs a mutex and a clock read: the available space is read
// with statfs at most every spaceRefresh, or after spaceRefreshBytes were
// accepted; in between, what was accepted counts as used, as does what the
// writer held in memory, unwritten, when statfs was read.

// ErrNoSpace: the repository's filesystem has less free space than the
// writer keeps in reserve (Options.MinFree), and the write was refused
// before any of it was journaled. errors.Is(err, syscall.ENOSPC) holds too,
// and errors.As finds syscall.ENOSPC, so front ends answer ENOSPC. Check it
// with errors.Is.
var ErrNoSpace error = noSpaceError{}

type noSpaceError struct{}

func (noSpaceError) Error() string {
	return "store: the repository's filesystem is full (no space left on device)"
}

// Is makes errors.Is(err, syscall.ENOSPC) hold.
func (noSpaceError) Is(target error) bool { return target == syscall.ENOSPC }

// As lets errors.As find syscall.ENOSPC, as front ends map errnos.
func (noSpaceError) As(target any) bool {
	if p, ok := target.(*syscall.Errno); ok {
		*p = syscall.ENOSPC
		return true
	}
	return false
}

// DefaultMinFree is the reserve when Options.MinFree is zero, on a
// filesystem of at least 8 × DefaultMinFree; a smaller one keeps an eighth
// of its size. What the writer holds in memory and has not written yet
// (queued writes, up to queueBytes = 64 MiB, and segment chunks, up to
// 24 MiB) is counted as used on top of what statfs says, so the reserve
// need not hold it. The reserve covers what the journal writes after it
// accepted a write and what statfs cannot foresee, each at its bound:
// pebble's WAL, up to a memtable (64 MiB); the flush of that memtable
// (≤ 64 MiB); the compaction after it (L0 into the base level,
// LBaseMaxBytes plus L0, ~32 MiB; more for deeper levels); an import's
// batch in records.log (≤ stepBatchBytes, 32 MiB); a view's copy of the
// WAL; ~200 MiB in all. The rest leaves prune and gc room to run (their
// index changes and compactions): that is how a user gets space back.
const DefaultMinFree = 512 << 20

// spaceRefresh and spaceRefreshBytes bound how stale the writer's view of
// the free space may be.
const (
	spaceRefresh      = 100 * time.Millisecond
	spaceRefreshBytes = 4 << 20
)

// spaceGuard is the repository's view of its filesystem's free space.
type spaceGuard struct {
	dir     string
	minFree uint64                                           // Options.MinFree (0: the default)
	statfs  func(dir string) (free, total uint64, err error) // statfsSpace; tests inject
	every   time.Duration                                    // spaceRefresh; tests change it
	off     bool                                             // admit everything: only BenchmarkCapture4KSync64 sets it, to measure the check

	// inflight is what the writer accepted and has not handed to the
	// kernel yet (Repo.inflight; nil: nothing): statfs does not see it.
	inflight func() uint64

	mu    sync.Mutex
	known bool // free and total were read at least once
	free  uint64
	total uint64
	at    time.Time // when they were read
	carry uint64    // inflight then
	since uint64    // bytes accepted since then

	refused  uint64 // writes refused since the repository was opened
	refusing bool   // the newest write was refused
}

func newSpaceGuard(dir string, opt Options) *spaceGuard {
	g := &spaceGuard{dir: dir, minFree: opt.MinFree, statfs: statfsSpace, every: spaceRefresh}
	if opt.statfs != nil {
		g.statfs = opt.statfs
	}
	return g
}

// statfsSpace reads the bytes available to unprivileged users (what df
// shows as Avail) and the size of dir's filesystem.
func statfsSpace(dir string) (free, total uint64, err error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, 0, fmt.Errorf("store: statfs %s: %w", dir, err)
	}
	bs := uint64(st.Frsize)
	if bs == 0 {
		bs = uint64(st.Bsize)
	}
	return st.Bavail * bs, st.Blocks * bs, nil
}

// reserve is the free space kept back on a filesystem of total bytes.
func (g *spaceGuard) reserve(total uint64) uint64 {
	if g.minFree > 0 {
		return g.minFree
	}
	return min(DefaultMinFree, total/8)
}

// refresh reads the free space now. g.mu is held.
func (g *spaceGuard) refresh(now time.Time) {
	free, total, err := g.statfs(g.dir)
	g.at = now
	if err != nil {
		return // keep the last answer: the writes meet the filesystem's own
	}
	g.free, g.total, g.known, g.since, g.carry = free, total, true, 0, 0
	if g.inflight != nil {
		g.carry = g.inflight()
	}
}

// admit accepts n bytes about to be journaled, or refuses them with
// ErrNoSpace when they would eat into the reserve.
func (g *spaceGuard) admit(n uint64) error {
	if g.off {
		return nil
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if now := time.Now(); !g.known || g.since >= spaceRefreshBytes || now.Sub(g.at) >= g.every {
		g.refresh(now)
	}
	if !g.known {
		return nil
	}
	res := g.reserve(g.total)
	if used := g.carry + g.since + n; g.free < res || g.free-res < used {
		g.refused++
		g.refusing = true
		return fmt.Errorf("%w: %s free on the filesystem of %s, %s of it taken by writes under way, %s kept in reserve for the journal",
			ErrNoSpace, mib(g.free), g.dir, mib(g.carry+g.since), mib(res))
	}
	g.since += n
	g.refusing = false
	return nil
}

// space reads the free space now.
func (g *spaceGuard) space() (free, total, reserve uint64, err error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	free, total, err = g.statfs(g.dir)
	if err != nil {
		return 0, 0, 0, err
	}
	g.free, g.total, g.known, g.at = free, total, true, time.Now()
	g.since, g.carry = 0, 0
	if g.inflight != nil {
		g.carry = g.inflight()
	}
	return free, total, g.reserve(total), nil
}

// Space reads the free space (bytes available, as df shows) and the size
// of the repository's filesystem; low says the free space is below twice
// the reserve (MinFree): writes are refused with ErrNoSpace at the reserve,
// and should be warned of before. A filesystem that cannot be read shows
// as 0, 0, false.
func (r *Repo) Space() (free, total uint64, low bool) {
	free, total, res, err := r.space.space()
	if err != nil {
		return 0, 0, false
	}
	return free, total, free < 2*res
}

// Refused says how many writes the writer refused with ErrNoSpace since
// the repository was opened, and whether it refused the newest one: the
// filesystem is full as far as the journal is concerned.
func (r *Repo) Refused() (n uint64, now bool) {
	r.space.mu.Lock()
	defer r.space.mu.Unlock()
	return r.space.refused, r.space.refusing
}

// MinFree is the free space the writer keeps in reserve on the repository's
// filesystem (Options.MinFree, or the default for its size).
func (r *Repo) MinFree() uint64 {
	r.space.mu.Lock()
	defer r.space.mu.Unlock()
	if !r.space.known {
		r.space.refresh(time.Now())
	}
	return r.space.reserve(r.space.total)
}

// inflight is what the writer accepted and has not handed to the kernel:
// queued writes (before compression) and appended segment bytes.
func (r *Repo) inflight() uint64 {
	n := uint64(r.segs.unwritten.Load())
	if q := r.q; q != nil {
		q.mu.Lock()
		n += uint64(q.bytes)
		q.mu.Unlock()
	}
	return n
}

func mib(n uint64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }
