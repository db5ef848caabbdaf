// Package quiesce makes application-consistent bookmarks: it brings the
// applications and filesystems on a protected disk to a state a restore can
// start from, holds them there while the caller records the bookmark at one
// journal position, and releases them, always.
//
// # Sequence
//
// A Runner freezes its agents in order, calls mark once every freeze has
// succeeded, then thaws in reverse order every agent whose freeze was
// attempted, including the one that failed:
//
//	freeze a1 → freeze a2 → … → mark → … → thaw a2 → thaw a1
//
// New orders the agents postgres, hooks, exec, fsfreeze: PostgreSQL holds
// nothing and may spend a while in checkpoints, the hooks and exec commands
// hold applications and should do so briefly, and filesystems freeze last,
// under applications that have flushed.
//
// A failed freeze refuses the bookmark: mark is not called and Run's error
// wraps ErrRefused. One timeout bounds the freezes and the mark together; when
// it runs out, the running hook's whole process group is killed, the attempted
// agents are thawed and the error wraps ErrTimeout. When the caller's context
// is canceled (SIGTERM), the same happens with context.Canceled. Thaws never
// run under the caller's context: each gets a fresh one, bounded by the thaw
// timeout, so a signal cannot leave an application frozen.
//
// # Agents
//
// The hooks directory follows the VMware pre-freeze/post-thaw convention:
// every executable regular file in it runs in name order (the others are
// listed in Report.Skipped) as `HOOK freeze` before the mark and as
// `HOOK thaw` after it, or `HOOK freezeFail` when its own freeze failed.
// The environment carries HINDSIGHT_PHASE (freeze or thaw), HINDSIGHT_GROUP,
// HINDSIGHT_BOOKMARK, HINDSIGHT_DISKS (space-separated) and, when thawing,
// HINDSIGHT_FREEZE_STATUS (ok or failed, for this hook's freeze). Each hook
// runs in a process group of its own, with its output captured. The exec agent
// runs a freeze and a thaw command the same way, through /bin/sh -c.
//
// The fsfreeze agent freezes the filesystems holding the given paths with
// the FIFREEZE ioctl (what fsfreeze -f does): the filesystem is synced, its
// journal left clean, and every write blocks until FITHAW. Freeze the
// filesystems on the protected disks, never the one holding the repository:
// the mark would block on it until the timeout. The kernel keeps a
// filesystem frozen after the process that froze it dies, so a hindsight
// killed with SIGKILL between freeze and thaw leaves it to `fsfreeze -u`.
//
// # PostgreSQL and the backup label
//
// The postgres agent takes a non-exclusive base backup on one session:
// CHECKPOINT, pg_backup_start(label, fast => true), pg_backup_stop(
// wait_for_archive => false). pg_backup_stop returns the backup_label (and a
// tablespace_map when there are tablespaces) that Report.Files carries, to be
// put into the data directory of a restored image. Recovery from a
// backup_label starts at the backup's start checkpoint and refuses to open the
// database before it has replayed the backup-end record that pg_backup_stop
// writes ("WAL ends before end of online backup"). So the image the bookmark
// names must hold:
//
//   - the WAL up to and including the backup-end record, durably written;
//   - the WAL from the backup's start, not yet removed or recycled by a
//     checkpoint that completed after pg_backup_start.
//
// A copy taken between start and stop, as base backups are, meets neither
// requirement by itself: this image is not copied over time but taken at one
// instant, the mark, so the whole backup runs inside Freeze and the mark comes
// after it. Freeze first creates a temporary physical replication slot that
// reserves WAL from the last checkpoint's redo point, so no checkpoint between
// start and mark can remove the backup's WAL; after pg_backup_stop it commits
// a transaction with an xid, whose synchronous commit flushes the WAL past the
// backup-end record (pg_backup_stop's own segment switch flushes too, but not
// when the insert position already sits at a segment boundary), and checks
// pg_current_wal_flush_lsn against the stop position. Thaw drops the slot.
// The temporary slot and the in-progress backup both die with the session, so
// a hindsight killed in the middle leaves nothing behind in the server, and a
// slot found in a restored image is removed by the server at startup.
//
// The database keeps running throughout: the image at the mark is
// crash-consistent, and the backup_label makes its recovery start from the
// backup's checkpoint and prove that it replayed through the backup's end.
// Restore it by writing Report.Files["backup_label"] (and tablespace_map)
// into the data directory before starting the server, without
// recovery.signal. The role needs REPLICATION (for the slot), EXECUTE on the
// backup functions and pg_checkpoint, or is a superuser.
//
// # Report
//
// Run returns a Report in every case: one Step per freeze, mark and thaw with
// its times, status (ok, failed, timeout, canceled), exit status and the tail
// of its output; Consistent, true only when every freeze and the mark
// succeeded; FreezeToThaw, from the first freeze to the last thaw; and Held,
// from the last freeze to the first thaw, which is what the mark adds.
package quiesce
