package partition

import (
	"bytes"
	"testing"
)

// FuzzRead: no input makes Read panic, loop or return a partition outside
// the disk.
func FuzzRead(f *testing.F) {
	mbr := make([]byte, 8192)
	mbr[510], mbr[511] = 0x55, 0xaa
	mbr[446+4], mbr[446+8], mbr[446+12] = 0x83, 1, 4
	mbr[446+16+4], mbr[446+16+8], mbr[446+16+12] = 0x05, 5, 8
	f.Add(mbr)
	gpt := make([]byte, 8192)
	copy(gpt[512:], "EFI PART")
	gpt[510], gpt[511], gpt[446+4] = 0x55, 0xaa, 0xee
	f.Add(gpt)
	f.Add(make([]byte, 4096))
	f.Fuzz(func(t *testing.T, b []byte) {
		tb, err := Read(bytes.NewReader(b), int64(len(b)))
		if err != nil {
			return
		}
		for _, p := range tb.Partitions {
			if p.Offset < 0 || p.Size <= 0 || p.Offset+p.Size > int64(len(b)) {
				t.Fatalf("partition %+v outside the %d-byte disk", p, len(b))
			}
		}
	})
}
