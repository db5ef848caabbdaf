package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/cockroachdb/pebble/v2"
)

// Damage is stored content that cannot be given back as it was written:
// its segment file is missing or too short, or its bytes fail their
// checksum. It names what a storage admin needs to find the damage and what
// it affects; errors.Is(err, ErrCorrupt) holds for every damage, and the
// underlying error (an I/O error, say) is kept too.
type Damage struct {
	Disk    string // the disk read
	Block   uint64 // the block of Disk
	Seq     uint64 // the journal position that wrote this version of Block
	Segment string // the segment file, relative to the repository
	Offset  uint64 // where the content starts in it
	Reason  string // what is wrong
	Err     error  // cause, wrapped; ErrCorrupt unless the disk failed a read
}

func (e *Damage) Error() string {
	return fmt.Sprintf("damaged content: disk %q block %d (its version of journal position %d) in %s at offset %d: %s; "+
		"run 'hindsight verify' to see what else is affected", e.Disk, e.Block, e.Seq, e.Segment, e.Offset, e.Reason)
}

func (e *Damage) Unwrap() error { return e.Err }

// damage describes a failed read of the content of version v (block b of
// disk d): a segment that is missing or short is damage, and so is content
// whose check fails; other read errors (EIO from the disk) keep their cause.
func damage(d Disk, b uint64, v version, err error) error {
	var dm *Damage
	if errors.As(err, &dm) {
		return err
	}
	out := &Damage{Disk: d.Name, Block: b, Seq: v.seq, Segment: "segments/" + segmentName(v.loc.seg), Offset: v.loc.off, Err: err}
	switch {
	case errors.Is(err, fs.ErrNotExist):
		out.Reason, out.Err = "the segment file is missing", ErrCorrupt
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		out.Reason, out.Err = "the segment file ends before it", ErrCorrupt
	case errors.Is(err, ErrCorrupt):
		out.Reason = strings.TrimSuffix(err.Error(), ": "+ErrCorrupt.Error())
	default:
		out.Reason = "read failed: " + err.Error()
	}
	return out
}

// errChecksum and errHash are the two ways content fails its check.
var (
	errChecksum = fmt.Errorf("stored bytes fail their checksum: %w", ErrCorrupt)
	errHash     = fmt.Errorf("content fails its BLAKE3 hash: %w", ErrCorrupt)
)

// checkSegments refuses a repository whose index references a segment file
// that is missing or shorter than recorded, or a records.log shorter than
// the index holds: a writer would otherwise re-create or extend it and serve
// zeros as history. (Index tables missing or short pebble's own open
// refuses: indexOpenError.) Readers go
// on without this check, failing only the blocks that lie in the damage.
func (r *Repo) checkSegments() error {
	var errs []error
	err := r.scan([]byte{kindSegment}, func(k, v []byte) error {
		if len(k) != 5 || len(v) != 8 {
			errs = append(errs, fmt.Errorf("segment record %x of %d bytes", k, len(v)))
			return nil
		}
		id, n := binary.BigEndian.Uint32(k[1:]), binary.BigEndian.Uint64(v)
		if n == 0 {
			return nil
		}
		fi, err := os.Stat(filepath.Join(r.segs.dir, segmentName(id)))
		switch {
		case errors.Is(err, fs.ErrNotExist):
			errs = append(errs, fmt.Errorf("segments/%s is missing (the index records %d committed bytes in it)", segmentName(id), n))
		case err != nil:
			return err
		case uint64(fi.Size()) < n:
			errs = append(errs, fmt.Errorf("segments/%s holds %d bytes, less than the %d committed", segmentName(id), fi.Size(), n))
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("store: check segments: %w", err)
	}
	if n, err := r.getU64(metaRecords); err != nil {
		return err
	} else if fi, err := os.Stat(filepath.Join(r.dir, recordsFile)); n > 0 && (err != nil || uint64(fi.Size()) < n) {
		errs = append(errs, fmt.Errorf("%s is missing or shorter than the %d bytes the index records", recordsFile, n))
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w: %w; no writer may open it: run 'hindsight --repo %s verify' to see which disks and instants are affected",
			ErrCorrupt, errors.Join(errs...), r.dir)
	}
	return nil
}

// indexOpenError says what pebble found when the index would not open; a
// damaged or missing table file is ErrCorrupt (pebble marks only some of
// its findings with its own ErrCorruption).
func indexOpenError(dir string, err error) error {
	if errors.Is(err, pebble.ErrCorruption) || errors.Is(err, fs.ErrNotExist) || strings.Contains(err.Error(), "mismatch") {
		return fmt.Errorf("%w: the index of %s cannot be opened: %w; 'hindsight --repo %s verify --repair' rebuilds it from the repository's logs", ErrCorrupt, dir, err, dir)
	}
	return fmt.Errorf("store: open index of %s: %w", dir, err)
}

// CheckWriterIndex checks the writer's own index files (a view has its own
// links to older ones) when no writer runs: it takes the writer lock for
// the moment of the check. It returns what is damaged, or ok false when a
// writer holds the lock (a live writer checked them when it opened).
func CheckWriterIndex(dir string) (problems []string, ok bool, err error) {
	prev, _ := os.ReadFile(filepath.Join(dir, lockFile)) // a dead writer's pid: readers recover after it
	lock, err := lockWriter(dir, 0)
	if errors.Is(err, ErrLocked) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	defer func() {
		lock.Truncate(0)
		lock.WriteAt(prev, 0)
		lock.Close()
	}()
	cache := pebble.NewCache(8 << 20)
	defer cache.Unref()
	po := pebbleOptions(Options{ReadOnly: true}, cache)
	po.ErrorIfNotExists = true
	// pebble checks every table's presence and size as it opens.
	db, err := pebble.Open(filepath.Join(dir, "db"), po)
	if err != nil {
		return []string{indexOpenError(dir, err).Error()}, true, nil
	}
	return nil, true, db.Close()
}
