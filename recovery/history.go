package recovery

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"time"

	"github.com/hindsight-cdp/hindsight/fs/partition"
	"github.com/hindsight-cdp/hindsight/recovery/ext4"
	"github.com/hindsight-cdp/hindsight/store"
	"github.com/zeebo/blake3"
)

// Journal is what History reads: images at positions, and the positions at
// which given blocks changed. *store.Repo satisfies it.
type Journal interface {
	Image(d store.Disk, pos uint64) (*store.Image, error)
	BlockVersions(d store.Disk, blocks []uint64, after, upto uint64) ([]uint64, error)
	PointOf(tl uint32, seq uint64) (store.Point, error)
}

var _ Journal = (*store.Repo)(nil)

// History methods.
const (
	// MethodJournal: candidates from the block journal (ext2/3/4).
	MethodJournal = "block-journal"
	// MethodSampled: the file read at sampled instants, each mounted; changes
	// between two samples are not seen.
	MethodSampled = "sampled"
)

// Version changes.
const (
	First    = "first" // the file as it was at the start of the range
	Created  = "created"
	Modified = "changed"
	Deleted  = "deleted"
)

// Version is the file at one instant where its content changed.
type Version struct {
	Time   time.Time `json:"time"`
	Seq    uint64    `json:"seq"`
	Change string    `json:"change"`
	Exists bool      `json:"exists"`
	Size   int64     `json:"size"`
	BLAKE3 string    `json:"blake3,omitempty"`
}

// HistoryResult is a file's history over a range of points.
type HistoryResult struct {
	Path      string    `json:"path"`
	Partition string    `json:"partition,omitempty"`
	Method    string    `json:"method"`
	Note      string    `json:"note,omitempty"`
	Examined  int       `json:"instants_examined"`
	Versions  []Version `json:"versions"`
}

// maxHistoryFile bounds what History hashes per instant.
const maxHistoryFile = 4 << 30

// ErrNotExt: History by the block journal needs ext2/3/4.
var ErrNotExt = errors.New("recovery: history from the block journal needs ext2/3/4")

// History lists the points in [from, to] at which the content of the file
// at image path p of disk d changed, read from the block journal: the file's
// blocks (and its inode's, and its directories') are found at from, only
// their versions up to `to` are read, the file is resolved again at each
// and its BLAKE3 compared, and its block set followed as it moves. The first
// Version is the file at from. A file on a filesystem other than ext2/3/4 is
// ErrNotExt (see HistorySampled).
func History(ctx context.Context, j Journal, d store.Disk, p string, from, to store.Point) (HistoryResult, error) {
	res := HistoryResult{Path: p, Method: MethodJournal}
	img, err := j.Image(d, to.Seq)
	if err != nil {
		return res, err
	}
	part, rel, err := extLayout(img, d.Size, p)
	if err != nil {
		return res, err
	}
	res.Partition = part.Name
	h := &historian{j: j, d: d, part: part.Partition, rel: rel}
	cur, err := h.at(from.Seq)
	if err != nil {
		return res, err
	}
	res.Examined = 1
	res.Versions = append(res.Versions, cur.version(from, First))
	pos := from.Seq
	for pos < to.Seq {
		seqs, err := j.BlockVersions(d, cur.blocks, pos, to.Seq)
		if err != nil {
			return res, err
		}
		if len(seqs) == 0 {
			break
		}
		moved := false
		for _, s := range seqs {
			if err := ctx.Err(); err != nil {
				return res, err
			}
			next, err := h.at(s)
			if err != nil {
				return res, err
			}
			res.Examined++
			if change := next.changeFrom(cur); change != "" {
				pt, err := j.PointOf(d.Timeline, s)
				if err != nil {
					return res, fmt.Errorf("history: time of position %d: %w", s, err)
				}
				res.Versions = append(res.Versions, next.version(pt, change))
			}
			moved = !slices.Equal(next.blocks, cur.blocks)
			cur, pos = next, s
			if moved { // ask again for the new block set from here
				break
			}
		}
		if !moved {
			break
		}
	}
	return res, nil
}

// extLayout reads the partition table of img and the fstab of its ext
// filesystems, and locates p.
func extLayout(img io.ReaderAt, size int64, p string) (*Part, string, error) {
	tbl, err := partition.Read(img, size)
	if err != nil {
		return nil, "", err
	}
	var parts []*Part
	for _, tp := range tbl.Partitions {
		// Every filesystem takes part in the layout; only ext ones are read.
		parts = append(parts, &Part{Partition: tp, Name: partName(tp), ready: tp.FS.Mountable()})
	}
	assignMountpoints(parts, func(q *Part) []byte {
		if !isExt(q.FS.Type) {
			return nil
		}
		f, err := ext4.Open(io.NewSectionReader(img, q.Offset, q.Size))
		if err != nil {
			return nil
		}
		r, err := f.Resolve("/etc/fstab")
		if err != nil || r.Inode == nil || !r.Inode.IsRegular() {
			return nil
		}
		b, _ := f.ReadFile(r.Inode, 1<<20)
		return b
	})
	part, rel, err := locate(parts, p)
	if err != nil {
		return nil, "", err
	}
	if !isExt(part.FS.Type) {
		return part, rel, fmt.Errorf("%w: %s is %s", ErrNotExt, part.Name, part.FS.Type)
	}
	return part, rel, nil
}

