package store

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// Limits on disk geometry.
const (
	MinBlockSize = 512
	MaxBlockSize = 1 << 20
	MaxDiskSize  = 1 << 50 // 1 PiB
)

// CreateDisk adds an empty disk (all zeros, no points yet) on its own timeline.
func (r *Repo) CreateDisk(name string, size int64, blockSize int) (Disk, error) {
	if err := r.writable(); err != nil {
		return Disk{}, err
	}
	if err := ValidName("disk", name); err != nil {
		return Disk{}, err
	}
	if blockSize < MinBlockSize || blockSize > MaxBlockSize || blockSize&(blockSize-1) != 0 {
		return Disk{}, fmt.Errorf("%w: block size %d: must be a power of two from %d to %d", ErrBadGeometry, blockSize, MinBlockSize, MaxBlockSize)
	}
	if size <= 0 || size > MaxDiskSize || size%int64(blockSize) != 0 {
		return Disk{}, fmt.Errorf("%w: disk size %d: must be a positive multiple of the block size %d, at most %d", ErrBadGeometry, size, blockSize, int64(MaxDiskSize))
	}
	r.acquire()
	defer r.wmu.Unlock()
	if err := r.nameFree(name); err != nil {
		return Disk{}, err
	}
	next, err := r.getU64(metaNextDisk)
	if err != nil {
		return Disk{}, err
	}
	id := uint32(next) + 1
	d := Disk{ID: id, Name: name, Size: size, BlockSize: blockSize, Created: time.Now().UTC(), Timeline: id}
	v, _ := json.Marshal(d)
	b := r.db.NewBatch()
	b.Set(diskKey(name), v, nil)
	b.Set(metaNextDisk, be64(nil, uint64(id)), nil)
	if err := r.commitSynced(b, r.head.Load()); err != nil {
		return Disk{}, fmt.Errorf("store: create disk %q: %w", name, err)
	}
	return d, r.publish()
}

// Disk returns the disk of that name, or ErrUnknownDisk.
func (r *Repo) Disk(name string) (Disk, error) {
	if ValidName("disk", name) != nil {
		return Disk{}, fmt.Errorf("%w: %q", ErrUnknownDisk, name)
	}
	v, ok, err := r.get(diskKey(name))
	if err != nil {
		return Disk{}, err
	}
	if !ok {
		return Disk{}, fmt.Errorf("%w: %q (list disks with 'hindsight disk list')", ErrUnknownDisk, name)
	}
	var d Disk
	if err := json.Unmarshal(v, &d); err != nil {
		return Disk{}, fmt.Errorf("store: disk %q: %v: %w", name, err, ErrCorrupt)
	}
	return d, nil
}

// Disks lists every disk, by name.
func (r *Repo) Disks() ([]Disk, error) {
	var out []Disk
	err := r.scan([]byte{kindDisk}, func(k, v []byte) error {
		var d Disk
		if err := json.Unmarshal(v, &d); err != nil {
			return fmt.Errorf("store: disk %q: %v: %w", k[1:], err, ErrCorrupt)
		}
		out = append(out, d)
		return nil
	})
	return out, err
}

// scan calls fn for every key with the prefix, in order.
func (r *Repo) scan(prefix []byte, fn func(k, v []byte) error) error {
	it, err := r.db.NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: prefixEnd(prefix)})
	if err != nil {
		return err
	}
	for it.First(); it.Valid(); it.Next() {
		if err := fn(it.Key(), it.Value()); err != nil {
			it.Close()
			return err
		}
	}
	return errors.Join(it.Error(), it.Close())
}

func (r *Repo) writable() error {
	if r.readOnly {
		return errors.New("store: repository opened read-only")
	}
	return nil
}

func u64(b []byte) uint64 { return binary.BigEndian.Uint64(b) }
