package cdp

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
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
	started                        time.Time
}

// NewDevice serves disk d of the writer repository r.
func NewDevice(r *store.Repo, d store.Disk) *Device {
	return &Device{r: r, d: d, started: time.Now()}
}

// Disk is the protected disk.
func (v *Device) Disk() store.Disk { return v.d }

// Size is the disk's size in bytes.
func (v *Device) Size() int64 { return v.d.Size }

// ReadAt reads the newest state.
func (v *Device) ReadAt(p []byte, off int64) (int, error) {
	im, err := v.r.Image(v.d, v.r.Head())
	if err != nil {
		return 0, err
	}
	return im.ReadAt(p, off)
}

// check refuses writes that are misaligned or lie past the end.
func (v *Device) check(off, n int64) error {
	if off < 0 || n < 0 || off > v.d.Size || n > v.d.Size-off {
		return fmt.Errorf("%w: %d bytes at %d on disk %q of %d bytes", store.ErrOutOfRange, n, off, v.d.Name, v.d.Size)
	}
	if off%SectorSize != 0 || n%SectorSize != 0 {
		return fmt.Errorf("%w: %d bytes at %d", ErrMisaligned, n, off)
	}
	return nil
}

// WriteAt journals p at off as one point. It is visible to reads when it
// returns and durable after the next Flush.
func (v *Device) WriteAt(p []byte, off int64) (int, error) {
	if err := v.check(off, int64(len(p))); err != nil {
		return 0, err
	}
	if err := v.write(off, int64(len(p)), func(dst []byte, at int64) { copy(dst, p[at-off:]) }); err != nil {
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
		if err := v.write(off, k, func(dst []byte, _ int64) { clear(dst) }); err != nil {
			return err
		}
		off, n = off+k, n-k
	}
	return nil
}

// write journals the n bytes at off that fill produces: fill(dst, at) fills
// dst with the bytes for disk offset at. Blocks only partly covered are read
// first and patched.
func (v *Device) write(off, n int64, fill func(dst []byte, at int64)) error {
	if n == 0 {
		return nil
	}
	bs := int64(v.d.BlockSize)
	first, last := off/bs, (off+n-1)/bs
	buf := make([]byte, (last-first+1)*bs)
	v.mu.Lock()
	defer v.mu.Unlock()
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
	fill(buf[off-first*bs:off-first*bs+n], off)
	writes := make([]store.BlockWrite, 0, last-first+1)
	for b := first; b <= last; b++ {
		writes = append(writes, store.BlockWrite{Disk: v.d, Block: uint64(b), Data: buf[(b-first)*bs : (b-first+1)*bs]})
	}
	if _, err := v.r.Capture(v.d.Timeline, writes); err != nil {
		return fmt.Errorf("journal write to %q at %d: %w", v.d.Name, off, err)
	}
	v.writes.Add(1)
	v.bytes.Add(uint64(n))
	v.blocks.Add(uint64(len(writes)))
	v.lastWrite.Store(time.Now().UnixNano())
	return nil
}

// Flush returns once every write acknowledged before it is durable.
func (v *Device) Flush() error {
	v.flushes.Add(1)
	return v.r.Sync()
}

// Run syncs and publishes the journal every interval while there were
// writes, so that a crash loses at most that much unflushed work and readers
// in other processes see new points; it returns when ctx ends, after a last
// sync and publish.
func (v *Device) Run(ctx context.Context, interval time.Duration) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return v.publish()
		case <-t.C:
			if err := v.publish(); err != nil {
				return err
			}
		}
	}
}

func (v *Device) publish() error {
	head := v.r.Head()
	if v.published.Load() == head {
		return nil
	}
	if err := v.r.Sync(); err != nil {
		return err
	}
	if err := v.r.Publish(); err != nil {
		return err
	}
	v.published.Store(head)
	return nil
}

// DeviceStats are a capture front end's counters since it started.
type DeviceStats struct {
	Disk          string    `json:"disk"`
	Writes        uint64    `json:"writes"`
	BytesWritten  uint64    `json:"bytes_written"`
	BlocksJournal uint64    `json:"blocks_journaled"`
	Flushes       uint64    `json:"flushes"`
	LastWrite     time.Time `json:"last_write,omitzero"`
	Head          uint64    `json:"head"`
	Published     uint64    `json:"published"`
	Since         time.Time `json:"since"`
}

// Stats reports the device's counters.
func (v *Device) Stats() DeviceStats {
	s := DeviceStats{
		Disk: v.d.Name, Writes: v.writes.Load(), BytesWritten: v.bytes.Load(), BlocksJournal: v.blocks.Load(),
		Flushes: v.flushes.Load(), Head: v.r.Head(), Published: v.published.Load(), Since: v.started,
	}
	if t := v.lastWrite.Load(); t != 0 {
		s.LastWrite = time.Unix(0, t).UTC()
	}
	return s
}
