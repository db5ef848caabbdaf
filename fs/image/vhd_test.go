package image

import (
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// Expected values worked by hand through the specification's algorithm.
func TestVHDGeometry(t *testing.T) {
	cases := []struct {
		size int64
		want Geometry
	}{
		{mib, Geometry{30, 4, 17}},                        // 2048 sectors: cth 120, 4 heads
		{10 * mib, Geometry{301, 4, 17}},                  // cth 1204
		{10*mib + 4096, Geometry{301, 4, 17}},             // cth 1205: not CHS-exact
		{64 * mib, Geometry{963, 8, 17}},                  // cth 7710, heads 8
		{2 * gib, Geometry{4161, 16, 63}},                 // 17 → 31 → 63 sectors per track
		{40 * gib, Geometry{20560, 16, 255}},              // ≥ 65535·16·63 sectors
		{65535 * 16 * 63 * 512, Geometry{16191, 16, 255}}, // cth 259056
		{65535*16*63*512 - 512, Geometry{65534, 16, 63}},  // one sector less: 63 spt
		{MaxVHDSize, Geometry{65535, 16, 255}},            // clamped to 65535·16·255
		{512, Geometry{0, 4, 17}},                         // tiny: zero cylinders, as specified
		{130 * mib, Geometry{978, 16, 17}},                // cth 15661 < 16·1024: stays at 17
	}
	for _, c := range cases {
		got := VHDGeometry(c.size)
		if got != c.want {
			t.Errorf("VHDGeometry(%d) = %v, want %v", c.size, got, c.want)
		}
		if chs := got.Cylinders * int64(got.Heads) * int64(got.Sectors) * SectorSize; chs > c.size {
			t.Errorf("VHDGeometry(%d) covers %d bytes, more than the disk", c.size, chs)
		}
	}
}

func TestVHDFooterFields(t *testing.T) {
	m := testMeta("web", 10*mib+4096)
	m.Created = time.Date(2026, 11, 25, 10, 15, 30, 999, time.UTC)
	f := VHDFooter(m)
	be := binary.BigEndian
	check := func(name string, got, want uint64) {
		t.Helper()
		if got != want {
			t.Errorf("%s = %#x, want %#x", name, got, want)
		}
	}
	if string(f[:8]) != "conectix" || string(f[28:32]) != "win " || string(f[36:40]) != "Wi2k" {
		t.Errorf("cookie/creator/os = %q %q %q", f[:8], f[28:32], f[36:40])
	}
	check("features", uint64(be.Uint32(f[8:])), 2)
	check("version", uint64(be.Uint32(f[12:])), 0x00010000)
	check("data offset", be.Uint64(f[16:]), 0xffffffffffffffff)
	check("timestamp", uint64(be.Uint32(f[24:])), uint64(m.Created.Unix()-946684800))
	check("original size", be.Uint64(f[40:]), uint64(m.Size))
	check("current size", be.Uint64(f[48:]), uint64(m.Size))
	check("cylinders", uint64(be.Uint16(f[56:])), 301)
	check("heads", uint64(f[58]), 4)
	check("sectors", uint64(f[59]), 17)
	check("disk type", uint64(be.Uint32(f[60:])), 2)
	if [16]byte(f[68:84]) != m.ID {
		t.Errorf("unique id % x", f[68:84])
	}
	for i := 84; i < 512; i++ {
		if f[i] != 0 {
			t.Fatalf("byte %d (saved state / reserved) = %#x", i, f[i])
		}
	}
	// One's complement of the byte sum, checksum field excluded.
	var sum uint32
	for i, c := range f {
		if i < 64 || i >= 68 {
			sum += uint32(c)
		}
	}
	check("checksum", uint64(be.Uint32(f[64:])), uint64(^sum))
}

func TestVHDTimestamp(t *testing.T) {
	cases := []struct {
		t    time.Time
		want uint32
	}{
		{time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC), 0},
		{time.Date(1999, 12, 31, 23, 59, 59, 0, time.UTC), 0},
		{time.Time{}, 0},
		{time.Date(2000, 1, 1, 1, 0, 0, 0, time.FixedZone("x", 3600)), 0},
		{time.Date(2000, 1, 2, 0, 0, 1, 0, time.UTC), 86401},
		{time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC), 0xffffffff},
	}
	for _, c := range cases {
		if got := vhdTime(c.t); got != c.want {
			t.Errorf("vhdTime(%v) = %d, want %d", c.t, got, c.want)
		}
	}
}

func TestParseVHDFooter(t *testing.T) {
	m := testMeta("web", 64*mib)
	good := VHDFooter(m)
	info, err := ParseVHDFooter(good[:])
	if err != nil {
		t.Fatal(err)
	}
	if info.Size != m.Size || info.OriginalSize != m.Size || info.DiskType != VHDFixed ||
		!info.Created.Equal(m.Created) || info.UniqueID != m.ID || info.CreatorApp != "win " ||
		info.Geometry != VHDGeometry(m.Size) || info.SavedState {
		t.Errorf("ParseVHDFooter = %+v", info)
	}
	// Any single changed byte is caught (by the checksum or the cookie).
	for i := range good {
		bad := good
		bad[i] ^= 0x10
		if _, err := ParseVHDFooter(bad[:]); !errors.Is(err, ErrInvalidVHDFooter) {
			t.Fatalf("byte %d changed: err = %v", i, err)
		}
	}
	for _, n := range []int{0, 511, 513} {
		if _, err := ParseVHDFooter(make([]byte, n)); !errors.Is(err, ErrInvalidVHDFooter) {
			t.Errorf("%d bytes: err = %v", n, err)
		}
	}
	// Dynamic disks parse; an unknown type does not.
	for typ, ok := range map[uint32]bool{VHDDynamic: true, VHDDifferencing: true, 0: false, 5: false} {
		f := good
		binary.BigEndian.PutUint32(f[vhdDiskType:], typ)
		binary.BigEndian.PutUint32(f[vhdChecksum:], ^vhdSum(f[:]))
		if _, err := ParseVHDFooter(f[:]); (err == nil) != ok {
			t.Errorf("disk type %d: err = %v", typ, err)
		}
	}
}

// TestParseQemuVHDFooter reads footers written by an independent
// implementation: qemu-img's fixed VHDs.
func TestParseQemuVHDFooter(t *testing.T) {
	dir := t.TempDir()
	for _, size := range []int64{mib, 10*mib + 4096, 64*mib + 512} {
		path := filepath.Join(dir, "q.vhd")
		os.Remove(path)
		mustQemu(t, "qemu-img", "create", "-q", "-f", "vpc", "-o", "subformat=fixed,force_size=on", path, strconv.FormatInt(size, 10))
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		info, err := ParseVHDFooter(b[len(b)-SectorSize:])
		if err != nil {
			t.Fatalf("qemu footer for %d: %v", size, err)
		}
		if info.Size != size || info.DiskType != VHDFixed || info.CreatorApp != "qem2" || int64(len(b)) != size+SectorSize {
			t.Errorf("qemu footer for %d: %+v (file %d bytes)", size, info, len(b))
		}
	}
}
