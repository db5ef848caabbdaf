// Package cutfs is a FUSE passthrough filesystem for tests that can
// simulate a power cut: it keeps every change that was not made durable
// apart from the backing directory, and a Cut throws those changes away,
// as a disk losing power would (the LazyFS method).
//
// # Data
//
// Writes to a file are kept in memory, per backing inode, as extents over
// the backing file; reads see them. fsync and fdatasync of the file (the
// kernel's FUSE_FSYNC, either flavour) write the extents into the backing
// file and fdatasync it: only then is the data durable. A truncate
// (ftruncate, truncate, O_TRUNC) is kept apart the same way, and so is a
// fallocate that changes what a read returns or the size (mode 0 past the
// end, PUNCH_HOLE, ZERO_RANGE): each is durable once the file is synced
// after it, as LazyFS treats them. A fallocate with only KEEP_SIZE
// reserves space and changes nothing a read sees: it is accepted and
// ignored. Other fallocate modes answer EOPNOTSUPP, and copy_file_range
// answers EOPNOTSUPP so that the kernel copies through reads and writes.
//
// # Namespace
//
// Creates (files, directories, symlinks, device nodes, hard links),
// unlinks, rmdirs and renames happen in the backing directory at once, and
// each is recorded in an undo log. An operation is durable once the
// directory it changed was fsynced after it (FUSE_FSYNCDIR); a rename
// between two directories needs both synced. Until then an unlinked or
// replaced entry is kept in a trash directory beside the backing
// directory (".NAME.cutfs-trash"), so that the unlink can be undone.
// Metadata (mode, owner, times, xattrs) is passed through and not modelled.
//
// # Cut and unmount
//
// Cut is the power cut: from that instant every operation answers EIO;
// unsynced data is dropped, the namespace operations that are not durable
// are undone newest first, and the mount is detached. A new FS over the
// same backing directory then shows exactly the durable state. Unmount is
// a clean shutdown: like a real filesystem's umount, it makes everything
// durable first.
//
// Files are identified by their backing inode, so the backing directory
// must be one filesystem (no mounts inside it).
package cutfs
