package image

import (
	"errors"
	"testing"
	"time"
)

// FuzzParseVHDFooter: no input panics, and whatever parses carries a checksum
// that matches its bytes and a known disk type.
func FuzzParseVHDFooter(f *testing.F) {
	for _, size := range []int64{512, mib, 10*mib + 4096, 2 * gib, MaxVHDSize} {
		footer := VHDFooter(testMeta("seed", size))
		f.Add(footer[:])
	}
	bad := VHDFooter(testMeta("seed", mib))
	bad[vhdChecksum] ^= 1
	f.Add(bad[:])
	f.Add([]byte("conectix"))
	f.Fuzz(func(t *testing.T, b []byte) {
		info, err := ParseVHDFooter(b)
		if err != nil {
			if !errors.Is(err, ErrInvalidVHDFooter) {
				t.Fatalf("error %v is not ErrInvalidVHDFooter", err)
			}
			return
		}
		if len(b) != SectorSize || string(b[:8]) != "conectix" || info.Checksum != ^vhdSum(b) {
			t.Fatalf("accepted a footer that fails its own checks: %+v", info)
		}
		if info.DiskType < VHDFixed || info.DiskType > VHDDifferencing || info.Size < 0 || info.OriginalSize < 0 {
			t.Fatalf("accepted type %d size %d/%d", info.DiskType, info.Size, info.OriginalSize)
		}
	})
}

// FuzzVHDRoundTrip: ParseVHDFooter(VHDFooter(m)) gives back m's size, time
// (to the second, within the footer's range), identity and the geometry.
func FuzzVHDRoundTrip(f *testing.F) {
	f.Add(int64(1), int64(0), []byte("id"))
	f.Add(int64(20488), int64(1795601730), []byte("hindsight-test-0"))
	f.Add(int64(4194304), int64(-1), []byte{})
	f.Add(int64(MaxVHDSize/SectorSize), int64(1<<40), []byte{0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, sectors, unix int64, id []byte) {
		if sectors <= 0 || sectors > MaxVHDSize/SectorSize {
			return
		}
		m := Meta{Name: "x", Size: sectors * SectorSize, Created: time.Unix(unix, 0)}
		copy(m.ID[:], id)
		footer := VHDFooter(m)
		info, err := ParseVHDFooter(footer[:])
		if err != nil {
			t.Fatalf("footer for %+v does not parse: %v", m, err)
		}
		if info.Size != m.Size || info.OriginalSize != m.Size || info.DiskType != VHDFixed || info.UniqueID != m.ID {
			t.Fatalf("round trip of %+v gave %+v", m, info)
		}
		if want := vhdEpoch.Add(time.Duration(vhdTime(m.Created)) * time.Second); !info.Created.Equal(want) {
			t.Fatalf("time %v came back as %v, want %v", m.Created, info.Created, want)
		}
		if info.Geometry != VHDGeometry(m.Size) {
			t.Fatalf("geometry %v, want %v", info.Geometry, VHDGeometry(m.Size))
		}
	})
}
