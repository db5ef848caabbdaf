package image

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestVMDKGeometry(t *testing.T) {
	cases := []struct {
		size    int64
		adapter string
		want    Geometry
	}{
		// ESXi: 40 GiB lsilogic is 5221/255/63 (83886080 / 16065, rounded down).
		{40 * gib, AdapterLSILogic, Geometry{5221, 255, 63}},
		// VMware Workstation: 40 GiB IDE is 83220/16/63; the ATA field caps it.
		{40 * gib, AdapterIDE, Geometry{65535, 16, 63}},
		{8 * gib, AdapterIDE, Geometry{16644, 16, 63}},
		{2 * gib, AdapterBusLogic, Geometry{261, 255, 63}},
		{2 * gib, AdapterPVSCSI, Geometry{261, 255, 63}},
		// SCSI is not capped: 1 TiB is 133674 cylinders.
		{1 << 40, AdapterLSISAS, Geometry{133674, 255, 63}},
		// Below one cylinder, still one.
		{mib, AdapterLSILogic, Geometry{1, 255, 63}},
		{mib, AdapterIDE, Geometry{2, 16, 63}},
		{512, AdapterIDE, Geometry{1, 16, 63}},
		// Exactly 65535 IDE cylinders is not capped further.
		{65535 * 16 * 63 * 512, AdapterIDE, Geometry{65535, 16, 63}},
	}
	for _, c := range cases {
		if got := VMDKGeometry(c.size, c.adapter); got != c.want {
			t.Errorf("VMDKGeometry(%d, %s) = %v, want %v", c.size, c.adapter, got, c.want)
		}
	}
}

func TestValidate(t *testing.T) {
	good := testMeta("web", 10*mib)
	cases := []struct {
		name string
		edit func(*Meta)
		ok   bool
	}{
		{"good", func(m *Meta) {}, true},
		{"spaces and unicode", func(m *Meta) { m.Name = "web server é 2" }, true},
		{"ide", func(m *Meta) { m.Adapter = AdapterIDE }, true},
		{"empty name", func(m *Meta) { m.Name = "" }, false},
		{"dot", func(m *Meta) { m.Name = "." }, false},
		{"dotdot", func(m *Meta) { m.Name = ".." }, false},
		{"slash", func(m *Meta) { m.Name = "a/b" }, false},
		{"backslash", func(m *Meta) { m.Name = `a\b` }, false},
		{"quote", func(m *Meta) { m.Name = `a"b` }, false},
		{"newline", func(m *Meta) { m.Name = "a\nRW 1 VMFS \"x\"" }, false},
		{"tab", func(m *Meta) { m.Name = "a\tb" }, false},
		{"DEL", func(m *Meta) { m.Name = "a\x7fb" }, false},
		{"C1 NEL", func(m *Meta) { m.Name = "a\u0085b" }, false},
		{"bad UTF-8", func(m *Meta) { m.Name = "a\xffb" }, false},
		{"too long", func(m *Meta) { m.Name = strings.Repeat("x", MaxNameLen+1) }, false},
		{"longest", func(m *Meta) { m.Name = strings.Repeat("x", MaxNameLen) }, true},
		{"zero size", func(m *Meta) { m.Size = 0 }, false},
		{"negative size", func(m *Meta) { m.Size = -512 }, false},
		{"odd size", func(m *Meta) { m.Size = 10*mib + 1 }, false},
		{"largest", func(m *Meta) { m.Size = MaxSize }, true},
		{"too large", func(m *Meta) { m.Size = MaxSize + 512 }, false},
		{"adapter", func(m *Meta) { m.Adapter = "nvme" }, false},
	}
	for _, c := range cases {
		m := good
		c.edit(&m)
		err := m.Validate()
		if c.ok != (err == nil) || (err != nil && !errors.Is(err, ErrInvalidMeta)) {
			t.Errorf("%s: Validate() = %v", c.name, err)
		}
	}
}

