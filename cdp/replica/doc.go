// Package replica streams a protected disk's (or group's) journal to a
// repository at a second site, as it is written, and applies such streams:
// the replication of docs/REPLICATION.md.
//
// # Model
//
// The source reads its timeline point by point (store.StreamAfter), only up
// to what is durable, and the target journals each step at the source's
// time (store.ApplySteps). The target's position is the time of its newest
// point (store.ReplicaPosition): the stream resumes after it on every
// connection, so a cut, a restart or a crash on either side leaves no gap
// and no repeat. The target acknowledges a position only once it is durable.
//
// # Protocol (version 1)
//
// One TCP connection per replicated disk or group, TLS 1.3 with a CA the
// source pins (plain TCP only with --insecure, on loopback). Every message
// is a frame:
//
//	frame:  type u8 | length u32 | payload       (length ≤ MaxFrame)
//
// Integers are big-endian; times are Unix nanoseconds (i64).
//
//	1 HELLO    c→s  JSON Hello: the token, the disk or group and its disks
//	2 WELCOME  s→c  JSON Welcome: the target's position
//	3 REFUSE   s→c  JSON {"reason"}: the connection ends
//	4 ASK      c→s  id u64 | n u32 | hash [32] × n
//	5 HAVE     s→c  id u64 | n u32 | bitmap ⌈n/8⌉ bytes (bit i: hash i is held)
//	6 STEPS    c→s  id u64 | flags u8 | count u32 | step × count
//	7 ACK      s→c  seq u64 | time i64: durable up to that source position
//	8 PING     c→s  empty: the stream is idle, not gone
//	9 PONG     s→c  empty
//	10 MARKS   c→s  marks u16 | mark × marks: bookmarks of points already sent
//
//	step:   seq u64 | time i64 | part u8 | blocks u32 | block × blocks | marks u16 | mark × marks
//	block:  disk u16 | block u64 | kind u8 | [hash [32]] | [len u32 | content]
//	kind:   0 zeros (nothing follows) | 1 held (hash) | 2 raw (hash, content) | 3 zstd (hash, content)
//	mark:   len u32 | Bookmark as JSON (bookmarks naming the step's point)
//	part:   0 a whole step | 1 a part with more to follow | 2 the last part
//	flags:  1: sync: apply, make durable and ACK at once
//
// disk is the index of the disk in HELLO's list. ASK comes before the
// STEPS frame with the same id and names the hashes the source has not
// yet seen the target hold; the source sends content only for those HAVE
// says are missing, and keeps several ASKs in flight so that round trips
// do not set the pace. The target checks every block's content against
// its hash (store.ErrBadContent) and that a block sent by hash alone is
// held (store.ErrMissingContent): either ends the connection with REFUSE,
// and the source starts again from the acknowledged position.
//
// A step with more blocks than a frame takes (2048, or 8 MiB of content)
// goes in parts, each alone in its STEPS frame; the target journals it
// with store.BeginIncoming, which holds its writer until the last part
// (a source that stalls mid-step holds it up to IdleTimeout). A frame of
// whole steps is applied all or nothing. A bookmark made after its point
// was sent (most are: a bookmark names the newest point) follows in MARKS;
// the target records bookmarks with store.Repo.Mark and skips those it has.
//
// # Durability and acknowledgements
//
// The target makes applied steps durable and sends ACK with the newest
// one's source position and time: at once for a frame flagged sync, else
// once no further frame is waiting in its reader or 50 ms after its last
// sync (group commit). Before WELCOME it syncs whatever an earlier
// connection applied, so the position it states is durable. The source's
// acknowledged position (Sender.Acked) is a journal position of the source
// repository up to which the whole timeline is on the target: a pass that
// read everything up to the durable position p, once acknowledged, covers
// p even if other timelines wrote since, so a --sync flush that made p
// durable waits for exactly that (Sender.WaitAcked).
//
// In Sync mode a batch that would ask for at most 64 hashes skips ASK and
// carries the content of those not known held: a flush then costs one
// round trip (STEPS, ACK) rather than two, for at most 64 blocks of content
// the target might already hold.
//
// # Connections
//
// One stream per replica name: a second connection for a name replaces
// the first (closed at once), since a source whose link broke without the
// target noticing must not wait out IdleTimeout to come back. HELLO must
// arrive within HelloTimeout of the connection (TLS handshake included),
// every later frame within IdleTimeout. Refusals (a bad or absent token, a
// name the token does not allow, a bad version, a malformed or oversized
// frame, a failed TLS handshake, content that fails its check) are logged
// at most 10 lines a second, with a count of those left out. The source
// reconnects after any failure, 0.5 s doubling to 10 s, jittered.
package replica
