package cdp

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hindsight-cdp/hindsight/store"
)

// SectorSize is the logical sector of a protected disk: writes must be
// aligned to it, as on a real block device.
const SectorSize = 512

// ErrMisaligned: a write does not start and end on a sector boundary.
var ErrMisaligned = errors.New("cdp: write not aligned to the 512-byte sector")

// Device is a protected disk as a read-write block device, the common core of
// the capture front ends (FUSE tap, NBD). Reads show the newest state; every
// write is journaled as its own point, in the order it is acknowledged;
// Flush returns once everything acknowledged before it is durable.
type Device struct {
	r *store.Repo
	d store.Disk

	// mu orders writes: a partial block is read, patched and journaled as one
	// step, and the journal order is the acknowledgement order.
	mu sync.Mutex

	writes, bytes, blocks, flushes atomic.Uint64
	lastWrite                      atomic.Int64 // unix nanoseconds
	published                      atomic.Uint64
	publishedAt                    atomic.Int64 // time of the published point, unix nanoseconds
	durableAt                      atomic.Int64 // newest write known durable, unix nanoseconds
	started                        time.Time
	frontEnd                       string

	// hooks, set before the device serves (SetHooks).
	hooks Hooks

	// backing, if set, is the primary disk: reads come from it and every
	// write goes to it first, then to the journal (see Backed).
	backing *os.File
}

// NewDevice serves disk d of the writer repository r through frontEnd ("tap", "nbd").
func NewDevice(r *store.Repo, d store.Disk, frontEnd string) *Device {
	return &Device{r: r, d: d, started: time.Now(), frontEnd: frontEnd}
}

// Hooks let the process that runs a device learn of its activity without
// polling it. Each is optional and must not block.
type Hooks struct {
	// Written is called after each journaled write.
	Written func()
	// Flushed is called after each Flush with how long it took.
	Flushed func(time.Duration)
	// Synced, if set, is called once a Flush made the journal durable;
	// the Flush waits for it and fails with its error: a synchronous
	// replica waits there until it has the journal durable too.
	Synced func() error
}

// SetHooks installs h; call it before the device serves.
func (v *Device) SetHooks(h Hooks) { v.hooks = h }

// Disk is the protected disk.
func (v *Device) Disk() store.Disk { return v.d }

// Size is the disk's size in bytes.
func (v *Device) Size() int64 { return v.d.Size }

// Backed makes f, a file or device of the disk's size, the primary copy of
// the disk, the DiskSafe model: reads come from f; a write goes to f first
// and then to the journal, and is acknowledged after both; Flush syncs f,
// then the journal. A crash between the two writes leaves f ahead of the
// journal, which Resync repairs when protection starts again.
func (v *Device) Backed(f *os.File) { v.backing = f }

// ReadAt reads the newest state.
func (v *Device) ReadAt(p []byte, off int64) (int, error) {
	if v.backing != nil {
		return v.backing.ReadAt(p, off)
	}
	return v.r.ReadNewest(v.d, p, off)
}

// check refuses writes that are misaligned or lie past the end.
func (v *Device) check(off, n int64) error {
	if err := v.checkRange(off, n); err != nil {
		return err
	}
	if off%SectorSize != 0 || n%SectorSize != 0 {
		return fmt.Errorf("%w: %d bytes at %d", ErrMisaligned, n, off)
	}
	return nil
}

// checkRange refuses writes that lie past the end.
func (v *Device) checkRange(off, n int64) error {
	if off < 0 || n < 0 || off > v.d.Size || n > v.d.Size-off {
		return fmt.Errorf("%w: %d bytes at %d on disk %q of %d bytes", store.ErrOutOfRange, n, off, v.d.Name, v.d.Size)
	}
	return nil
}

// WriteAt journals p at off as one point. It is visible to reads when it
// returns and durable after the next Flush.
func (v *Device) WriteAt(p []byte, off int64) (int, error) {
	if err := v.check(off, int64(len(p))); err != nil {
		return 0, err
	}
	return v.WriteFileAt(p, off)
}

// WriteFileAt is WriteAt without the sector rule, for a front end that is a
// file (the tap): partial sectors are read, patched and journaled. A file
// cannot insist on sectors, because FUSE direct I/O splits a write whose
// buffer is not page-aligned at page boundaries: an aligned 1 MiB write from
// such a buffer arrives as pieces that are not aligned.
func (v *Device) WriteFileAt(p []byte, off int64) (int, error) {
	if err := v.checkRange(off, int64(len(p))); err != nil {
		return 0, err
	}
	if err := v.write(off, int64(len(p)), p); err != nil {
		return 0, err
	}
	return len(p), nil
}