func TestVMDKDescriptor(t *testing.T) {
	cases := []struct {
		m       Meta
		extent  string
		cid     string
		adapter string
		geom    []string
	}{
		{testMeta("web", 64*mib), `RW 131072 VMFS "web-flat.vmdk"`, "68696e64", "lsilogic",
			[]string{`ddb.geometry.cylinders = "8"`, `ddb.geometry.heads = "255"`, `ddb.geometry.sectors = "63"`}},
		{func() Meta {
			m := testMeta("my disk", 10*mib+4096)
			m.Adapter = AdapterIDE
			copy(m.ID[:4], []byte{0xff, 0xff, 0xff, 0xff}) // "no parent" CID is moved
			return m
		}(), `RW 20488 VMFS "my disk-flat.vmdk"`, "fffffffd", "ide",
			[]string{`ddb.geometry.cylinders = "20"`, `ddb.geometry.heads = "16"`}},
	}
	for _, c := range cases {
		d := string(VMDKDescriptor(c.m))
		lines := strings.Split(d, "\n")
		ext := -1
		for i, l := range lines {
			if strings.HasPrefix(l, "RW ") {
				if ext >= 0 {
					t.Fatalf("two extent lines:\n%s", d)
				}
				ext = i
			}
		}
		if ext < 1 || lines[ext] != c.extent || lines[ext-1] != "# Extent description" {
			t.Errorf("extent line %d, want %q directly after the comment:\n%s", ext, c.extent, d)
		}
		id := c.m.ID
		want := []string{
			"# Disk DescriptorFile", "version=1", "CID=" + c.cid, "parentCID=ffffffff",
			`createType="vmfs"`, "# The Disk Data Base", "#DDB",
			`ddb.adapterType = "` + c.adapter + `"`,
			`ddb.virtualHWVersion = "4"`,
			`ddb.uuid = "` + ddbUUID(id) + `"`,
			`ddb.longContentID = "` + hexs(id[4:]) + c.cid + `"`,
		}
		for _, w := range append(want, c.geom...) {
			if !contains(lines, w) {
				t.Errorf("descriptor lacks %q:\n%s", w, d)
			}
		}
	}
	if got := ddbUUID([16]byte{0x60, 0, 0xc2, 0x99, 0xd3, 0xf5, 0xdc, 0xad, 0x9e, 0x25, 0x3e, 0x89, 0x48, 0x2c, 0x3f, 0xde}); got != "60 00 c2 99 d3 f5 dc ad-9e 25 3e 89 48 2c 3f de" {
		t.Errorf("ddbUUID = %q", got)
	}
}

func hexs(b []byte) string {
	const digits = "0123456789abcdef"
	var s strings.Builder
	for _, c := range b {
		s.WriteByte(digits[c>>4])
		s.WriteByte(digits[c&15])
	}
	return s.String()
}

func contains(lines []string, s string) bool {
	for _, l := range lines {
		if l == s {
			return true
		}
	}
	return false
}

// TestDescriptorCommentRule shows qemu's double count when an extent line
// follows a blank line, so the comment before it is not decoration.
func TestDescriptorCommentRule(t *testing.T) {
	dir := t.TempDir()
	size := 4 * mib
	newRaw(t, dir, "d-flat.vmdk", size)
	desc := string(VMDKDescriptor(testMeta("d", size)))
	for _, c := range []struct {
		desc string
		want int64
	}{
		{desc, size},
		// One blank line before the extent: counted twice; two: three times.
		{strings.Replace(desc, "# Extent description\n", "", 1), 2 * size},
		{strings.Replace(desc, "# Extent description\n", "\n", 1), 3 * size},
	} {
		path := filepath.Join(dir, "d.vmdk")
		if err := os.WriteFile(path, []byte(c.desc), 0o600); err != nil {
			t.Fatal(err)
		}
		if got := info(t, path, "").VirtualSize; got != c.want {
			t.Errorf("qemu-img info: virtual size %d, want %d for\n%s", got, c.want, c.desc)
		}
	}
}
