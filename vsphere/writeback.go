package vsphere

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync/atomic"

	"github.com/vmware/govmomi/vim25/types"
)

// WritebackOptions tune a failback into an existing VM.
type WritebackOptions struct {
	VM string
	// OnlyChanged compares the VM's disk with the instant and sends only the
	// blocks that differ.
	OnlyChanged bool
	// LocalDir is where the VM's datastore is mounted on this host (an NFS
	// datastore, say): disks are then written in place, block by block. Without
	// it the datastore's HTTP file access is used, which can only replace a
	// whole file: differing blocks are counted, and the disk is uploaded whole
	// unless none differ.
	LocalDir string
	Progress func(done int64)
}

// WrittenDisk says what writeback did to one disk.
type WrittenDisk struct {
	Disk      string `json:"disk"`
	Target    string `json:"target"` // the flat extent
	Blocks    uint64 `json:"blocks"` // compared units (the disk's block size)
	Differed  uint64 `json:"blocks_differing"`
	Written   uint64 `json:"blocks_written"`
	Bytes     int64  `json:"bytes_written"`
	Compared  bool   `json:"compared"`
	Whole     bool   `json:"whole"` // uploaded as a whole file
	BlockSize int    `json:"block_size"`
}

// Writeback overwrites the disks of a powered-off VM with the instant: disk
// i of the instant goes to the VM's disk i (by the VM's Hindsight record
// when it has one, else in device order); sizes must match.
func (c *Client) Writeback(ctx context.Context, in Instant, opt WritebackOptions) ([]WrittenDisk, error) {
	vm, err := c.findVM(ctx, opt.VM)
	if err != nil {
		return nil, err
	}
	if vm.Runtime.PowerState != types.VirtualMachinePowerStatePoweredOff {
		return nil, fmt.Errorf("%w: %s is %s; power it off before writing back into its disks", ErrPoweredOn, opt.VM, vm.Runtime.PowerState)
	}
	if vm.Snapshot != nil && len(vm.Snapshot.RootSnapshotList) > 0 {
		return nil, fmt.Errorf("%w: %s has snapshots; writing under them would corrupt them: remove them first", ErrBadInput, opt.VM)
	}
	vdisks := disksOf(devices(vm))
	if len(vdisks) != len(in.Disks) {
		return nil, fmt.Errorf("%w: %s has %d disks, %q has %d", ErrBadInput, opt.VM, len(vdisks), in.Source, len(in.Disks))
	}
	if r, ok := record(vm); ok && len(r.Disks) == len(vdisks) { // match by name
		byName := map[string]Disk{}
		for _, d := range in.Disks {
			byName[d.Name] = d
		}
		for i, n := range r.Disks {
			if d, ok := byName[n]; ok {
				in.Disks[i] = d
			}
		}
	}
	var out []WrittenDisk
	var done atomic.Int64
	for i, d := range in.Disks {
		if vdisks[i].Size != d.Size {
			return out, fmt.Errorf("%w: disk %d of %s is %d bytes, %s is %d", ErrBadInput, i, opt.VM, vdisks[i].Size, d.Name, d.Size)
		}
		ds, flat, err := c.extent(ctx, vdisks[i].File)
		if err != nil {
			return out, err
		}
		w := WrittenDisk{Disk: d.Name, Target: ds.Path(flat), BlockSize: blockSize(d)}
		if opt.LocalDir != "" {
			err = writeLocal(ctx, filepath.Join(opt.LocalDir, filepath.FromSlash(flat)), d, opt, &w, &done)
		} else {
			err = c.writeHTTP(ctx, ds, flat, d, opt, &w, &done)
		}
		out = append(out, w)
		if err != nil {
			return out, fmt.Errorf("write back %s into %s: %w", d.Name, w.Target, err)
		}
	}
	return out, nil
}

func blockSize(d Disk) int {
	if d.Store.BlockSize > 0 {
		return d.Store.BlockSize
	}
	return 4096
}

