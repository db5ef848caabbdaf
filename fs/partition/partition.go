package partition

import (
	"errors"
	"fmt"
	"io"
)

// Errors returned by Read. Check them with errors.Is.
var (
	// ErrCorrupt: a partition table is present but inconsistent (bad CRCs in
	// both GPT copies, entries outside the disk, overlapping or looping EBRs).
	ErrCorrupt = errors.New("partition: corrupt partition table")
	// ErrEmpty: the disk holds neither a partition table nor a filesystem
	// that Read recognises (an all-zero disk, say).
	ErrEmpty = errors.New("partition: no partition table or filesystem")
)

// Table schemes.
const (
	SchemeMBR  = "mbr"
	SchemeGPT  = "gpt"
	SchemeNone = "none" // a filesystem on the whole disk
)

// Table is what a disk holds.
type Table struct {
	Scheme string `json:"scheme"`
	// DiskID is the MBR disk signature (8 hex digits) or the GPT disk GUID.
	DiskID     string      `json:"disk_id,omitempty"`
	Partitions []Partition `json:"partitions"`
	// Warnings are problems that did not stop the parse: a bad primary GPT
	// whose backup was used, an EBR chain cut short.
	Warnings []string `json:"warnings,omitempty"`
}

// Partition is one partition, or the whole disk (Index 0) when the disk has
// no table.
type Partition struct {
	Index  int    `json:"index"`  // 1-based; logical MBR partitions from 5; 0 for a whole disk
	Offset int64  `json:"offset"` // bytes from the start of the disk
	Size   int64  `json:"size"`   // bytes
	Type   string `json:"type"`   // MBR type ("0x83") or GPT type GUID
	// UUID is the GPT partition GUID, or for MBR the disk signature and index
	// as Linux shows PARTUUID ("1a2b3c4d-01").
	UUID string `json:"partuuid,omitempty"`
	Name string `json:"name,omitempty"` // GPT partition name
	FS   FS     `json:"fs"`
}

// FS is what a partition's first bytes say it holds.
type FS struct {
	Type  string `json:"type"` // ext2, ext3, ext4, xfs, btrfs, ntfs, vfat, luks, swap, or "" (unknown)
	UUID  string `json:"uuid,omitempty"`
	Label string `json:"label,omitempty"`
	// NeedsRecovery: the filesystem's journal holds transactions that were
	// never replayed (a crash-consistent instant of a mounted ext3/4).
	NeedsRecovery bool `json:"needs_recovery,omitempty"`
}

// Mountable reports whether Type is a filesystem (not a container, swap or
// unknown).
func (f FS) Mountable() bool {
	switch f.Type {
	case "ext2", "ext3", "ext4", "xfs", "btrfs", "ntfs", "vfat":
		return true
	}
	return false
}

// maxPartitions bounds the partitions Read returns (GPT arrays and EBR chains
// come from the image and may be hostile).
const maxPartitions = 256

// Read finds the partition table of the disk r of size bytes, or a
// filesystem on the whole disk. Partitions whose bytes lie outside the disk
// make the table ErrCorrupt; a disk with nothing recognisable is ErrEmpty.
func Read(r io.ReaderAt, size int64) (Table, error) {
	if size < 512 {
		return Table{}, fmt.Errorf("%w: disk of %d bytes", ErrEmpty, size)
	}
	t, found, err := readGPT(r, size)
	if found || err != nil {
		return t, err
	}
	whole, err := Detect(r, 0, size)
	if err != nil {
		return Table{}, err
	}
	if whole.Type != "" {
		return Table{Scheme: SchemeNone, Partitions: []Partition{{Offset: 0, Size: size, FS: whole}}}, nil
	}
	t, found, err = readMBR(r, size)
	if found || err != nil {
		return t, err
	}
	return Table{}, ErrEmpty
}

// readAt reads len(p) bytes at off; reads past the end of the disk are zeros
// (a hostile table may point anywhere; the callers check bounds).
func readAt(r io.ReaderAt, p []byte, off int64) error {
	n, err := r.ReadAt(p, off)
	if err == io.EOF || (err == nil && n == len(p)) {
		clear(p[n:])
		return nil
	}
	if err != nil {
		return fmt.Errorf("partition: read at %d: %w", off, err)
	}
	return nil
}

// detectAll fills in FS of every partition.
func detectAll(r io.ReaderAt, t *Table) error {
	for i := range t.Partitions {
		p := &t.Partitions[i]
		fs, err := Detect(r, p.Offset, p.Size)
		if err != nil {
			return err
		}
		p.FS = fs
	}
	return nil
}

func inDisk(off, n, size int64) bool {
	return off >= 0 && n > 0 && off <= size && n <= size-off
}
