package vsphere

import (
	"errors"

	"github.com/hindsight-cdp/hindsight/store"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"
)

// controllerOf is the kind of controller disk hangs on among devices, "" if
// it is none Hindsight knows.
func controllerOf(devices []types.BaseVirtualDevice, disk *types.VirtualDisk) string {
	return ControllerKind(object.VirtualDeviceList(devices).FindByKey(disk.ControllerKey))
}

// recordProfile keeps vm's memory, CPUs and guest type as target's VM
// profile, and each disk's controller, so that registering a recovery point
// later re-creates the same VM without flags.
func recordProfile(r *store.Repo, target string, vm mo.VirtualMachine, disks []store.Disk) error {
	if vm.Config == nil {
		return nil
	}
	hw := vm.Config.Hardware
	var errs []error
	errs = append(errs, r.SetProfile(target, store.Profile{MemoryMB: int64(hw.MemoryMB), CPUs: hw.NumCPU, GuestID: vm.Config.GuestId}))
	for i, vd := range disksOf(hw.Device) {
		if i < len(disks) {
			if kind := controllerOf(hw.Device, vd.dev); kind != "" {
				errs = append(errs, r.SetController(disks[i].Name, kind))
			}
		}
	}
	return errors.Join(errs...)
}
