package image

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"
)

// ErrInvalidVHDFooter: bytes are not a valid VHD footer. Test with errors.Is.
var ErrInvalidVHDFooter = errors.New("image: invalid VHD footer")

// VHD disk types.
const (
	VHDFixed        = 2
	VHDDynamic      = 3
	VHDDifferencing = 4
)

// Footer field offsets (VHD specification 1.0, "Hard Disk Footer Format").
const (
	vhdCookie      = 0  // [8] "conectix"
	vhdFeatures    = 8  // u32
	vhdVersion     = 12 // u32
	vhdDataOffset  = 16 // u64
	vhdTimestamp   = 24 // u32 seconds since 2000-01-01 UTC
	vhdCreatorApp  = 28 // [4]
	vhdCreatorVer  = 32 // u32
	vhdCreatorOS   = 36 // [4]
	vhdOrigSize    = 40 // u64
	vhdCurSize     = 48 // u64
	vhdGeometry    = 56 // u16 cylinders, u8 heads, u8 sectors per track
	vhdDiskType    = 60 // u32
	vhdChecksum    = 64 // u32
	vhdUniqueID    = 68 // [16]
	vhdSavedState  = 84 // u8; 427 reserved zero bytes follow
	vhdFeatureBase = 2  // "reserved, must always be set"
)

var vhdEpoch = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

// The creator is Hyper-V's: qemu takes the disk size from current_size only
// for creators it trusts (see the package doc), and Hyper-V/Azure ignore it.
const (
	vhdCreatorAppID = "win "
	vhdCreatorOSID  = "Wi2k"
	vhdCreatorVerID = 0x000a0000 // 10.0
)

// VHDInfo is a decoded VHD footer.
type VHDInfo struct {
	Features       uint32
	Version        uint32
	DataOffset     uint64
	Created        time.Time
	CreatorApp     string
	CreatorVersion uint32
	CreatorOS      string
	OriginalSize   int64
	Size           int64 // current size: the virtual disk's size
	Geometry       Geometry
	DiskType       uint32
	Checksum       uint32
	UniqueID       [16]byte
	SavedState     bool
}

// VHDGeometry returns the CHS geometry the VHD specification's algorithm
// gives for a disk of size bytes. It may cover less than size.
func VHDGeometry(size int64) Geometry {
	total := size / SectorSize
	if total > 65535*16*255 {
		total = 65535 * 16 * 255
	}
	var spt, heads, cth int64
	if total >= 65535*16*63 {
		spt, heads = 255, 16
		cth = total / spt
	} else {
		spt = 17
		cth = total / spt
		heads = max((cth+1023)/1024, 4)
		if cth >= heads*1024 || heads > 16 {
			spt, heads = 31, 16
			cth = total / spt
		}
		if cth >= heads*1024 {
			spt, heads = 63, 16
			cth = total / spt
		}
	}
	return Geometry{Cylinders: cth / heads, Heads: int(heads), Sectors: int(spt)}
}

// vhdSum is the byte sum of a footer with its checksum field taken as zero.
func vhdSum(f []byte) uint32 {
	var sum uint32
	for i, c := range f[:SectorSize] {
		if i < vhdChecksum || i >= vhdChecksum+4 {
			sum += uint32(c)
		}
	}
	return sum
}

// VHDFooter returns the fixed-disk footer for m. Sizes above MaxVHDSize are
// encoded as given but no reader accepts them.
func VHDFooter(m Meta) [SectorSize]byte {
	var f [SectorSize]byte
	be := binary.BigEndian
	copy(f[vhdCookie:], "conectix")
	be.PutUint32(f[vhdFeatures:], vhdFeatureBase)
	be.PutUint32(f[vhdVersion:], 0x00010000)
	be.PutUint64(f[vhdDataOffset:], math.MaxUint64) // fixed disks have no header
	be.PutUint32(f[vhdTimestamp:], vhdTime(m.Created))
	copy(f[vhdCreatorApp:], vhdCreatorAppID)
	be.PutUint32(f[vhdCreatorVer:], vhdCreatorVerID)
	copy(f[vhdCreatorOS:], vhdCreatorOSID)
	be.PutUint64(f[vhdOrigSize:], uint64(m.Size))
	be.PutUint64(f[vhdCurSize:], uint64(m.Size))
	g := VHDGeometry(m.Size)
	be.PutUint16(f[vhdGeometry:], uint16(g.Cylinders))
	f[vhdGeometry+2] = byte(g.Heads)
	f[vhdGeometry+3] = byte(g.Sectors)
	be.PutUint32(f[vhdDiskType:], VHDFixed)
	copy(f[vhdUniqueID:], m.ID[:])
	be.PutUint32(f[vhdChecksum:], ^vhdSum(f[:]))
	return f
}

// vhdTime clamps t into the footer's range: 2000-01-01 to 2136.
func vhdTime(t time.Time) uint32 {
	s := t.Unix() - vhdEpoch.Unix()
	switch {
	case s < 0:
		return 0
	case s > math.MaxUint32:
		return math.MaxUint32
	}
	return uint32(s)
}

// ParseVHDFooter decodes a 512-byte VHD footer, checking the cookie, the
// checksum, the disk type and the sizes.
func ParseVHDFooter(b []byte) (VHDInfo, error) {
	if len(b) != SectorSize {
		return VHDInfo{}, fmt.Errorf("%w: %d bytes, want %d", ErrInvalidVHDFooter, len(b), SectorSize)
	}
	if string(b[vhdCookie:vhdCookie+8]) != "conectix" {
		return VHDInfo{}, fmt.Errorf("%w: cookie %q", ErrInvalidVHDFooter, b[:8])
	}
	be := binary.BigEndian
	info := VHDInfo{
		Features:       be.Uint32(b[vhdFeatures:]),
		Version:        be.Uint32(b[vhdVersion:]),
		DataOffset:     be.Uint64(b[vhdDataOffset:]),
		Created:        vhdEpoch.Add(time.Duration(be.Uint32(b[vhdTimestamp:])) * time.Second),
		CreatorApp:     string(b[vhdCreatorApp : vhdCreatorApp+4]),
		CreatorVersion: be.Uint32(b[vhdCreatorVer:]),
		CreatorOS:      string(b[vhdCreatorOS : vhdCreatorOS+4]),
		Geometry: Geometry{
			Cylinders: int64(be.Uint16(b[vhdGeometry:])),
			Heads:     int(b[vhdGeometry+2]),
			Sectors:   int(b[vhdGeometry+3]),
		},
		DiskType:   be.Uint32(b[vhdDiskType:]),
		Checksum:   be.Uint32(b[vhdChecksum:]),
		SavedState: b[vhdSavedState] != 0,
	}
	copy(info.UniqueID[:], b[vhdUniqueID:])
	if want := ^vhdSum(b); info.Checksum != want {
		return info, fmt.Errorf("%w: checksum %08x, computed %08x", ErrInvalidVHDFooter, info.Checksum, want)
	}
	switch info.DiskType {
	case VHDFixed, VHDDynamic, VHDDifferencing:
	default:
		return info, fmt.Errorf("%w: disk type %d", ErrInvalidVHDFooter, info.DiskType)
	}
	orig, cur := be.Uint64(b[vhdOrigSize:]), be.Uint64(b[vhdCurSize:])
	if orig > math.MaxInt64 || cur > math.MaxInt64 {
		return info, fmt.Errorf("%w: size %d / %d", ErrInvalidVHDFooter, orig, cur)
	}
	info.OriginalSize, info.Size = int64(orig), int64(cur)
	return info, nil
}
