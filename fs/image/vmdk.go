package image

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"strings"
)

// virtualHWVersion is the oldest value: the disk attaches to a VM of any
// hardware version (a newer value would refuse older VMs).
const virtualHWVersion = "4"

// Geometry is a cylinders/heads/sectors-per-track triple.
type Geometry struct {
	Cylinders int64
	Heads     int
	Sectors   int
}

// VMDKGeometry returns the ddb.geometry VMware writes for a disk of size bytes
// behind adapter: 63 sectors, 16 heads for IDE and 255 for SCSI, cylinders
// rounded down, at least 1, and at most 65535 for IDE.
func VMDKGeometry(size int64, adapter string) Geometry {
	g := Geometry{Heads: 255, Sectors: 63}
	if adapter == AdapterIDE {
		g.Heads = 16
	}
	g.Cylinders = size / SectorSize / int64(g.Heads*g.Sectors)
	if adapter == AdapterIDE && g.Cylinders > 65535 {
		g.Cylinders = 65535
	}
	if g.Cylinders < 1 {
		g.Cylinders = 1
	}
	return g
}

// CID returns the descriptor content id: the first four bytes of the ID,
// moved off ffffffff (which means "no parent") and fffffffe (which VMware
// tools treat as unknown content).
func (m Meta) CID() uint32 {
	cid := binary.BigEndian.Uint32(m.ID[:4])
	if cid >= 0xfffffffe {
		cid = 0xfffffffd
	}
	return cid
}

// ddbUUID formats the ID as VMware writes ddb.uuid: bytes in hex separated by
// spaces, the two halves by a dash ("60 00 c2 99 d3 f5 dc ad-9e 25 …").
func ddbUUID(id [16]byte) string {
	var b strings.Builder
	for i, c := range id {
		switch {
		case i == 8:
			b.WriteByte('-')
		case i > 0:
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%02x", c)
	}
	return b.String()
}

// VMDKDescriptor returns the ESXi-form descriptor of the flat image described
// by m. m must have passed Validate.
func VMDKDescriptor(m Meta) []byte {
	// Not %q: Go quoting would escape some valid names; Validate already
	// excluded quotes and control characters.
	ext := fmt.Sprintf("RW %d VMFS \"%s\"", m.Size/SectorSize, flatName(m.Name))
	return descriptor(m, "vmfs", ext)
}

// descriptor renders a descriptor. The extent line must directly follow the
// "# Extent description" comment: qemu 7.2 counts an extent line that follows
// a blank line twice.
func descriptor(m Meta, createType, extent string) []byte {
	g := VMDKGeometry(m.Size, m.adapter())
	cid := m.CID()
	var b strings.Builder
	fmt.Fprintf(&b, "# Disk DescriptorFile\n"+
		"version=1\n"+
		"encoding=\"UTF-8\"\n"+
		"CID=%08x\n"+
		"parentCID=ffffffff\n"+
		"isNativeSnapshot=\"no\"\n"+
		"createType=\"%s\"\n"+
		"\n"+
		"# Extent description\n"+
		"%s\n"+
		"\n"+
		"# The Disk Data Base\n"+
		"#DDB\n"+
		"\n", cid, createType, extent)
	ddb := [][2]string{
		{"adapterType", m.adapter()},
		{"geometry.cylinders", fmt.Sprint(g.Cylinders)},
		{"geometry.heads", fmt.Sprint(g.Heads)},
		{"geometry.sectors", fmt.Sprint(g.Sectors)},
		{"longContentID", fmt.Sprintf("%s%08x", hex.EncodeToString(m.ID[4:]), cid)},
		{"uuid", ddbUUID(m.ID)},
		{"virtualHWVersion", virtualHWVersion},
	}
	for _, kv := range ddb {
		fmt.Fprintf(&b, "ddb.%s = \"%s\"\n", kv[0], kv[1])
	}
	return []byte(b.String())
}