func isExt(t string) bool { return t == "ext2" || t == "ext3" || t == "ext4" }

// historian resolves the file at journal positions.
type historian struct {
	j    Journal
	d    store.Disk
	part partition.Partition
	rel  string
}

// state is the file at one position.
type state struct {
	exists bool
	size   int64
	sum    [32]byte
	blocks []uint64 // disk blocks to watch, sorted
}

func (s state) changeFrom(prev state) string {
	switch {
	case s.exists && !prev.exists:
		return Created
	case !s.exists && prev.exists:
		return Deleted
	case s.exists && (s.size != prev.size || s.sum != prev.sum):
		return Modified
	}
	return ""
}

func (s state) version(p store.Point, change string) Version {
	v := Version{Time: p.Time, Seq: p.Seq, Change: change, Exists: s.exists, Size: s.size}
	if s.exists {
		v.BLAKE3 = hex.EncodeToString(s.sum[:])
	}
	return v
}

func (h *historian) at(seq uint64) (state, error) {
	img, err := h.j.Image(h.d, seq)
	if err != nil {
		return state{}, err
	}
	f, err := ext4.Open(io.NewSectionReader(img, h.part.Offset, h.part.Size))
	if err != nil {
		if errors.Is(err, ext4.ErrNotExt4) { // no filesystem there at that instant
			return state{}, nil
		}
		return state{}, err
	}
	r, err := f.Resolve(h.rel)
	if err != nil {
		return state{}, fmt.Errorf("history of %s at position %d: %w", h.rel, seq, err)
	}
	st := state{blocks: h.diskBlocks(f.BlockSize, r.Watch)}
	if r.Inode == nil || r.Inode.IsDir() {
		return st, nil
	}
	content, err := f.ReadFile(r.Inode, maxHistoryFile)
	if err != nil {
		return state{}, fmt.Errorf("history of %s at position %d: %w", h.rel, seq, err)
	}
	st.exists, st.size, st.sum = true, int64(len(content)), blake3.Sum256(content)
	return st, nil
}

// diskBlocks turns filesystem blocks of the partition into journal blocks.
func (h *historian) diskBlocks(fsBlock int64, fsBlocks []uint64) []uint64 {
	bs := int64(h.d.BlockSize)
	out := make([]uint64, 0, len(fsBlocks))
	for _, b := range fsBlocks {
		start := h.part.Offset + int64(b)*fsBlock
		for x := start / bs; x <= (start+fsBlock-1)/bs; x++ {
			if x < int64(h.d.Blocks()) {
				out = append(out, uint64(x))
			}
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// HistorySampled is History for filesystems the ext reader cannot read:
// the file is hashed at each of the points given (bookmarks and sampled
// points), each mounted with open, and changes between samples are
// invisible.
func HistorySampled(ctx context.Context, p string, points []store.Point, open func(store.Point) (*Instant, error)) (HistoryResult, error) {
	res := HistoryResult{Path: p, Method: MethodSampled,
		Note: fmt.Sprintf("no block-level history for this filesystem: the file was read at %d sampled instants (bookmarks and points); changes between them are not seen", len(points))}
	var prev state
	for i, pt := range points {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		in, err := open(pt)
		if err != nil {
			return res, err
		}
		st, part, err := sampleFile(in, p)
		if cerr := in.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return res, err
		}
		res.Partition = part
		res.Examined++
		switch change := st.changeFrom(prev); {
		case i == 0:
			res.Versions = append(res.Versions, st.version(pt, First))
		case change != "":
			res.Versions = append(res.Versions, st.version(pt, change))
		}
		prev = st
	}
	return res, nil
}

func sampleFile(in *Instant, p string) (state, string, error) {
	part, rel, err := in.Locate(p)
	if err != nil {
		return state{}, "", err
	}
	real, err := resolveIn(part.Dir, rel)
	if errors.Is(err, os.ErrNotExist) {
		return state{}, part.Name, nil
	}
	if err != nil {
		return state{}, part.Name, err
	}
	st, err := os.Lstat(real)
	if err != nil || !st.Mode().IsRegular() {
		return state{}, part.Name, err
	}
	sum, err := hashFile(real)
	return state{exists: true, size: st.Size(), sum: sum}, part.Name, err
}