// zeroChunk bounds the memory of one step of a large Zero.
const zeroChunk = 8 << 20

// Zero makes n bytes at off zeros (write-zeroes and trim): zero blocks cost
// no content. A large range is journaled as several points.
func (v *Device) Zero(off, n int64) error {
	if err := v.check(off, n); err != nil {
		return err
	}
	for n > 0 {
		k := min(n, zeroChunk)
		if err := v.write(off, k, nil); err != nil {
			return err
		}
		off, n = off+k, n-k
	}
	return nil
}

// write journals src (nil: n zeros) at off as one step. Whole blocks are
// queued straight from src; blocks only partly covered are read first and
// patched.
func (v *Device) write(off, n int64, src []byte) error {
	if n == 0 {
		return nil
	}
	bs := int64(v.d.BlockSize)
	first, last := off/bs, (off+n-1)/bs
	v.mu.Lock()
	defer v.mu.Unlock()
	buf := src
	if off%bs != 0 || n%bs != 0 {
		buf = make([]byte, (last-first+1)*bs)
		if off%bs != 0 {
			if _, err := v.ReadAt(buf[:bs], first*bs); err != nil {
				return err
			}
		}
		if (off+n)%bs != 0 && (last > first || off%bs == 0) {
			if _, err := v.ReadAt(buf[len(buf)-int(bs):], last*bs); err != nil {
				return err
			}
		}
		part := buf[off-first*bs : off-first*bs+n]
		if src != nil {
			copy(part, src)
		} else {
			clear(part)
		}
	}
	if v.backing != nil {
		if err := v.writeBacking(buf, off-first*bs, n, off); err != nil {
			return err
		}
	}
	writes := make([]store.BlockWrite, 0, last-first+1)
	for b := first; b <= last; b++ {
		w := store.BlockWrite{Disk: v.d, Block: uint64(b)}
		if buf != nil { // nil: zeros, which cost no copy
			w.Data = buf[(b-first)*bs : (b-first+1)*bs]
		}
		writes = append(writes, w)
	}
	if err := v.r.CaptureAsync(v.d.Timeline, writes); err != nil {
		return fmt.Errorf("journal write to %q at %d: %w", v.d.Name, off, err)
	}
	v.writes.Add(1)
	v.bytes.Add(uint64(n))
	v.blocks.Add(uint64(len(writes)))
	v.lastWrite.Store(time.Now().UnixNano())
	if v.hooks.Written != nil {
		v.hooks.Written()
	}
	return nil
}

// writeBacking writes n bytes of buf (nil: zeros) from at to the backing
// disk at off.
func (v *Device) writeBacking(buf []byte, at, n, off int64) error {
	var err error
	if buf == nil {
		err = WriteZeros(v.backing, off, n)
	} else {
		_, err = v.backing.WriteAt(buf[at:at+n], off)
	}
	if err != nil {
		return fmt.Errorf("write backing disk of %q at %d: %w", v.d.Name, off, err)
	}
	return nil
}

// WriteZeros writes n zeros at off of w, a MiB at a time.
func WriteZeros(w io.WriterAt, off, n int64) error {
	zeros := make([]byte, min(n, 1<<20))
	for n > 0 {
		k := min(n, int64(len(zeros)))
		if _, err := w.WriteAt(zeros[:k], off); err != nil {
			return err
		}
		off, n = off+k, n-k
	}
	return nil
}

// Flush returns once every write acknowledged before it is durable.
func (v *Device) Flush() error {
	start := time.Now()
	v.flushes.Add(1)
	if v.backing != nil {
		if err := v.backing.Sync(); err != nil {
			return fmt.Errorf("sync backing disk of %q: %w", v.d.Name, err)
		}
	}
	last := v.lastWrite.Load()
	if err := v.r.Sync(); err != nil {
		return err
	}
	if v.hooks.Synced != nil {
		if err := v.hooks.Synced(); err != nil {
			return err
		}
	}
	v.Durable(last)
	if v.hooks.Flushed != nil {
		v.hooks.Flushed(time.Since(start))
	}
	return nil
}

// Durable records that every write up to the time last (unix nanoseconds,
// a LastWrite read before a sync of the journal began) is durable.
func (v *Device) Durable(last int64) {
	for {
		cur := v.durableAt.Load()
		if last <= cur || v.durableAt.CompareAndSwap(cur, last) {
			return
		}
	}
}

