// Package store is Hindsight's journal: one pebble database per repository
// holding every block version a protected disk ever had, with the content of
// those versions kept once per BLAKE3 hash in append-only segment files.
//
// # Repository layout
//
//	R/hindsight.json     marker: format version and creation time
//	R/writer.lock        flock held by the one writer process (holder's pid inside)
//	R/db/                pebble: the index (keys below)
//	R/segments/N.seg     block content, appended in write order; rewritten only by gc
//	R/records.log        every durably committed batch, fdatasynced first (records.go)
//	R/views/G/           pebble checkpoints published by the writer after each step
//
// Content lives outside the LSM so that compactions never rewrite block data,
// and in write order so that an image imported sequentially is read back with
// large sequential reads (measured in docs/PERFORMANCE.md).
//
// # Journal model
//
// Every change is a journal step with a repository-wide sequence number
// (the order of truth) and a timestamp that strictly increases per timeline
// (a consistency group; a lone disk is its own timeline). A step may write many
// blocks (an import) or a few (a captured write). The committed head is the
// newest step whose last batch was committed; a large step's earlier batches
// above it are orphans of an interrupted step and are purged when the writer
// next opens the repository.
//
// # Captured writes
//
// A front end's write is queued (CaptureAsync): it gets its place in the
// journal order and its time, is visible to ReadNewest, and the call
// returns; the capture goroutine hashes, compresses and commits queued
// writes in order. Each captured step is appended to the newest segment as
// one frame describing the whole step (frame.go), and its index batch is
// not synced: Sync, what fsync and flush map to, drains the queue and
// fdatasyncs the segment once. On open, steps above the last sync are
// rebuilt from the frames that reached the disk (recoverLog). Appends reach
// the segment through aligned chunks written with O_DIRECT (segwriter.go).
//
// The image of disk d at position p is, for each block b, the newest version
// of b with seq ≤ p, else zeros. Versions are never modified after commit, so a
// reader pinned at p sees the same bytes from any later view of the database.
//
// # The index is rebuilt from its logs
//
// Everything acknowledged is in a log the index can be rebuilt from: a
// captured step in its segment frame, every other durable batch (imports,
// disks, groups, bookmarks, clones, profiles) in records.log. When the
// index's tail is lost (a garbled pebble WAL, an older db/ put back), the
// next writer replays both in journal order (recoverLog) and says so.
//
// # Key schema
//
// All integers are big-endian and fixed width, so byte order is numeric order.
// Timestamps are Unix nanoseconds with the sign bit flipped.
//
//	'm' name                         → meta value (head, synced, nextdisk: u64)
//	'm' "log"                        → seg u32 | off u64: where the log after synced starts
//	'm' 'v' disk u32                 → count u64 of the disk's non-zero block versions
//	'd' name                         → Disk as JSON
//	'v' disk u32 | block u64 | ^seq u64 → version: hash [32] | location
//	'j' seq u64 | disk u32 | block u64  → empty: the journal in time order
//	't' timeline u32 | ts u64            → seq u64 | blocks u64: points, time order == seq order
//	'b' timeline u32 | name             → Bookmark as JSON (a group's bookmarks name all its disks)
//	'g' name                             → Group as JSON
//	'p' timeline u32                     → retention Policy as JSON (cdp/retention)
//	'h' hash [32]                        → location
//
// A location is flags u8 | seg u32 | off u64 | len u32 | sum u32: where
// the stored (possibly zstd-compressed) content lies in the segment files
// (raw, as an import appends it, or inside a captured step's frame) and the
// low 32 bits of the XXH3 hash of those stored bytes. Locations written
// before checksums came in lack the sum (17 bytes, no flagSum); their content is checked against its
// BLAKE3 hash instead.
//
// # Integrity
//
// Every block read is checked before a caller sees it (image.go): a
// mismatch, a missing segment or one shorter than the index says is a
// *Damage (errors.Is ErrCorrupt) naming the disk, block, journal position
// and segment file; other blocks and instants read on. A writer refuses to
// open a repository whose index references a missing or short segment
// (checkSegments), and never creates or extends a segment that holds
// committed content.
//
//	's' seg u32                          → committed length u64 of that segment
//
// # Retention and garbage collection
//
// Prune (prune.go) removes points and collapses the versions between two
// kept positions; Collect (gc.go) frees content nothing references and
// rewrites segments that are mostly unused. Their keys:
//
//	'r' hash [32] | disk u32 | block u64 | seq u64 → empty: a non-zero version's reference
//	'c' seg u32 | off u64                → hash [32] | stored length u32: content by location
//	'z' hash [32]                        → empty: content a removed version referenced
//	'u' seg u32                          → unused bytes u64 of the segment
//	'x' seg u32                          → view generation u64: the segment was rewritten
//	'm' 'P' timeline u32 | hi u64        → lo u64: a span (lo, hi] still to collapse
//	'm' "refs"                           → 1: every 'r' and 'c' key exists (refs.go)
//
// A version whose location names a retired ('x') segment is read where its
// hash's 'h' record says the content lies now.
//
// The inverted sequence in 'v' keys makes "newest version of b at or before p"
// one SeekGE to (d, b, ^p). Zero blocks carry the zero flag and no content.
//
// # Replication
//
// StreamAfter reads a timeline point by point for a stream to another
// site; ApplySteps journals such steps at their source times in a replica
// (a disk or group whose record names its source, ReplicaOf). A replica's
// position is the time of its newest point, so nothing beside the steps
// records it (replica.go, replica_apply.go, replica_failover.go).
//
// # Processes
//
// One writer holds writer.lock and the pebble database. Other processes (the
// FUSE tree, listings) open the newest view read-only: they hard-link its files
// into a private directory, so the writer may delete old views at any time.
package store
