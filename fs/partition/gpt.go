package partition

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
	"strings"
	"unicode/utf16"
)

// gptHeader is the part of a GPT header Read uses.
type gptHeader struct {
	current, backup      uint64
	firstUsable, lastUse uint64
	diskGUID             [16]byte
	entriesLBA           uint64
	numEntries, entrySz  uint32
	entriesCRC           uint32
}

const maxGPTEntryBytes = 1 << 20 // 8192 entries of 128 bytes

// readGPT looks for a GPT with 512- or 4096-byte sectors. found is true when
// a GPT signature is present at LBA 1 or the MBR is protective; err is then
// ErrCorrupt if neither copy is valid.
func readGPT(r io.ReaderAt, size int64) (t Table, found bool, err error) {
	mbr := make([]byte, 512)
	if err := readAt(r, mbr, 0); err != nil {
		return Table{}, false, err
	}
	protective := mbr[510] == 0x55 && mbr[511] == 0xaa && mbr[446+4] == 0xee
	var problems []string
	for _, ss := range []int64{512, 4096} {
		if size < 3*ss {
			continue
		}
		primary, perr := readGPTHeader(r, ss, 1, size)
		if perr == nil {
			t, err := gptTable(r, ss, primary, size)
			if err == nil {
				return t, true, detectAll(r, &t)
			}
			perr = err
		}
		if perr == errNoSignature && !protective {
			continue
		}
		// The primary is damaged (or missing behind a protective MBR): try the backup.
		last := uint64(size/ss) - 1
		backup, berr := readGPTHeader(r, ss, last, size)
		if berr == nil {
			t, err := gptTable(r, ss, backup, size)
			if err == nil {
				t.Warnings = append(t.Warnings, fmt.Sprintf("primary GPT header unusable (%v): the backup at LBA %d was used", perr, last))
				return t, true, detectAll(r, &t)
			}
			berr = err
		}
		if perr != errNoSignature || berr != errNoSignature {
			problems = append(problems, fmt.Sprintf("%d-byte sectors: primary: %v; backup: %v", ss, perr, berr))
		}
	}
	if len(problems) > 0 || protective {
		return Table{}, true, fmt.Errorf("%w: GPT: %s", ErrCorrupt, strings.Join(problems, "; "))
	}
	return Table{}, false, nil
}

var errNoSignature = fmt.Errorf("no GPT signature")

func readGPTHeader(r io.ReaderAt, ss int64, lba uint64, size int64) (gptHeader, error) {
	b := make([]byte, ss)
	if err := readAt(r, b, int64(lba)*ss); err != nil {
		return gptHeader{}, err
	}
	if string(b[:8]) != "EFI PART" {
		return gptHeader{}, errNoSignature
	}
	hsz := binary.LittleEndian.Uint32(b[12:])
	if hsz < 92 || int64(hsz) > ss {
		return gptHeader{}, fmt.Errorf("header size %d", hsz)
	}
	want := binary.LittleEndian.Uint32(b[16:])
	hdr := append([]byte(nil), b[:hsz]...)
	clear(hdr[16:20])
	if got := crc32.ChecksumIEEE(hdr); got != want {
		return gptHeader{}, fmt.Errorf("header CRC32 %08x, recorded %08x", got, want)
	}
	h := gptHeader{
		current:     binary.LittleEndian.Uint64(b[24:]),
		backup:      binary.LittleEndian.Uint64(b[32:]),
		firstUsable: binary.LittleEndian.Uint64(b[40:]),
		lastUse:     binary.LittleEndian.Uint64(b[48:]),
		entriesLBA:  binary.LittleEndian.Uint64(b[72:]),
		numEntries:  binary.LittleEndian.Uint32(b[80:]),
		entrySz:     binary.LittleEndian.Uint32(b[84:]),
		entriesCRC:  binary.LittleEndian.Uint32(b[88:]),
	}
	copy(h.diskGUID[:], b[56:72])
	if h.current != lba {
		return gptHeader{}, fmt.Errorf("header at LBA %d says it is at LBA %d", lba, h.current)
	}
	if h.entrySz < 128 || h.entrySz%8 != 0 || uint64(h.numEntries)*uint64(h.entrySz) > maxGPTEntryBytes {
		return gptHeader{}, fmt.Errorf("%d entries of %d bytes", h.numEntries, h.entrySz)
	}
	sectors := uint64(size / ss)
	if h.firstUsable > h.lastUse || h.lastUse >= sectors || h.entriesLBA >= sectors {
		return gptHeader{}, fmt.Errorf("usable LBAs %d-%d or entries at LBA %d outside the disk of %d sectors",
			h.firstUsable, h.lastUse, h.entriesLBA, sectors)
	}
	return h, nil
}

func gptTable(r io.ReaderAt, ss int64, h gptHeader, size int64) (Table, error) {
	arr := make([]byte, int(h.numEntries)*int(h.entrySz))
	if err := readAt(r, arr, int64(h.entriesLBA)*ss); err != nil {
		return Table{}, err
	}
	if got := crc32.ChecksumIEEE(arr); got != h.entriesCRC {
		return Table{}, fmt.Errorf("entry array CRC32 %08x, recorded %08x", got, h.entriesCRC)
	}
	t := Table{Scheme: SchemeGPT, DiskID: guid(h.diskGUID[:])}
	for i := 0; i < int(h.numEntries); i++ {
		e := arr[i*int(h.entrySz):]
		if isZeroBytes(e[:16]) {
			continue
		}
		first, last := binary.LittleEndian.Uint64(e[32:]), binary.LittleEndian.Uint64(e[40:])
		if first < h.firstUsable || last > h.lastUse || last < first {
			return Table{}, fmt.Errorf("partition %d (LBA %d-%d) outside the usable LBAs %d-%d", i+1, first, last, h.firstUsable, h.lastUse)
		}
		if len(t.Partitions) >= maxPartitions {
			return Table{}, fmt.Errorf("more than %d partitions", maxPartitions)
		}
		t.Partitions = append(t.Partitions, Partition{
			Index:  i + 1,
			Offset: int64(first) * ss,
			Size:   int64(last-first+1) * ss,
			Type:   guid(e[:16]),
			UUID:   guid(e[16:32]),
			Name:   utf16Name(e[56:128]),
		})
	}
	if err := checkOverlap(t.Partitions); err != nil {
		return Table{}, err
	}
	return t, nil
}

// guid formats a GPT GUID: the first three fields are little-endian.
func guid(b []byte) string {
	return fmt.Sprintf("%08x-%04x-%04x-%x-%x", binary.LittleEndian.Uint32(b), binary.LittleEndian.Uint16(b[4:]),
		binary.LittleEndian.Uint16(b[6:]), b[8:10], b[10:16])
}

func utf16Name(b []byte) string {
	u := make([]uint16, 0, len(b)/2)
	for i := 0; i+1 < len(b); i += 2 {
		c := binary.LittleEndian.Uint16(b[i:])
		if c == 0 {
			break
		}
		u = append(u, c)
	}
	return string(utf16.Decode(u))
}

func isZeroBytes(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
