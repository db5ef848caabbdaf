package image

import (
	"fmt"
	"strings"
)

// VMX is a minimal VM configuration naming the given VMDK descriptors, one
// per SCSI target on LSI Logic controllers (unit 7 is the controller's own),
// so that an instant directory can be registered as a VM as it is. Memory,
// CPUs and guest type are placeholders to adjust on registration.
func VMX(name string, vmdks []string) []byte {
	var b strings.Builder
	kv := func(k, v string) { fmt.Fprintf(&b, "%s = %q\n", k, v) }
	kv(".encoding", "UTF-8")
	kv("config.version", "8")
	kv("virtualHW.version", "14")
	kv("displayName", name)
	kv("guestOS", "other-64")
	kv("memSize", "1024")
	kv("numvcpus", "1")
	for i, f := range vmdks {
		ctl, unit := i/15, i%15
		if unit >= 7 {
			unit++
		}
		if unit == 0 {
			kv(fmt.Sprintf("scsi%d.present", ctl), "TRUE")
			kv(fmt.Sprintf("scsi%d.virtualDev", ctl), "lsilogic")
		}
		dev := fmt.Sprintf("scsi%d:%d", ctl, unit)
		kv(dev+".present", "TRUE")
		kv(dev+".deviceType", "scsi-hardDisk")
		kv(dev+".fileName", f)
	}
	return []byte(b.String())
}
