package partition

import (
	"encoding/binary"
	"fmt"
	"io"
)

// mbrEntry is one 16-byte MBR (or EBR) table entry.
type mbrEntry struct {
	status  byte
	typ     byte
	lba     uint32
	sectors uint32
}

func mbrEntries(sec []byte) [4]mbrEntry {
	var out [4]mbrEntry
	for i := range out {
		e := sec[446+16*i:]
		out[i] = mbrEntry{status: e[0], typ: e[4], lba: binary.LittleEndian.Uint32(e[8:]), sectors: binary.LittleEndian.Uint32(e[12:])}
	}
	return out
}

func isExtended(typ byte) bool { return typ == 0x05 || typ == 0x0f || typ == 0x85 }

// readMBR parses an MBR; found is false when sector 0 has no 0x55AA.
func readMBR(r io.ReaderAt, size int64) (t Table, found bool, err error) {
	sec := make([]byte, 512)
	if err := readAt(r, sec, 0); err != nil {
		return Table{}, false, err
	}
	if sec[510] != 0x55 || sec[511] != 0xaa {
		return Table{}, false, nil
	}
	sig := binary.LittleEndian.Uint32(sec[440:])
	t = Table{Scheme: SchemeMBR, DiskID: fmt.Sprintf("%08x", sig)}
	add := func(idx int, e mbrEntry, base int64) error {
		off, n := (base+int64(e.lba))*512, int64(e.sectors)*512
		if !inDisk(off, n, size) {
			return fmt.Errorf("%w: MBR partition %d (%d bytes at %d) lies outside the %d-byte disk", ErrCorrupt, idx, n, off, size)
		}
		t.Partitions = append(t.Partitions, Partition{Index: idx, Offset: off, Size: n,
			Type: fmt.Sprintf("0x%02x", e.typ), UUID: fmt.Sprintf("%08x-%02x", sig, idx)})
		return nil
	}
	var ext *mbrEntry
	for i, e := range mbrEntries(sec) {
		if e.status != 0 && e.status != 0x80 {
			return Table{}, true, fmt.Errorf("%w: MBR entry %d has status 0x%02x", ErrCorrupt, i+1, e.status)
		}
		if e.typ == 0 || e.sectors == 0 {
			continue
		}
		if isExtended(e.typ) {
			if ext != nil {
				return Table{}, true, fmt.Errorf("%w: two extended partitions", ErrCorrupt)
			}
			ext = &e
			continue
		}
		if err := add(i+1, e, 0); err != nil {
			return Table{}, true, err
		}
	}
	if ext != nil {
		if err := t.logical(r, size, *ext, add); err != nil {
			return Table{}, true, err
		}
	}
	if err := checkOverlap(t.Partitions); err != nil {
		return Table{}, true, err
	}
	return t, true, detectAll(r, &t)
}

// logical walks the EBR chain of the extended partition ext.
func (t *Table) logical(r io.ReaderAt, size int64, ext mbrEntry, add func(int, mbrEntry, int64) error) error {
	start, n := int64(ext.lba), int64(ext.sectors)
	if !inDisk(start*512, n*512, size) {
		return fmt.Errorf("%w: extended partition lies outside the disk", ErrCorrupt)
	}
	seen := map[int64]bool{}
	sec := make([]byte, 512)
	ebr := start
	for idx := 5; ; idx++ {
		if seen[ebr] || len(t.Partitions) >= maxPartitions {
			return fmt.Errorf("%w: EBR chain loops or is too long at sector %d", ErrCorrupt, ebr)
		}
		seen[ebr] = true
		if ebr < start || ebr >= start+n {
			return fmt.Errorf("%w: EBR at sector %d lies outside the extended partition", ErrCorrupt, ebr)
		}
		if err := readAt(r, sec, ebr*512); err != nil {
			return err
		}
		if sec[510] != 0x55 || sec[511] != 0xaa {
			if ebr == start { // an empty extended partition
				return nil
			}
			t.Warnings = append(t.Warnings, fmt.Sprintf("EBR at sector %d has no signature: logical partitions end there", ebr))
			return nil
		}
		es := mbrEntries(sec)
		if es[0].typ != 0 && es[0].sectors != 0 {
			if err := add(idx, es[0], ebr); err != nil {
				return err
			}
			p := t.Partitions[len(t.Partitions)-1]
			if p.Offset < start*512 || p.Offset+p.Size > (start+n)*512 {
				return fmt.Errorf("%w: logical partition %d lies outside the extended partition", ErrCorrupt, idx)
			}
		}
		if es[1].typ == 0 || es[1].lba == 0 {
			return nil
		}
		ebr = start + int64(es[1].lba)
	}
}

func checkOverlap(ps []Partition) error {
	for i, a := range ps {
		for _, b := range ps[i+1:] {
			if a.Offset < b.Offset+b.Size && b.Offset < a.Offset+a.Size {
				return fmt.Errorf("%w: partitions %d and %d overlap", ErrCorrupt, a.Index, b.Index)
			}
		}
	}
	return nil
}
