package store

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"time"
)

// Every batch committed durably (commitSynced: imports, disks, groups,
// bookmarks, clones, profiles) is also appended to R/records.log and
// fdatasynced before pebble commits it, so that what was acknowledged
// survives the loss of the index's tail (a garbled pebble WAL, an older
// copy of db/ put back): the index is then rebuilt from the records and
// the segments' frames (recoverLog). Captured steps need no record: their
// frames are their log.
//
//	record: magic u32 | length u32 | head u64 | logSeg u32 | logOff u64 | batch | crc32c u32
//
// head is the journal's head when the batch was committed: the record
// applies once the frames up to it are replayed. logSeg/logOff is where the
// segments' log stood after it (metaLog): raw content an import appended
// before that lies outside any frame, so replay of frames resumes there.
// batch is pebble's batch representation of the committed operations.
// 'm' "rlog" in the index is the length of records.log it holds.

const (
	recordMagic = 0x48535231 // "HSR1"
	recordHead  = 4 + 4 + 8 + 4 + 8
	recordsFile = "records.log"
)

var metaRecords = []byte{kindMeta, 'r', 'l', 'o', 'g'}

// recordLog appends records for the writer.
type recordLog struct {
	f    *os.File
	size uint64
}

func openRecordLog(dir string) (*recordLog, error) {
	name := filepath.Join(dir, recordsFile)
	_, statErr := os.Stat(name)
	f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", recordsFile, err)
	}
	if errors.Is(statErr, os.ErrNotExist) {
		if err := syncDir(dir); err != nil {
			f.Close()
			return nil, err
		}
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	return &recordLog{f: f, size: uint64(fi.Size())}, nil
}

// append writes one record of batch b, committed at head with the log
// after it at pos, and makes it durable.
func (l *recordLog) append(head uint64, pos segPos, batch []byte) error {
	rec := make([]byte, 0, recordHead+len(batch)+4)
	rec = be32(rec, recordMagic)
	rec = be32(rec, uint32(recordHead-8+len(batch)))
	rec = be64(rec, head)
	rec = be32(rec, pos.seg)
	rec = be64(rec, pos.off)
	rec = append(rec, batch...)
	rec = be32(rec, crc32.Checksum(rec, castagnoli))
	if _, err := l.f.WriteAt(rec, int64(l.size)); err != nil {
		return fmt.Errorf("store: append to %s: %w", recordsFile, err)
	}
	if err := l.f.Sync(); err != nil {
		return fmt.Errorf("store: sync %s: %w", recordsFile, err)
	}
	l.size += uint64(len(rec))
	return nil
}

func (l *recordLog) close() error {
	if l == nil || l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f = nil
	return err
}

// record is one whole record read back.
type record struct {
	head  uint64
	pos   segPos
	batch []byte
	size  uint64
}

// readRecord reads the record at off; false at the end or a torn or
// damaged record.
func readRecord(f io.ReaderAt, off uint64) (record, bool) {
	var h [8]byte
	if _, err := f.ReadAt(h[:], int64(off)); err != nil || binary.BigEndian.Uint32(h[:]) != recordMagic {
		return record{}, false
	}
	n := uint64(binary.BigEndian.Uint32(h[4:]))
	if n < recordHead-8 {
		return record{}, false
	}
	var last [1]byte // before trusting n with an allocation
	if _, err := f.ReadAt(last[:], int64(off+8+n+4-1)); err != nil {
		return record{}, false
	}
	buf := make([]byte, 8+n+4)
	if _, err := f.ReadAt(buf, int64(off)); err != nil {
		return record{}, false
	}
	body := buf[:8+n]
	if crc32.Checksum(body, castagnoli) != binary.BigEndian.Uint32(buf[8+n:]) {
		return record{}, false
	}
	return record{
		head:  binary.BigEndian.Uint64(body[8:]),
		pos:   segPos{binary.BigEndian.Uint32(body[16:]), binary.BigEndian.Uint64(body[20:])},
		batch: bytes.Clone(body[recordHead:]),
		size:  uint64(len(buf)),
	}, true
}

// RebuildIndex makes the repository's index anew from its logs (every
// record and frame, in journal order), for an index that is damaged; the
// old one is kept beside it as db.damaged-<unix time>, whose path it
// returns. It needs the writer lock, and refuses a repository created
// before records.log, whose logs do not hold its whole history.
func RebuildIndex(dir string, opt Options) (string, error) {
	b, err := os.ReadFile(filepath.Join(dir, markerFile))
	if err != nil {
		return "", fmt.Errorf("%w: %s: %w", ErrNotRepository, dir, err)
	}
	var m marker
	if err := json.Unmarshal(b, &m); err != nil || !m.Records {
		return "", fmt.Errorf("store: %s was created before its records log: its index cannot be rebuilt from its logs alone", dir)
	}
	if m.Collected != nil {
		return "", fmt.Errorf("store: garbage collection rewrote segments of %s on %s, so its logs no longer hold the whole history: "+
			"its index cannot be rebuilt from them; restore db/ from a copy", dir, m.Collected.Format(time.RFC3339))
	}
	lock, err := lockWriter(dir, lockWait)
	if err != nil {
		return "", err
	}
	aside := filepath.Join(dir, fmt.Sprintf("db.damaged-%d", time.Now().Unix()))
	if err := os.Rename(filepath.Join(dir, "db"), aside); err != nil && !errors.Is(err, os.ErrNotExist) {
		lock.Close()
		return "", fmt.Errorf("store: move the damaged index aside: %w", err)
	}
	if err := syncDir(dir); err != nil {
		lock.Close()
		return "", err
	}
	if fi, err := os.Stat(filepath.Join(dir, recordsFile)); err != nil || fi.Size() == 0 {
		os.Rename(aside, filepath.Join(dir, "db"))
		lock.Close()
		return "", fmt.Errorf("%w: %s is missing or empty: the index cannot be rebuilt without it", ErrCorrupt, recordsFile)
	}
	r, err := openWriterLocked(dir, opt, true, lock)
	if err != nil { // put the damaged index back, keep what the rebuild made aside
		failed := filepath.Join(dir, fmt.Sprintf("db.rebuild-failed-%d", time.Now().Unix()))
		os.Rename(filepath.Join(dir, "db"), failed)
		os.Rename(aside, filepath.Join(dir, "db"))
		syncDir(dir)
		return "", fmt.Errorf("store: rebuild the index of %s from its logs failed (what it made is in %s; the damaged index is back in db/): %w", dir, failed, err)
	}
	return aside, r.Close()
}
