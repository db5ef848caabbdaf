package vsphere

import (
	"context"
	"fmt"

	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/types"
)

// ChangeTracker asks the host which areas of a disk changed since a change
// ID: VirtualMachine.QueryChangedDiskAreas. It is the seam where tests put a
// fake, since the simulator has no changed block tracking.
type ChangeTracker interface {
	QueryChangedDiskAreas(ctx context.Context, req types.QueryChangedDiskAreas) (types.DiskChangeInfo, error)
}

// apiTracker is the real call.
type apiTracker struct{ c *vim25.Client }

func (a apiTracker) QueryChangedDiskAreas(ctx context.Context, req types.QueryChangedDiskAreas) (types.DiskChangeInfo, error) {
	res, err := methods.QueryChangedDiskAreas(ctx, a.c, &req)
	if err != nil {
		return types.DiskChangeInfo{}, err
	}
	return res.Returnval, nil
}

// area is a byte range of a disk.
type area struct{ off, n int64 }

// changedAreas collects the changed areas of disk key of vm at snapshot
// since changeID, calling the tracker from offset 0 until the answers cover
// the whole disk, as the API documents.
func changedAreas(ctx context.Context, t ChangeTracker, vm, snap types.ManagedObjectReference, key int32, size int64, changeID string) ([]area, error) {
	var out []area
	for off := int64(0); off < size; {
		info, err := t.QueryChangedDiskAreas(ctx, types.QueryChangedDiskAreas{
			This: vm, Snapshot: &snap, DeviceKey: key, StartOffset: off, ChangeId: changeID,
		})
		if err != nil {
			return nil, fmt.Errorf("%w: disk %d: %v", ErrNoCBT, key, err)
		}
		if info.Length <= 0 || info.StartOffset+info.Length <= off {
			return nil, fmt.Errorf("%w: disk %d: the host answered no progress at offset %d", ErrNoCBT, key, off)
		}
		for _, a := range info.ChangedArea {
			if a.Start < 0 || a.Length <= 0 || a.Start+a.Length > size {
				return nil, fmt.Errorf("%w: disk %d: changed area %d+%d lies outside the disk", ErrNoCBT, key, a.Start, a.Length)
			}
			out = append(out, area{a.Start, a.Length})
		}
		off = info.StartOffset + info.Length
	}
	return out, nil
}
