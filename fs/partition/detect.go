package partition

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"strings"
)

// probeBytes is how much of a partition Detect reads: up to the Btrfs
// superblock, the furthest signature it knows.
const probeBytes = 0x10000 + 4096

// Detect reads the superblock region of the size bytes at off and says
// which filesystem or container it holds (Type "" if none it knows).
func Detect(r io.ReaderAt, off, size int64) (FS, error) {
	b := make([]byte, min(probeBytes, max(size, 0)))
	if err := readAt(r, b, off); err != nil {
		return FS{}, err
	}
	return detect(b), nil
}

func detect(b []byte) FS {
	at := func(off int, sig string) bool {
		return len(b) >= off+len(sig) && string(b[off:off+len(sig)]) == sig
	}
	switch {
	case at(0, "LUKS\xba\xbe"):
		return FS{Type: "luks", UUID: cstr(b[168:208])}
	case at(0, "XFSB") && len(b) >= 120:
		return FS{Type: "xfs", UUID: uuid(b[32:48]), Label: cstr(b[108:120])}
	case at(0x10040, "_BHRfS_M") && len(b) >= 0x10000+0x12b+256:
		return FS{Type: "btrfs", UUID: uuid(b[0x10020:0x10030]), Label: cstr(b[0x10000+0x12b : 0x10000+0x12b+256])}
	case len(b) >= 2048 && binary.LittleEndian.Uint16(b[1080:]) == 0xef53:
		return ext(b[1024:2048])
	case at(3, "NTFS    ") && len(b) >= 80:
		return FS{Type: "ntfs", UUID: fmt.Sprintf("%016X", binary.LittleEndian.Uint64(b[72:]))}
	case len(b) >= 512 && b[510] == 0x55 && b[511] == 0xaa && (at(54, "FAT") || at(82, "FAT32")):
		idOff, labelOff := 39, 43
		if at(82, "FAT32") {
			idOff, labelOff = 67, 71
		}
		label := cstr(b[labelOff : labelOff+11])
		if label == "NO NAME" {
			label = ""
		}
		id := binary.LittleEndian.Uint32(b[idOff:])
		return FS{Type: "vfat", UUID: fmt.Sprintf("%04X-%04X", id>>16, id&0xffff), Label: label}
	case at(4086, "SWAPSPACE2") || at(4086, "SWAP-SPACE"):
		return FS{Type: "swap"}
	}
	return FS{}
}

// ext names an ext2/3/4 superblock (the 1024 bytes at offset 1024).
func ext(sb []byte) FS {
	compat := binary.LittleEndian.Uint32(sb[0x5c:])
	incompat := binary.LittleEndian.Uint32(sb[0x60:])
	const (
		compatJournal    = 0x4
		incompatRecover  = 0x4
		incompatExtents  = 0x40
		incompat64bit    = 0x80
		incompatFlexBG   = 0x200
		incompatJournDev = 0x8
	)
	typ := "ext2"
	switch {
	case incompat&(incompatExtents|incompat64bit|incompatFlexBG) != 0:
		typ = "ext4"
	case compat&compatJournal != 0:
		typ = "ext3"
	}
	if incompat&incompatJournDev != 0 {
		return FS{Type: "", UUID: uuid(sb[0x68:0x78])} // an external journal device
	}
	return FS{Type: typ, UUID: uuid(sb[0x68:0x78]), Label: cstr(sb[0x78:0x88]),
		NeedsRecovery: compat&compatJournal != 0 && incompat&incompatRecover != 0}
}

func uuid(b []byte) string {
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// cstr is a NUL-padded string with surrounding spaces trimmed.
func cstr(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return strings.TrimSpace(strings.ToValidUTF8(string(b), "?"))
}