// LastWriteNano is the time of the newest write, for Durable.
func (v *Device) LastWriteNano() int64 { return v.lastWrite.Load() }

// Status is what a running capture front end reports of its disk: written to
// <repo>/run/<disk>.json every sync interval, read by `hindsight status`.
type Status struct {
	DeviceStats
	FrontEnd      string    `json:"front_end"`
	PID           int       `json:"pid"`
	Running       bool      `json:"running"`
	Updated       time.Time `json:"updated"`
	WritesPerSec  float64   `json:"writes_per_sec"`
	BytesPerSec   float64   `json:"bytes_per_sec"`
	PublishedTime time.Time `json:"published_time,omitzero"`
}

// StatusPath is where the front end of disk writes its Status.
func StatusPath(repo, disk string) string { return filepath.Join(repo, "run", disk+".json") }

// ReadStatus reads the last Status a front end of disk wrote; Running is
// false when the process is gone.
func ReadStatus(repo, disk string) (Status, error) {
	var st Status
	b, err := os.ReadFile(StatusPath(repo, disk))
	if err != nil {
		return st, err
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return st, fmt.Errorf("status of %q: %w", disk, err)
	}
	if st.Running && syscall.Kill(st.PID, 0) != nil {
		st.Running = false // killed without a chance to say so
	}
	return st, nil
}

// WriteStatus writes the device's Status for 'hindsight status': its
// counters, and its rates since prev was taken at prevAt. It returns the
// counters and time to pass as prev next time.
func (v *Device) WriteStatus(prev DeviceStats, prevAt time.Time, running bool) (DeviceStats, time.Time) {
	now, cur := time.Now(), v.Stats()
	st := Status{DeviceStats: cur, FrontEnd: v.frontEnd, PID: os.Getpid(), Running: running, Updated: now.UTC()}
	if dt := now.Sub(prevAt).Seconds(); dt > 0 {
		st.WritesPerSec = float64(cur.Writes-prev.Writes) / dt
		st.BytesPerSec = float64(cur.BytesWritten-prev.BytesWritten) / dt
	}
	if t := v.publishedAt.Load(); t != 0 {
		st.PublishedTime = time.Unix(0, t).UTC()
	}
	b, _ := json.MarshalIndent(st, "", "  ")
	path := StatusPath(v.r.Dir(), v.d.Name)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err == nil {
		tmp := path + ".tmp"
		if os.WriteFile(tmp, b, 0o600) == nil {
			os.Rename(tmp, path)
		}
	}
	return cur, now
}

// Published records that the journal was synced and published at head,
// with every write up to last (a LastWriteNano read before the sync began)
// in it: the process that runs several devices syncs once for all.
func (v *Device) Published(head uint64, last int64) {
	v.Durable(last)
	if p, err := v.r.LastPoint(v.d.Timeline); err == nil {
		v.publishedAt.Store(p.Time.UnixNano())
	}
	v.published.Store(head)
}

// DeviceStats are a capture front end's counters since it started.
type DeviceStats struct {
	Disk          string    `json:"disk"`
	Writes        uint64    `json:"writes"`
	BytesWritten  uint64    `json:"bytes_written"`
	BlocksJournal uint64    `json:"blocks_journaled"`
	Flushes       uint64    `json:"flushes"`
	LastWrite     time.Time `json:"last_write,omitzero"`
	// LastDurable is the newest write known durable (flushed or synced by
	// the journal's sync loop); Lag is how far LastWrite is ahead of it.
	LastDurable time.Time     `json:"last_durable_write,omitzero"`
	Lag         time.Duration `json:"lag_ns"`
	Head        uint64        `json:"head"`
	Published   uint64        `json:"published"`
	Since       time.Time     `json:"since"`
}

// Stats reports the device's counters.
func (v *Device) Stats() DeviceStats {
	s := DeviceStats{
		Disk: v.d.Name, Writes: v.writes.Load(), BytesWritten: v.bytes.Load(), BlocksJournal: v.blocks.Load(),
		Flushes: v.flushes.Load(), Head: v.r.Head(), Published: v.published.Load(), Since: v.started,
	}
	last, durable := v.lastWrite.Load(), v.durableAt.Load()
	if last != 0 {
		s.LastWrite = time.Unix(0, last).UTC()
	}
	if durable != 0 {
		s.LastDurable = time.Unix(0, durable).UTC()
	}
	if last > durable {
		s.Lag = time.Duration(last - durable)
	}
	return s
}
