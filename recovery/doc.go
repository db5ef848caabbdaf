// Package recovery is file-level recovery from Hindsight's journal: it mounts
// an instant of a disk read-only (Open), copies files out of it safely
// (Restore), compares two instants (Diff), and finds the instants at which a
// file's content changed from the block journal (History).
//
// It sits above fs/, beside vsphere, not inside the engine (cdp/): it mounts
// the FUSE tree and attaches loop devices, so it depends on fs/ and the
// kernel, while nothing under cdp/ or store/ may import fs/.
//
// # Mounting an instant
//
// The disk at the instant is served by a private FUSE tree (package fs) in
// an owner-only temporary directory, because loop devices need a file. The
// partition table is read by package fs/partition (this kernel has no
// partition parsers); each partition is attached as a read-only loop device
// by offset and size, with autoclear, so a device outlives neither its mount
// nor a process killed before mounting. Filesystems mount read-only with the
// options that never replay a journal onto the image:
//
//	ext2/3/4  ro,noload            XFS  ro,norecovery,nouuid
//	Btrfs     ro,rescue=nologreplay NTFS ntfs-3g -o ro (FUSE)
//	FAT       a read-only copy made with mtools (below)
//
// ntfs-3g mounts with ro (also nosuid, nodev, noexec, and fmask/dmask so
// that files are not 0777), which its manual gives for hibernated volumes
// and unclean logs: they are shown as they are. Neither remove_hiberfile nor
// norecover is given (the latter would refuse such a volume), and the
// read-only loop device refuses any write onto the instant in any case.
//
// An ext3/ext4 whose journal holds transactions not yet written to their
// place (any instant captured while it was mounted: its newest metadata is
// only in the journal) is mounted instead from a disposable copy-on-write
// clone (cow.go): a writable file served by the tap whose writes go to a
// scratch file, attached read-write so that the kernel replays the journal
// onto the clone, never onto the instant. Part.Method says "cow-clone".
//
// # FAT
//
// This kernel has no vfat, and the userspace driver Debian has, fusefat
// 0.1a, reads FAT wrong: times a month late (2021-12-31 shows as
// 2022-01-31), short names upper-cased where Windows and mtools mark them
// lower-case (readme.txt shows as README.TXT), and a volume label shown as a
// file that hides the directory of that name. So a FAT partition is copied
// out whole with mtools (mcopy -s -p -m, times read as UTC) from its
// read-only loop device into the private directory, and that copy is
// bind-mounted read-only at its place: browse, restore and diff see the
// right names and times. Part.Method says "mtools-extract". It costs a copy
// of the files in TMPDIR: fine for EFI and boot partitions, slow for a
// large one. mcopy writes "/" in a name as "\" and skips "." and "..".
//
// LUKS containers are reported as encrypted and never opened; other
// partitions are reported unknown. Close unmounts the filesystems, then the
// tree, and removes the FAT copies and only empty directories it made;
// callers run it on every path, including cancellation (SIGINT).
//
// # Paths
//
// A path names a file as the guest sees it: "/srv/site/index.html" is found
// through the disk's own /etc/fstab (UUID=, LABEL=, PARTUUID=, PARTLABEL=,
// /dev/sdXN-style names), or "p2:/site/index.html" names the partition. In
// the filesystem it is resolved with openat2(RESOLVE_IN_ROOT): ".." and
// absolute symlinks cannot leave the image's root, and the last component is
// never followed, so a symlink is restored as a symlink.
//
// # History
//
// For ext2/3/4, a file's blocks (its inode's table block, extent tree and
// data, and the directories on its path) are found by a small reader of the
// on-disk format (package recovery/ext4) reading the journal directly;
// only the version records of those blocks are then read
// (store.Repo.BlockVersions), the file is re-resolved wherever one of them
// changed, and instants whose BLAKE3 of the content is unchanged collapse.
// Other filesystems fall back to mounting sampled instants (bookmarks and
// points), and say so.
package recovery
