// Package partition finds what a disk image holds: its partition table (MBR
// with extended and logical partitions, or GPT) and, in each partition or on
// the whole disk, the filesystem or container that its superblock names. It
// reads through an io.ReaderAt and never writes; the kernel on which Hindsight
// runs may have no partition-table parsers, so partitions are attached by the
// offsets and sizes found here.
//
// # Tables
//
//	GPT   LBA 1 (512-byte sectors; 4096 is tried too): "EFI PART" header whose
//	      CRC32 covers HeaderSize bytes with the CRC field zeroed, and an entry
//	      array (NumEntries × EntrySize at EntriesLBA) with its own CRC32. A bad
//	      primary header falls back to the backup at the disk's last LBA.
//	MBR   0x55AA at byte 510, four 16-byte entries at 446: status, CHS, type,
//	      first LBA (u32 LE), sectors (u32 LE). Types 0x05, 0x0f and 0x85 are
//	      extended: a chain of EBRs whose first entry is a logical partition
//	      (relative to the EBR) and whose second links the next EBR (relative
//	      to the extended partition). Logical partitions are numbered from 5.
//	      A lone 0xee entry is a protective MBR: the disk is GPT.
//
// A filesystem superblock at offset 0 (ext, XFS, Btrfs, NTFS, FAT, LUKS) wins
// over an MBR signature, since FAT and NTFS boot sectors carry 0x55AA too: such
// a disk is one whole-disk "partition" numbered 0.
//
// # Detection
//
//	ext2/3/4  0xEF53 (LE) at 1080; ext4 if INCOMPAT has extents, 64bit or
//	          flex_bg, ext3 if COMPAT has a journal; INCOMPAT_RECOVER (0x4)
//	          means the journal holds transactions not yet replayed.
//	          UUID at 1128, label at 1144 (16 bytes).
//	XFS       "XFSB" at 0; UUID at 32, label at 108 (12 bytes).
//	Btrfs     "_BHRfS_M" at 65600; fsid at 65568, label at 65835 (256 bytes).
//	NTFS      "NTFS    " at 3; serial (u64 LE) at 72.
//	FAT       0x55AA at 510 and "FAT" at 54 (FAT12/16) or 82 (FAT32); serial
//	          at 39 or 67, label at 43 or 71.
//	LUKS      "LUKS\xba\xbe" at 0; UUID (text) at 168. Reported, never opened.
//	swap      "SWAPSPACE2" or "SWAP-SPACE" at 4086.
//
// Anything else is reported with FS "" (unknown): Hindsight never guesses.
package partition
