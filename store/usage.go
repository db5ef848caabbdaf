package store

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"syscall"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// Usage is where a repository's bytes go: what each disk journaled, how
// much content that is once deduplicated and compressed, and what the
// repository's files take on the filesystem.
type Usage struct {
	// At is the instant the age bands are measured back from.
	At   time.Time `json:"at"`
	Head uint64    `json:"head"`
	// Disks are every disk, by name.
	Disks []DiskUsage `json:"disks"`
	// Versions, ZeroVersions and LogicalBytes are the sums over all
	// committed block versions (those of disks since deleted are gone).
	Versions     uint64 `json:"versions"`
	ZeroVersions uint64 `json:"zero_versions"`
	LogicalBytes int64  `json:"logical_bytes"`
	// Content is the distinct content the versions reference.
	Content ContentUsage `json:"content"`
	// Unreferenced is content the index holds that no version references
	// any more (left by a deleted disk or by pruning): what gc frees.
	Unreferenced ContentUsage `json:"unreferenced"`
	// DedupeRatio is LogicalBytes ÷ Content.PlainBytes, and
	// CompressionRatio Content.PlainBytes ÷ Content.StoredBytes (0 when
	// there is no content).
	DedupeRatio      float64   `json:"dedupe_ratio"`
	CompressionRatio float64   `json:"compression_ratio"`
	Files            FileUsage `json:"files"`
}

// DiskUsage is what one disk's block versions take.
type DiskUsage struct {
	Name      string `json:"name"`
	ID        uint32 `json:"id"`
	Timeline  uint32 `json:"timeline"`
	Group     string `json:"group,omitempty"`
	BlockSize int    `json:"block_size"`
	// Versions counts the disk's non-zero block versions, ZeroVersions its
	// all-zero ones (which store no content); LogicalBytes is Versions ×
	// BlockSize: what they would take without dedupe or compression.
	Versions     uint64 `json:"versions"`
	ZeroVersions uint64 `json:"zero_versions"`
	LogicalBytes int64  `json:"logical_bytes"`
	// Content counts the distinct content the disk's versions reference and
	// StoredBytes is its size as stored: content shared with other disks
	// counts for each of them. ExclusiveBytes is the stored size of the
	// part no other disk references: what deleting the disk would free.
	Content        uint64 `json:"content"`
	StoredBytes    int64  `json:"stored_bytes"`
	ExclusiveBytes int64  `json:"exclusive_bytes"`
	// Ages splits the versions by the age of the point that shows them.
	Ages []AgeBand `json:"ages"`
}

// AgeBand holds the versions of points older than the previous band's
// MaxAge and at most MaxAge old; the last band (MaxAge 0) holds everything
// older. A point in the future of At counts as age 0.
type AgeBand struct {
	Label        string        `json:"label"` // "1h", "7d", …, "older"
	MaxAge       time.Duration `json:"-"`
	MaxAgeSec    int64         `json:"max_age_seconds"`
	Versions     uint64        `json:"versions"`
	ZeroVersions uint64        `json:"zero_versions"`
	LogicalBytes int64         `json:"logical_bytes"`
}

// ContentUsage is a set of distinct stored content: Count blocks that take
// PlainBytes uncompressed and StoredBytes as stored. PlainBytes is unknown
// (0) for unreferenced content, whose block size no version says.
type ContentUsage struct {
	Count       uint64 `json:"count"`
	PlainBytes  int64  `json:"plain_bytes,omitempty"`
	StoredBytes int64  `json:"stored_bytes"`
}

// FileUsage is the space the repository's files take, as du counts it:
// allocated blocks (st_blocks × 512), each file once however many links
// it has. A file linked from more than one place counts in the first of
// Segments, Index, Records, Views, Other: a view's tables are mostly links
// to the index's, so Views is what the views add.
type FileUsage struct {
	Segments int64 `json:"segments"` // segments/
	Index    int64 `json:"index"`    // db/
	Records  int64 `json:"records"`  // records.log
	Views    int64 `json:"views"`    // views/
	Other    int64 `json:"other"`    // the rest: the marker, the lock, directories
	Total    int64 `json:"total"`    // the whole repository directory
}

