package recovery

import (
	"errors"
	"reflect"
	"testing"

	"github.com/hindsight-cdp/hindsight/fs/partition"
)

func TestParseFstab(t *testing.T) {
	fstab := "# /etc/fstab: static file system information.\n" +
		"#\n" +
		"   # an indented comment /not/a/mount\n" +
		"UUID=0a3407de-014b-458b-b5c1-848e92a327a3 /               ext4    errors=remount-ro 0       1\n" +
		"\tLABEL=data\\040disk\t/srv/my\\040data  ext4 defaults 0 2\n" +
		"PARTUUID=1a2b3c4d-02  /boot/  vfat umask=0077 0 1\n" +
		"/dev/sda3 none swap sw 0 0\n" +
		"/swapfile swap swap defaults 0 0\n" +
		"/dev/sdb1 /swapspace swap defaults 0 0\n" +
		"/srv/www /var//www/ none bind 0 0\n" +
		"tmpfs /tmp tmpfs mode=1777 0 0\n" +
		"proc /proc proc defaults 0 0\n" +
		"sysfs /sys sysfs defaults 0 0\n" +
		"\n" +
		"server:/export /mnt/nfs nfs defaults 0 0\n" +
		"/dev/vdb1 relative/dir ext4 defaults\n" +
		"lonely\n" +
		"PARTLABEL=home /home\n" + // two fields: no type given
		"/dev/nvme0n1p3 /var/lib\\134x xfs defaults 0 0\n" +
		"/dev/sdc1 /tab\\011name ext4\n" +
		"/dev/sdd1 /caf\\303\\251 ext4\n" // UTF-8, byte by byte
	want := []fstabEntry{
		{"UUID=0a3407de-014b-458b-b5c1-848e92a327a3", "/"},
		{"LABEL=data disk", "/srv/my data"},
		{"PARTUUID=1a2b3c4d-02", "/boot"},
		{"/srv/www", "/var/www"},
		{"server:/export", "/mnt/nfs"},
		{"PARTLABEL=home", "/home"},
		{"/dev/nvme0n1p3", `/var/lib\x`},
		{"/dev/sdc1", "/tab\tname"},
		{"/dev/sdd1", "/café"},
	}
	if got := parseFstab([]byte(fstab)); !reflect.DeepEqual(got, want) {
		t.Fatalf("parseFstab:\n got %q\nwant %q", got, want)
	}
	if got := parseFstab(nil); got != nil {
		t.Fatalf("empty fstab: %q", got)
	}
}

func TestPartMatches(t *testing.T) {
	p := &Part{Partition: partition.Partition{Index: 2, UUID: "1a2b3c4d-02", Name: "Linux home",
		FS: partition.FS{Type: "ext4", UUID: "0A3407DE-014B-458B-B5C1-848E92A327A3", Label: "data disk"}}}
	for spec, want := range map[string]bool{
		"UUID=0a3407de-014b-458b-b5c1-848e92a327a3":              true, // UUIDs in any case
		`UUID="0a3407de-014b-458b-b5c1-848e92a327a3"`:            true, // quoted, as libmount allows
		"UUID=0a3407de-014b-458b-b5c1-000000000000":              false,
		"/dev/disk/by-uuid/0a3407de-014b-458b-b5c1-848e92a327a3": true,
		"LABEL=data disk":                   true,
		"LABEL=Data disk":                   false, // labels are case-sensitive
		"/dev/disk/by-label/data disk":      true,
		"PARTUUID=1A2B3C4D-02":              true,
		"/dev/disk/by-partuuid/1a2b3c4d-02": true,
		"PARTLABEL=Linux home":              true,
		"/dev/disk/by-partlabel/Linux home": true,
		"/dev/sda2":                         true,
		"/dev/vdb2":                         true,
		"/dev/xvda2":                        true,
		"/dev/nvme0n1p2":                    true,
		"/dev/mmcblk0p2":                    true,
		"/dev/sda12":                        false,
		"/dev/sda":                          false,
		"/dev/nvme0n2":                      false,
		"/dev/mapper/vg-root":               false,
		"/srv/www":                          false, // a bind mount's source
		"UUID=":                             false,
		"LABEL=":                            false,
		"tmpfs":                             false,
		"/dev/disk/by-uuid/":                false,
		"/dev/disk/by-id/wwn-0x5000c500a1b2c3d4-part2":             false,
		"/dev/disk/by-uuid/0a3407de-014b-458b-b5c1-848e92a327a3/x": false,
	} {
		if got := p.matches(spec); got != want {
			t.Errorf("matches(%q) = %v, want %v", spec, got, want)
		}
	}
	empty := &Part{Partition: partition.Partition{Index: 1}}
	for _, spec := range []string{"UUID=", "LABEL=", "PARTUUID=", "PARTLABEL=", `LABEL=""`} {
		if empty.matches(spec) {
			t.Errorf("a part without ids matches %q", spec)
		}
	}
}

