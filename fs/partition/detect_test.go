package partition

import (
	"bytes"
	"encoding/binary"
	"os"
	"strings"
	"testing"
)

func bytesReader(b []byte) *bytes.Reader { return bytes.NewReader(b) }

// TestDetectMatchesBlkid: every filesystem the tools here make is named,
// with the UUID and label blkid reads (an NTFS label lives in the MFT, not
// the boot sector: not read).
func TestDetectMatchesBlkid(t *testing.T) {
	need(t, "blkid", "mkfs.ext4")
	cases := []struct {
		typ  string
		mkfs []string
		size int64
	}{
		{"ext4", []string{"mkfs.ext4", "-q", "-F", "-L", "root"}, 8 << 20},
		{"ext3", []string{"mkfs.ext3", "-q", "-F", "-L", "old"}, 8 << 20},
		{"ext2", []string{"mkfs.ext2", "-q", "-F"}, 8 << 20},
		{"xfs", []string{"mkfs.xfs", "-q", "-f", "-L", "srv"}, 64 << 20},
		{"btrfs", []string{"mkfs.btrfs", "-q", "-f", "-L", "data"}, 128 << 20},
		{"ntfs", []string{"mkfs.ntfs", "-q", "-F", "-f", "-L", "win"}, 8 << 20},
		{"vfat", []string{"mkfs.vfat", "-n", "BOOT"}, 8 << 20},
	}
	os.Setenv("TEST_DIR", "1") // xfsprogs' fstests escape hatch: XFS below 300 MB
	os.Setenv("TEST_DEV", "1")
	os.Setenv("QA_CHECK_FS", "1")
	for _, c := range cases {
		t.Run(c.typ, func(t *testing.T) {
			need(t, c.mkfs[0])
			img := sparse(t, c.size)
			sh(t, c.mkfs[0], "", append(c.mkfs[1:], img)...)
			var want = map[string]string{}
			for _, kv := range strings.Fields(sh(t, "blkid", "", "-o", "export", img)) {
				k, v, _ := strings.Cut(kv, "=")
				want[k] = v
			}
			tb, err := readTable(t, img)
			if err != nil {
				t.Fatal(err)
			}
			if tb.Scheme != SchemeNone || len(tb.Partitions) != 1 {
				t.Fatalf("%+v: want one whole-disk filesystem", tb)
			}
			fs := tb.Partitions[0].FS
			if fs.Type != c.typ || !strings.EqualFold(fs.UUID, want["UUID"]) || (fs.Label != want["LABEL"] && c.typ != "ntfs") {
				t.Errorf("detected %+v; blkid: %v", fs, want)
			}
		})
	}
}

func TestDetectLUKSAndRecovery(t *testing.T) {
	b := make([]byte, 1<<20)
	copy(b, "LUKS\xba\xbe\x00\x02")
	copy(b[168:], "0b7e9a8c-1111-4222-8333-944455556666")
	if fs := detect(b); fs.Type != "luks" || fs.UUID != "0b7e9a8c-1111-4222-8333-944455556666" || fs.Mountable() {
		t.Errorf("LUKS: %+v", fs)
	}
	b = make([]byte, 1<<20)
	binary.LittleEndian.PutUint16(b[1080:], 0xef53)
	binary.LittleEndian.PutUint32(b[1024+0x5c:], 0x4)      // has_journal
	binary.LittleEndian.PutUint32(b[1024+0x60:], 0x40|0x4) // extents, needs_recovery
	if fs := detect(b); fs.Type != "ext4" || !fs.NeedsRecovery {
		t.Errorf("dirty ext4: %+v", fs)
	}
}
