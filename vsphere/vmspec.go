package vsphere

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/vim25/types"
)

// VM markers: ExtraConfig keys Hindsight sets on every VM it creates, so
// that it recognises its own VMs (list, --replace, cleanup) and knows which
// datastore files it made.
const (
	keyMode   = "hindsight.mode"   // copy or instant
	keySource = "hindsight.source" // disk or group
	keySeq    = "hindsight.seq"
	keyTime   = "hindsight.time"
	keyDisks  = "hindsight.disks" // disk names, in device order
	keyFiles  = "hindsight.files" // datastore paths Hindsight wrote, '|' separated
	keyDir    = "hindsight.dir"   // datastore folder Hindsight created
)

// Hardware is the VM's virtual hardware besides the disks.
type Hardware struct {
	MemoryMB int64
	CPUs     int32
	GuestID  string // "" means otherGuest64
	Network  string // a port group for one vmxnet3 NIC; "" means none
}

// diskFile is a disk attached from a datastore path.
type diskFile struct {
	Disk
	Path string // "[ds] folder/name.vmdk"
}

// vmSpec builds the spec of a VM whose disks already exist: one controller
// of the disk's kind per disk (shared once a kind has no bus left), each
// disk attached without a file operation.
func vmSpec(name, vmx string, hw Hardware, disks []diskFile, markers map[string]string) (types.VirtualMachineConfigSpec, error) {
	spec := types.VirtualMachineConfigSpec{
		Name:     name,
		GuestId:  hw.GuestID,
		MemoryMB: hw.MemoryMB,
		NumCPUs:  hw.CPUs,
		Files:    &types.VirtualMachineFileInfo{VmPathName: vmx},
	}
	if spec.GuestId == "" {
		spec.GuestId = string(types.VirtualMachineGuestOsIdentifierOtherGuest64)
	}
	var devs object.VirtualDeviceList
	last := map[string]types.BaseVirtualController{}
	for _, d := range disks {
		ctrl, err := newController(devs, d.Controller)
		if err != nil {
			if last[d.Controller] == nil {
				return spec, err
			}
			ctrl = nil // no bus left: share the last controller of this kind
		}
		if ctrl != nil {
			devs = append(devs, ctrl)
			last[d.Controller] = ctrl.(types.BaseVirtualController)
		}
		c := last[d.Controller]
		disk := &types.VirtualDisk{
			VirtualDevice: types.VirtualDevice{
				Backing: &types.VirtualDiskFlatVer2BackingInfo{
					VirtualDeviceFileBackingInfo: types.VirtualDeviceFileBackingInfo{FileName: d.Path},
					DiskMode:                     string(types.VirtualDiskModePersistent),
					ThinProvisioned:              types.NewBool(false),
				},
			},
			CapacityInBytes: d.Size,
			CapacityInKB:    d.Size / 1024,
		}
		disk.Key = devs.NewKey()
		devs.AssignController(disk, c)
		devs = append(devs, disk)
	}
	if hw.Network != "" {
		nic, err := devs.CreateEthernetCard("vmxnet3", &types.VirtualEthernetCardNetworkBackingInfo{
			VirtualDeviceDeviceBackingInfo: types.VirtualDeviceDeviceBackingInfo{DeviceName: hw.Network},
		})
		if err != nil {
			return spec, err
		}
		devs = append(devs, nic)
	}
	for _, d := range devs { // no file operation: the disks exist
		spec.DeviceChange = append(spec.DeviceChange, &types.VirtualDeviceConfigSpec{
			Operation: types.VirtualDeviceConfigSpecOperationAdd, Device: d})
	}
	for _, k := range sortedKeys(markers) {
		spec.ExtraConfig = append(spec.ExtraConfig, &types.OptionValue{Key: k, Value: markers[k]})
	}
	return spec, nil
}

func newController(devs object.VirtualDeviceList, kind string) (types.BaseVirtualDevice, error) {
	var (
		d   types.BaseVirtualDevice
		err error
	)
	switch kind {
	case "sata":
		d, err = devs.CreateSATAController()
	case "nvme":
		d, err = devs.CreateNVMEController()
		if err == nil && d.(types.BaseVirtualController).GetVirtualController().BusNumber < 0 {
			err = fmt.Errorf("no NVMe bus left")
		}
	default:
		d, err = devs.CreateSCSIController(kind)
		if err == nil && d.(types.BaseVirtualController).GetVirtualController().BusNumber < 0 {
			err = fmt.Errorf("no SCSI bus left")
		}
	}
	if err != nil {
		return nil, fmt.Errorf("%w: controller %s: %v", ErrBadInput, kind, err)
	}
	return d, nil
}

// ControllerKind names a controller device as --controller does.
func ControllerKind(d types.BaseVirtualDevice) string {
	switch d.(type) {
	case *types.ParaVirtualSCSIController:
		return "pvscsi"
	case *types.VirtualLsiLogicController:
		return "lsilogic"
	case *types.VirtualLsiLogicSASController:
		return "lsisas"
	case *types.VirtualBusLogicController:
		return "buslogic"
	case *types.VirtualAHCIController:
		return "sata"
	case *types.VirtualNVMEController:
		return "nvme"
	}
	return ""
}

// markers are the ExtraConfig values of a VM made from in.
func markers(mode string, in Instant, files []string, dir string) map[string]string {
	names := make([]string, len(in.Disks))
	for i, d := range in.Disks {
		names[i] = d.Name
	}
	return map[string]string{
		keyMode:   mode,
		keySource: in.Source,
		keySeq:    strconv.FormatUint(in.Seq, 10),
		keyTime:   in.Time.UTC().Format("2006-01-02T15:04:05.999999999Z07:00"),
		keyDisks:  strings.Join(names, ","),
		keyFiles:  strings.Join(files, "|"),
		keyDir:    dir,
	}
}

func sortedKeys(m map[string]string) []string { return slices.Sorted(maps.Keys(m)) }
