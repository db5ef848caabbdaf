package image

import (
	"cmp"
	"fmt"
	"strings"
)

// VMXDisk is one disk of a VMX: its descriptor and the kind of controller
// it hangs on (lsilogic, lsisas, buslogic, pvscsi, sata, nvme; "" lsilogic).
type VMXDisk struct {
	File       string
	Controller string
}

// VMXOptions are the VM's shape; zero values get placeholders to adjust on
// registration (1024 MiB, 1 CPU, other-64).
type VMXOptions struct {
	MemoryMB int64
	CPUs     int32
	GuestOS  string
}

// scsiDev is the virtualDev of each SCSI controller kind.
var scsiDev = map[string]string{"lsilogic": "lsilogic", "lsisas": "lsisas1068", "buslogic": "buslogic", "pvscsi": "pvscsi"}

// VMX is a minimal VM configuration naming the given disks, so that an
// instant directory can be registered as a VM as it is. Disks go on one
// controller per kind, in order: SCSI kinds on scsiN (unit 7 is the
// controller's own), SATA on sata0, NVMe on nvme0.
func VMX(name string, disks []VMXDisk, opt VMXOptions) []byte {
	var b strings.Builder
	kv := func(k, v string) { fmt.Fprintf(&b, "%s = %q\n", k, v) }
	kv(".encoding", "UTF-8")
	kv("config.version", "8")
	kv("virtualHW.version", "14")
	kv("displayName", name)
	kv("guestOS", cmp.Or(vmxGuest(opt.GuestOS), "other-64"))
	kv("memSize", fmt.Sprint(cmp.Or(opt.MemoryMB, 1024)))
	kv("numvcpus", fmt.Sprint(cmp.Or(opt.CPUs, 1)))
	buses := map[string]string{} // controller kind → bus ("scsi1", "sata0")
	used := map[string]int{}     // bus → disks on it
	nscsi, nother := 0, map[string]int{}
	for _, d := range disks {
		kind := cmp.Or(d.Controller, "lsilogic")
		bus, ok := buses[kind]
		if !ok || used[bus] >= 15 {
			switch kind {
			case "sata", "nvme":
				bus = fmt.Sprintf("%s%d", kind, nother[kind])
				nother[kind]++
			default:
				bus = fmt.Sprintf("scsi%d", nscsi)
				nscsi++
				kv(bus+".virtualDev", cmp.Or(scsiDev[kind], "lsilogic"))
			}
			kv(bus+".present", "TRUE")
			buses[kind] = bus
		}
		unit := used[bus]
		used[bus]++
		if strings.HasPrefix(bus, "scsi") && unit >= 7 {
			unit++
		}
		dev := fmt.Sprintf("%s:%d", bus, unit)
		kv(dev+".present", "TRUE")
		if strings.HasPrefix(bus, "scsi") {
			kv(dev+".deviceType", "scsi-hardDisk")
		}
		kv(dev+".fileName", d.File)
	}
	return []byte(b.String())
}

// vmxGuest turns a vSphere guest ID (ubuntu64Guest, windows9_64Guest) into
// the .vmx form of the same guest (ubuntu-64, windows9-64); the .vmx uses
// the ID without its "Guest" suffix and with "-64" for 64-bit guests.
func vmxGuest(id string) string {
	g, ok := strings.CutSuffix(id, "Guest")
	if !ok {
		return id // already a .vmx name, or empty
	}
	if base, ok := strings.CutSuffix(g, "_64"); ok {
		return base + "-64"
	}
	if base, ok := strings.CutSuffix(g, "64"); ok && base != "" {
		return base + "-64"
	}
	return g
}