// DefaultAgeBands are the age bands du shows: an hour, a day, a week, a
// month and a year (then everything older).
var DefaultAgeBands = []time.Duration{time.Hour, 24 * time.Hour, 7 * 24 * time.Hour, 30 * 24 * time.Hour, 365 * 24 * time.Hour}

// Usage reports where the repository's bytes go, with versions split into
// age bands measured back from now (bands ascending; nil: DefaultAgeBands).
// It reads one consistent snapshot of the index in a few bounded scans
// (on a read-only view it runs beside the writer) and keeps in memory one
// entry per distinct content and per point, then walks the directory.
// Versions above the head (a step still being written) are not counted.
func (r *Repo) Usage(ctx context.Context, now time.Time, bands []time.Duration) (*Usage, error) {
	if bands == nil {
		bands = DefaultAgeBands
	}
	for i := 1; i < len(bands); i++ {
		if bands[i] <= bands[i-1] {
			return nil, fmt.Errorf("store: usage: age bands %v are not ascending", bands)
		}
	}
	snap := r.db.NewSnapshot()
	defer snap.Close()
	u := &Usage{At: now.UTC(), Disks: []DiskUsage{}}
	head, err := snapU64(snap, metaHead)
	if err != nil {
		return nil, err
	}
	u.Head = head

	disks, err := usageDisks(ctx, snap, bands)
	if err != nil {
		return nil, err
	}
	times, err := pointTimes(ctx, snap)
	if err != nil {
		return nil, err
	}
	content, err := u.versions(ctx, snap, disks, times, bands)
	if err != nil {
		return nil, err
	}
	if err := u.unreferenced(ctx, snap, content); err != nil {
		return nil, err
	}
	for _, c := range content {
		if !c.shared {
			if d := disks[c.disk]; d != nil {
				d.ExclusiveBytes += int64(c.n)
			}
		}
	}
	for _, d := range disks {
		u.Disks = append(u.Disks, *d)
	}
	sort.Slice(u.Disks, func(i, j int) bool { return u.Disks[i].Name < u.Disks[j].Name })
	if u.Content.PlainBytes > 0 {
		u.DedupeRatio = float64(u.LogicalBytes) / float64(u.Content.PlainBytes)
	}
	if u.Content.StoredBytes > 0 {
		u.CompressionRatio = float64(u.Content.PlainBytes) / float64(u.Content.StoredBytes)
	}
	if u.Files, err = DirUsage(r.dir); err != nil {
		return nil, err
	}
	return u, nil
}

// contentRef is what Usage keeps of one distinct content.
type contentRef struct {
	n      uint32 // stored bytes
	disk   uint32 // the disk that referenced it first, then the last one
	shared bool   // referenced by more than one disk
}

// datedPoint is a point's position and time, for dating versions.
type datedPoint struct {
	seq uint64
	t   time.Time
}

func snapU64(snap *pebble.Snapshot, key []byte) (uint64, error) {
	v, closer, err := snap.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	defer closer.Close()
	if len(v) != 8 {
		return 0, fmt.Errorf("store: %q holds %d bytes: %w", key, len(v), ErrCorrupt)
	}
	return u64(v), nil
}

// snapScan calls fn for every key with prefix in snap, in order, checking
// ctx every so often.
func snapScan(ctx context.Context, snap *pebble.Snapshot, prefix []byte, fn func(k, v []byte) error) error {
	it, err := snap.NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: prefixEnd(prefix)})
	if err != nil {
		return err
	}
	n := 0
	for it.First(); it.Valid(); it.Next() {
		if n++; n%65536 == 0 {
			if err := ctx.Err(); err != nil {
				it.Close()
				return err
			}
		}
		if err := fn(it.Key(), it.Value()); err != nil {
			it.Close()
			return err
		}
	}
	return errors.Join(it.Error(), it.Close())
}

