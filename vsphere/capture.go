package vsphere

import (
	"context"
	"fmt"

	"github.com/hindsight-cdp/hindsight/store"
	"github.com/vmware/govmomi/vim25/types"
)

// captureDisk journals into step the blocks of d that differ from the
// journal's newest state, reading the snapshot's disk sd: only the changed
// areas when the previous cycle left a change ID and the tracker answers,
// else the whole disk.
func (c *Client) captureDisk(ctx context.Context, step *store.Step, r *store.Repo, d store.Disk,
	vm, snap types.ManagedObjectReference, sd vmDisk, prev *Capture, tracker ChangeTracker, cap *Capture) (CapturedOne, error) {
	one := CapturedOne{Disk: d.Name, Method: "full", ChangeID: sd.ChangeID}
	ds, flat, err := c.extent(ctx, sd.File)
	if err != nil {
		return one, err
	}
	hf, err := ds.openHTTP(ctx, flat)
	if err != nil {
		return one, err
	}
	if hf.size != d.Size {
		return one, fmt.Errorf("%w: %s is %d bytes, disk %s %d", ErrBadInput, ds.Path(flat), hf.size, d.Name, d.Size)
	}
	latest, err := r.Image(d, r.Head())
	if err != nil {
		return one, err
	}
	areas := []area{{0, d.Size}}
	if id := prevChangeID(prev, d.Name); id != "" && sd.ChangeID != "" {
		got, err := changedAreas(ctx, tracker, vm, snap, sd.Key, d.Size, id)
		if err == nil {
			areas, one.Method = got, "cbt"
		} else {
			c.logf("vsphere: %s: %v; reading the whole disk", d.Name, err)
			cap.Note = joinNote(cap.Note, fmt.Sprintf("disk %s: %v; read whole", d.Name, err))
		}
	}
	bs := int64(d.BlockSize)
	buf := make([]byte, chunk)
	old := make([]store.Hash, chunk/bs)
	zero := store.ZeroHash(d.BlockSize)
	for _, a := range areas {
		start := a.off / bs * bs
		end := min((a.off+a.n+bs-1)/bs*bs, d.Size)
		for off := start; off < end; off += chunk {
			if err := ctx.Err(); err != nil {
				return one, err
			}
			n := min(chunk, end-off)
			p := buf[:n]
			if err := hf.ReadRange(ctx, p, off); err != nil {
				return one, err
			}
			one.Read += n
			first := uint64(off / bs)
			hs := old[:n/bs]
			if err := latest.Hashes(first, hs); err != nil {
				return one, err
			}
			for i := range hs {
				blk := p[int64(i)*bs : int64(i+1)*bs]
				h := zero
				if !store.IsZero(blk) {
					h = store.HashBlock(blk)
				}
				if h == hs[i] {
					continue
				}
				if err := step.PutHashed(d, first+uint64(i), blk, h); err != nil {
					return one, err
				}
				one.Changed++
			}
		}
	}
	return one, nil
}

func prevChangeID(prev *Capture, disk string) string {
	if prev == nil {
		return ""
	}
	for _, d := range prev.Disks {
		if d.Disk == disk {
			return d.ChangeID
		}
	}
	return ""
}

func joinNote(a, b string) string {
	if a == "" {
		return b
	}
	return a + "; " + b
}