// chunk is how much is compared at a time.
const chunk = 4 << 20

// writeLocal writes d into the flat file at name, in place.
func writeLocal(ctx context.Context, name string, d Disk, opt WritebackOptions, w *WrittenDisk, done *atomic.Int64) error {
	f, err := os.OpenFile(name, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("%w: %v (is --datastore-dir the datastore's mount point?)", ErrBadInput, err)
	}
	defer f.Close()
	if st, err := f.Stat(); err != nil {
		return err
	} else if st.Size() != d.Size {
		return fmt.Errorf("%w: %s is %d bytes, the disk %d", ErrBadInput, name, st.Size(), d.Size)
	}
	w.Compared = opt.OnlyChanged
	bs := w.BlockSize
	src, dst := make([]byte, chunk), make([]byte, chunk)
	for off := int64(0); off < d.Size; off += chunk {
		if err := ctx.Err(); err != nil {
			return err
		}
		n := int(min(chunk, d.Size-off))
		if _, err := d.Image.ReadAt(src[:n], off); err != nil && !errors.Is(err, io.EOF) {
			return err
		}
		if opt.OnlyChanged {
			if _, err := f.ReadAt(dst[:n], off); err != nil && !errors.Is(err, io.EOF) {
				return err
			}
		}
		same := func(b, e int) bool { return opt.OnlyChanged && bytes.Equal(src[b:e], dst[b:e]) }
		for b := 0; b < n; {
			e := min(b+bs, n)
			w.Blocks++
			if same(b, e) {
				b = e
				continue
			}
			w.Differed++
			for e < n && !same(e, min(e+bs, n)) { // one write per run of differing blocks
				e = min(e+bs, n)
				w.Blocks++
				w.Differed++
			}
			if _, err := f.WriteAt(src[b:e], off+int64(b)); err != nil {
				return err
			}
			w.Written += uint64((e - b + bs - 1) / bs)
			w.Bytes += int64(e - b)
			b = e
		}
		if opt.Progress != nil {
			opt.Progress(done.Add(int64(n)))
		}
	}
	if !opt.OnlyChanged {
		w.Differed = 0 // not compared
	}
	return f.Sync()
}

// writeHTTP compares through ranged reads, then uploads the whole extent
// unless nothing differs.
func (c *Client) writeHTTP(ctx context.Context, ds *datastore, flat string, d Disk, opt WritebackOptions, w *WrittenDisk, done *atomic.Int64) error {
	blocks := uint64((d.Size + int64(w.BlockSize) - 1) / int64(w.BlockSize))
	w.Blocks = blocks
	if opt.OnlyChanged {
		hf, err := ds.openHTTP(ctx, flat)
		if err != nil {
			return err
		}
		if hf.size != d.Size {
			return fmt.Errorf("%w: %s is %d bytes, the disk %d", ErrBadInput, w.Target, hf.size, d.Size)
		}
		w.Compared = true
		src, dst := make([]byte, chunk), make([]byte, chunk)
		for off := int64(0); off < d.Size; off += chunk {
			n := int(min(chunk, d.Size-off))
			if _, err := d.Image.ReadAt(src[:n], off); err != nil && !errors.Is(err, io.EOF) {
				return err
			}
			if err := hf.ReadRange(ctx, dst[:n], off); err != nil {
				return err
			}
			for b := 0; b < n; b += w.BlockSize {
				e := min(b+w.BlockSize, n)
				if !bytes.Equal(src[b:e], dst[b:e]) {
					w.Differed++
				}
			}
		}
		if w.Differed == 0 {
			return nil
		}
	}
	pr := io.NewSectionReader(d.Image, 0, d.Size)
	if err := ds.upload(ctx, flat, pr, d.Size, done); err != nil {
		return err
	}
	w.Whole, w.Written, w.Bytes = true, blocks, d.Size
	return nil
}