// usageDisks reads every disk, by ID, with empty age bands.
func usageDisks(ctx context.Context, snap *pebble.Snapshot, bands []time.Duration) (map[uint32]*DiskUsage, error) {
	disks := map[uint32]*DiskUsage{}
	err := snapScan(ctx, snap, []byte{kindDisk}, func(k, v []byte) error {
		var d Disk
		if err := json.Unmarshal(v, &d); err != nil {
			return fmt.Errorf("store: disk %q: %v: %w", k[1:], err, ErrCorrupt)
		}
		du := &DiskUsage{Name: d.Name, ID: d.ID, Timeline: d.Timeline, Group: d.Group, BlockSize: d.BlockSize, Ages: make([]AgeBand, len(bands)+1)}
		for i, b := range bands {
			du.Ages[i] = AgeBand{Label: bandLabel(b), MaxAge: b, MaxAgeSec: int64(b / time.Second)}
		}
		du.Ages[len(bands)].Label = "older"
		disks[d.ID] = du
		return nil
	})
	return disks, err
}

// bandLabel names an age: 7d, 24h, 15m, or Go's form for odd ones.
func bandLabel(d time.Duration) string {
	switch {
	case d%(24*time.Hour) == 0 && d >= 48*time.Hour:
		return fmt.Sprintf("%dd", d/(24*time.Hour))
	case d%time.Hour == 0:
		return fmt.Sprintf("%dh", d/time.Hour)
	case d%time.Minute == 0:
		return fmt.Sprintf("%dm", d/time.Minute)
	}
	return d.String()
}

// pointTimes reads every timeline's points, in position order.
func pointTimes(ctx context.Context, snap *pebble.Snapshot) (map[uint32][]datedPoint, error) {
	times := map[uint32][]datedPoint{}
	err := snapScan(ctx, snap, []byte{kindPoint}, func(k, v []byte) error {
		p, err := decodePoint(k, v)
		if err != nil {
			return err
		}
		tl := binary.BigEndian.Uint32(k[1:])
		times[tl] = append(times[tl], datedPoint{p.Seq, p.Time})
		return nil
	})
	return times, err
}

// versions walks every block version: per-disk counts, age bands and the
// distinct content referenced.
func (u *Usage) versions(ctx context.Context, snap *pebble.Snapshot, disks map[uint32]*DiskUsage,
	times map[uint32][]datedPoint, bands []time.Duration,
) (map[Hash]contentRef, error) {
	content := map[Hash]contentRef{}
	var cur *DiskUsage
	var pts []datedPoint
	curID := ^uint32(0)
	err := snapScan(ctx, snap, []byte{kindVersion}, func(k, v []byte) error {
		id, _, seq, ok := versionBlock(k)
		if !ok || !versionValueOK(v) {
			return fmt.Errorf("store: version record %x: %w", k, ErrCorrupt)
		}
		if seq > u.Head {
			return nil // a step still being written
		}
		if id != curID {
			curID, cur, pts = id, disks[id], nil
			if cur != nil {
				pts = times[cur.Timeline]
			}
		}
		loc, err := decodeLocation(v[len(Hash{}):])
		if err != nil {
			return fmt.Errorf("store: version %x: %w", k, err)
		}
		band := 0
		if cur != nil {
			band = ageBand(u.At, versionTime(pts, seq), bands)
		}
		if loc.flags&flagZero != 0 {
			u.ZeroVersions++
			if cur != nil {
				cur.ZeroVersions++
				cur.Ages[band].ZeroVersions++
			}
			return nil
		}
		u.Versions++
		bs := int64(0)
		if cur != nil {
			bs = int64(cur.BlockSize)
			cur.Versions++
			cur.LogicalBytes += bs
			cur.Ages[band].Versions++
			cur.Ages[band].LogicalBytes += bs
		}
		u.LogicalBytes += bs
		h := Hash(v[:len(Hash{})])
		c, seen := content[h]
		if !seen {
			c = contentRef{n: loc.n, disk: id}
			content[h] = c
			u.Content.Count++
			u.Content.PlainBytes += bs
			u.Content.StoredBytes += int64(loc.n)
		} else if c.disk == id {
			return nil // counted for this disk already: versions come by disk
		} else {
			c.disk, c.shared = id, true
			content[h] = c
		}
		if cur != nil {
			cur.Content++
			cur.StoredBytes += int64(c.n)
		}
		return nil
	})
	return content, err
}