func TestAssignMountpoints(t *testing.T) {
	mk := func(i int, uuid string, ready bool) *Part {
		return &Part{Partition: partition.Partition{Index: i, FS: partition.FS{Type: "ext4", UUID: uuid}},
			Name: partName(partition.Partition{Index: i}), ready: ready}
	}
	fstab := map[string]string{
		"root": "UUID=root / ext4 defaults 0 1\nUUID=srv /srv ext4 defaults 0 2\n/dev/sda5 /var ext4\nUUID=gone /gone ext4\n",
	}
	boot, root, srv, vr, off := mk(1, "boot", true), mk(2, "root", true), mk(3, "srv", true), mk(5, "var", true), mk(6, "off", false)
	parts := []*Part{boot, root, srv, vr, off}
	assignMountpoints(parts, func(p *Part) []byte {
		if s, ok := fstab[p.FS.UUID]; ok {
			return []byte(s)
		}
		return nil
	})
	for p, want := range map[*Part]string{boot: "", root: "/", srv: "/srv", vr: "/var", off: ""} {
		if p.Mountpoint != want {
			t.Errorf("%s: mountpoint %q, want %q", p.Name, p.Mountpoint, want)
		}
	}

	// An fstab that names its own filesystem in a way that cannot be matched:
	// the filesystem that holds it is "/".
	a, b := mk(1, "a", true), mk(2, "b", true)
	assignMountpoints([]*Part{a, b}, func(p *Part) []byte {
		if p == b {
			return []byte("/dev/mapper/root / ext4\nUUID=a /boot ext4\n")
		}
		return nil
	})
	if a.Mountpoint != "/boot" || b.Mountpoint != "/" {
		t.Errorf("unmatched root: a %q, b %q", a.Mountpoint, b.Mountpoint)
	}

	// No fstab: a lone filesystem is "/", two are nothing.
	lone := mk(1, "x", true)
	assignMountpoints([]*Part{lone, mk(2, "y", false)}, func(*Part) []byte { return nil })
	if lone.Mountpoint != "/" {
		t.Errorf("lone filesystem: %q", lone.Mountpoint)
	}
	x, y := mk(1, "x", true), mk(2, "y", true)
	assignMountpoints([]*Part{x, y}, func(*Part) []byte { return nil })
	if x.Mountpoint != "" || y.Mountpoint != "" {
		t.Errorf("two filesystems without fstab: %q, %q", x.Mountpoint, y.Mountpoint)
	}
}

func TestLocate(t *testing.T) {
	mk := func(name, mp string, ready bool) *Part {
		return &Part{Name: name, Mountpoint: mp, ready: ready, Status: "mounted"}
	}
	root, srv, srvData, off := mk("p2", "/", true), mk("p3", "/srv", true), mk("p4", "/srv/data", true), mk("p5", "", false)
	off.Status, off.Error = "encrypted", "LUKS"
	parts := []*Part{root, srv, srvData, off}
	for _, c := range []struct {
		p, part, rel string
	}{
		{"/etc/hosts", "p2", "/etc/hosts"},
		{"/srv", "p3", "/"},
		{"/srv/", "p3", "/"},
		{"/srv/site/index.html", "p3", "/site/index.html"},
		{"/srvx/y", "p2", "/srvx/y"},
		{"/srv/data/x", "p4", "/x"},
		{"/srv/../srv/data/x", "p4", "/x"},
		{"/../../srv/x", "p3", "/x"},
		{"srv/x", "p3", "/x"},
		{"p2:/etc/hosts", "p2", "/etc/hosts"},
		{"p3:../../x", "p3", "/x"},
		{"/a:b/c", "p2", "/a:b/c"}, // a colon after a slash is part of a name
	} {
		part, rel, err := locate(parts, c.p)
		if err != nil {
			t.Errorf("locate %q: %v", c.p, err)
			continue
		}
		if part.Name != c.part || rel != c.rel {
			t.Errorf("locate %q = %s %q, want %s %q", c.p, part.Name, rel, c.part, c.rel)
		}
	}
	for _, p := range []string{"p5:/x", "p9:/x", "a:b"} {
		if _, _, err := locate(parts, p); !errors.Is(err, ErrNoFilesystem) {
			t.Errorf("locate %q: %v, want ErrNoFilesystem", p, err)
		}
	}
	// Without an fstab saying which is "/", a path needs a partition name.
	if _, _, err := locate([]*Part{mk("p1", "", true), mk("p2", "", true)}, "/etc/hosts"); !errors.Is(err, ErrNoFilesystem) {
		t.Errorf("no root: %v", err)
	}
	// Nothing mounted at all is not a missing path.
	if _, _, err := locate([]*Part{off}, "/etc/hosts"); err == nil || errors.Is(err, ErrNoFilesystem) {
		t.Errorf("nothing mounted: %v", err)
	}
}
