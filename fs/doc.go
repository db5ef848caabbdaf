// Package fs serves Hindsight's history as a read-only FUSE tree in which
// every instant of every protected disk is a directory of disk images.
//
// # Tree
//
//	<mount>/
//	  <disk or group>/
//	    latest/                   the newest point, resolved again on every lookup
//	    bookmarks/<name>/         the instant a bookmark names (plus its files, e.g. backup_label)
//	    by-time/YYYY/MM/DD/HH/MM/SS.fraction/   the timeline, one level per unit
//	    <instant>/                any time: listed or not, resolved on lookup
//	      <disk>.vmdk             VMDK descriptor (ESXi flat form) naming <disk>-flat.vmdk
//	      <disk>-flat.vmdk        the raw image at that instant
//	      <disk>.vhd              fixed VHD: the raw image plus a 512-byte footer
//	      <name>.vmx              a minimal VM naming every disk's .vmdk
//	      info.json               the point served, its consistency, the nearest bookmarks
//
// A group's instant directories hold the files of each of its disks, all at
// one journal position (the group's disks share one timeline); each member
// disk also has a directory of its own.
//
// # by-time
//
// Each level lists only the units (years, months, days, hours, minutes) that
// hold points or bookmarks, found with one seek per unit, so a listing costs
// at most 60 seeks however many writes the journal holds. A minute lists its
// instants as SS.fraction (exact point times; past 1000 points, the first of
// each second), and any SS or SS.fraction in it resolves on lookup.
//
// A disk directory lists bookmarks, latest once the disk has a point, and the
// newest Options.ListPoints points and every bookmark's instant, named by
// timespec.Format (ISO 8601 basic in UTC, 20261125T101530.5Z: no colons) and
// listed in time order. Lookup accepts every form timespec.Parse does, listed
// or not: ISO basic with or without a fraction, RFC 3339, @<unix seconds>,
// relative forms (-15m) and now. A name shows the newest point at or before
// its time; a time in the future, before the disk's first point, or that does
// not parse is ENOENT, never a guess. A disk larger than image.MaxVHDSize has
// no .vhd.
//
// # info.json
//
//	{"disk", "group", "disks", "requested", "seq", "time", "resolved": {"time", "seq"},
//	 "bookmark_before", "bookmark_after", "size", "block_size", "bookmark", "consistency"}
//
// consistency is "application" only for an application bookmark's directory
// (its quiesce report is in bookmark.quiesce), else "crash".
//
// requested is the time the name asked for (for latest, the point's own
// time; for a bookmark, the instant it names); resolved is the point served,
// the newest at or before it: its time and journal position (also in seq and
// time, kept for older scripts). Once pruning has removed the point that
// showed an instant, the instant resolves to the kept point at or before it:
// requested and resolved.time then say how far it was thinned. bookmark_before is the newest bookmark at or before that
// position, bookmark_after the oldest one after it; either may be null.
//
// # Inode numbers
//
// Inode numbers are 64-bit FNV-1a hashes, so they are the same in every mount
// and the kernel can tell a changed entry from an unchanged one:
//
//	disk dir     hash(root, disk name, disk ID, disk creation time)
//	bookmarks    hash(disk dir, "bookmarks")
//	instant dir  hash(disk dir or bookmarks dir, name, requested time, seq)
//	image file   hash(disk dir, file name, seq)
//	info.json    hash(instant dir, "info.json")
//
// An instant directory's number changes whenever its name resolves to a
// different point (latest after a new point, -15m a minute later), so the
// kernel drops the old dentry but a process that holds the old directory or
// file open keeps the old, immutable content. Image files hash the journal
// position, not the path, so every name that resolves to one point shares one
// inode and one page cache.
//
// # Caching
//
// Instant directories and their files never change: their attributes and
// entries are cached for an hour and image files open with FOPEN_KEEP_CACHE.
// Listings that grow (the root and disk directories) are asked of the Source
// on every Lookup and Readdir; their entries live a second, and latest and
// relative names are not cached at all. Failed lookups are not cached, so an
// instant that was in the future resolves once it has passed.
//
// # Reads
//
// The mount is read-only (ro), requests carry up to 1 MiB (MaxWrite) and the
// mount's read-ahead is raised to 1 MiB after mounting, because the kernel
// otherwise splits sequential reads into 128 KiB requests. A read goes straight
// from the point-in-time reader into the request buffer.
package fs
