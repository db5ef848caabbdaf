package image

import (
	"strings"
	"testing"
)

func TestVMX(t *testing.T) {
	disks := []VMXDisk{{"os.vmdk", "pvscsi"}, {"data.vmdk", "pvscsi"}, {"logs.vmdk", ""}, {"db.vmdk", "nvme"}, {"iso.vmdk", "sata"}}
	for i := 0; i < 8; i++ { // past unit 6, unit 7 (the controller's own) is skipped
		disks = append(disks, VMXDisk{File: "x" + string(rune('a'+i)) + ".vmdk", Controller: "lsilogic"})
	}
	got := string(VMX("db-vm", disks, VMXOptions{MemoryMB: 4096, CPUs: 2, GuestOS: "ubuntu64Guest"}))
	for _, want := range []string{
		`guestOS = "ubuntu-64"`, `memSize = "4096"`, `numvcpus = "2"`,
		`scsi0.virtualDev = "pvscsi"`, `scsi0:0.fileName = "os.vmdk"`, `scsi0:1.fileName = "data.vmdk"`,
		`scsi1.virtualDev = "lsilogic"`, `scsi1:0.fileName = "logs.vmdk"`, `scsi1:8.fileName = "xg.vmdk"`,
		`nvme0.present = "TRUE"`, `nvme0:0.fileName = "db.vmdk"`, `sata0:0.fileName = "iso.vmdk"`,
	} {
		if !strings.Contains(got, want+"\n") {
			t.Errorf("VMX lacks %s:\n%s", want, got)
		}
	}
	if strings.Contains(got, "scsi1:7.") {
		t.Errorf("a disk on the controller's own unit 7:\n%s", got)
	}
	if def := string(VMX("x", []VMXDisk{{File: "x.vmdk"}}, VMXOptions{})); !strings.Contains(def, `memSize = "1024"`) || !strings.Contains(def, `guestOS = "other-64"`) {
		t.Errorf("defaults:\n%s", def)
	}
	for id, want := range map[string]string{"ubuntu64Guest": "ubuntu-64", "windows9_64Guest": "windows9-64", "otherGuest": "other", "centos7-64": "centos7-64"} {
		if got := vmxGuest(id); got != want {
			t.Errorf("vmxGuest(%q) = %q, want %q", id, got, want)
		}
	}
}