// versionTime is the time of the point that first shows a version written
// at seq: the point at seq, or, once pruning has collapsed versions, the
// oldest kept point after it. A version no point shows (the index is
// damaged: verify says how) is dated zero, the oldest band.
func versionTime(pts []datedPoint, seq uint64) time.Time {
	i := sort.Search(len(pts), func(i int) bool { return pts[i].seq >= seq })
	if i == len(pts) {
		return time.Time{}
	}
	return pts[i].t
}

// ageBand is the index of the band an instant at t falls in, seen from now.
func ageBand(now, t time.Time, bands []time.Duration) int {
	if t.IsZero() {
		return len(bands)
	}
	age := now.Sub(t)
	for i, b := range bands {
		if age <= b {
			return i
		}
	}
	return len(bands)
}

// unreferenced counts the indexed content no version references.
func (u *Usage) unreferenced(ctx context.Context, snap *pebble.Snapshot, content map[Hash]contentRef) error {
	return snapScan(ctx, snap, []byte{kindHash}, func(k, v []byte) error {
		if len(k) != 1+len(Hash{}) {
			return fmt.Errorf("store: content record %x: %w", k, ErrCorrupt)
		}
		if _, ok := content[Hash(k[1:])]; ok {
			return nil
		}
		loc, err := decodeLocation(v)
		if err != nil {
			return fmt.Errorf("store: content %x: %w", k[1:], err)
		}
		u.Unreferenced.Count++
		u.Unreferenced.StoredBytes += int64(loc.n)
		return nil
	})
}

// DirUsage measures the repository in dir as du does (see FileUsage).
// Files that vanish while it walks (views the writer replaces) are skipped.
func DirUsage(dir string) (FileUsage, error) {
	var fu FileUsage
	seen := map[[2]uint64]bool{}
	walk := func(path string, into *int64) error {
		err := filepath.WalkDir(path, func(p string, _ fs.DirEntry, err error) error {
			if err != nil {
				if errors.Is(err, fs.ErrNotExist) {
					return nil
				}
				return err
			}
			var st syscall.Stat_t
			if err := syscall.Lstat(p, &st); err != nil {
				if errors.Is(err, fs.ErrNotExist) {
					return nil
				}
				return &fs.PathError{Op: "lstat", Path: p, Err: err}
			}
			id := [2]uint64{uint64(st.Dev), st.Ino}
			if !seen[id] {
				seen[id] = true
				n := st.Blocks * 512
				*into += n
				fu.Total += n
			}
			return nil
		})
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return err
	}
	if _, err := os.Stat(filepath.Join(dir, markerFile)); err != nil {
		return fu, fmt.Errorf("store: usage of %s: %w", dir, err)
	}
	for _, part := range []struct {
		name string
		into *int64
	}{
		{"segments", &fu.Segments},
		{"db", &fu.Index},
		{recordsFile, &fu.Records},
		{"views", &fu.Views},
		{"", &fu.Other}, // the rest, the directory itself included
	} {
		if err := walk(filepath.Join(dir, part.name), part.into); err != nil {
			return fu, fmt.Errorf("store: usage of %s: %w", dir, err)
		}
	}
	return fu, nil
}
