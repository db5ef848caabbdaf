package vsphere

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"path"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
	"github.com/vmware/govmomi/vmdk"
)

// vmDisk is one virtual disk of a VM.
type vmDisk struct {
	Key      int32
	File     string // "[ds] dir/name.vmdk": the descriptor
	Size     int64
	ChangeID string // the backing's change ID (CBT), "" when off
	dev      *types.VirtualDisk
}

// disksOf lists the flat-backed virtual disks of devices, in device order.
func disksOf(devices []types.BaseVirtualDevice) []vmDisk {
	var out []vmDisk
	for _, d := range object.VirtualDeviceList(devices).SelectByType((*types.VirtualDisk)(nil)) {
		disk := d.(*types.VirtualDisk)
		vd := vmDisk{Key: disk.Key, Size: disk.CapacityInBytes, dev: disk}
		if vd.Size == 0 {
			vd.Size = disk.CapacityInKB * 1024
		}
		if b, ok := disk.Backing.(*types.VirtualDiskFlatVer2BackingInfo); ok {
			vd.File, vd.ChangeID = b.FileName, b.ChangeId
		} else if b, ok := disk.Backing.(types.BaseVirtualDeviceFileBackingInfo); ok {
			vd.File = b.GetVirtualDeviceFileBackingInfo().FileName
		}
		out = append(out, vd)
	}
	return out
}

// devices is vm's device list (empty when its config is unreadable).
func devices(vm mo.VirtualMachine) []types.BaseVirtualDevice {
	if vm.Config == nil {
		return nil
	}
	return vm.Config.Hardware.Device
}

// extent finds the flat extent of the descriptor at file ("[ds] dir/x.vmdk"):
// its datastore and path inside it.
func (c *Client) extent(ctx context.Context, file string) (*datastore, string, error) {
	var p object.DatastorePath
	if !p.FromString(file) {
		return nil, "", fmt.Errorf("%w: disk path %q", ErrBadInput, file)
	}
	ds, err := c.datastore(ctx, p.Datastore)
	if err != nil {
		return nil, "", err
	}
	rc, _, err := ds.Download(ctx, p.Path, &soap.DefaultDownload)
	if err != nil {
		return nil, "", fmt.Errorf("vsphere: read descriptor %s: %w", file, err)
	}
	b, err := io.ReadAll(io.LimitReader(rc, 64<<10))
	rc.Close()
	if err != nil {
		return nil, "", fmt.Errorf("vsphere: read descriptor %s: %w", file, err)
	}
	if !bytes.HasPrefix(b, []byte("# Disk DescriptorFile")) {
		return nil, "", fmt.Errorf("%w: %s is not a flat disk's descriptor (sparse and delta disks cannot be read this way)", ErrBadInput, file)
	}
	desc, err := vmdk.ParseDescriptor(bytes.NewReader(b))
	if err != nil {
		return nil, "", fmt.Errorf("vsphere: parse descriptor %s: %w", file, err)
	}
	if len(desc.Extent) != 1 || desc.Extent[0].Type != "VMFS" && desc.Extent[0].Type != "FLAT" {
		return nil, "", fmt.Errorf("%w: %s is not a disk with one flat extent (type %q)", ErrBadInput, file, desc.Type)
	}
	return ds, path.Join(path.Dir(p.Path), desc.Extent[0].Info), nil
}
