package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// VerifyOptions choose what Verify checks.
type VerifyOptions struct {
	// Full re-reads every stored block and checks it against its checksum
	// and BLAKE3 hash; without it only the structure is checked.
	Full bool
	// Disks limits the problems reported to these disks (nil: all); the
	// structure is always checked whole.
	Disks []Disk
	// Progress is told the stored bytes checked so far and the total (Full).
	Progress func(done, total int64)
}

// VerifyReport is what Verify found.
type VerifyReport struct {
	Head         uint64    `json:"head"`
	Segments     int       `json:"segments"`
	Versions     uint64    `json:"versions"`
	Points       uint64    `json:"points"`
	ContentBytes int64     `json:"content_bytes_checked"` // Full: stored bytes re-read and re-hashed
	Problems     []Problem `json:"problems"`
}

// Problem is one thing wrong, with what it affects: the block ranges of a
// disk, the journal positions whose instants show a damaged version
// (FromSeq to ToSeq; ToSeq 0: up to the head) and their times.
type Problem struct {
	Kind    string     `json:"kind"` // "segment", "content", "index"
	Detail  string     `json:"detail"`
	Segment string     `json:"segment,omitempty"`
	Disk    string     `json:"disk,omitempty"`
	Blocks  []Range    `json:"blocks,omitempty"`
	FromSeq uint64     `json:"from_seq,omitempty"`
	ToSeq   uint64     `json:"to_seq,omitempty"`
	From    *time.Time `json:"from,omitempty"`
	Until   *time.Time `json:"until,omitempty"` // exclusive; nil: to the newest instant
}

// Range is blocks First through Last.
type Range struct {
	First uint64 `json:"first"`
	Last  uint64 `json:"last"`
}

// Verify checks the repository: every segment the index references is
// there and long enough; every block version's content lies inside one;
// the by-block ('v') and by-time ('j') orders of the index hold the same
// versions; each timeline's points are in time and position order; with
// Full, every stored block is re-read and re-hashed. It reads a published
// view as readers do, so it runs beside a writer.
func (r *Repo) Verify(ctx context.Context, opt VerifyOptions) (*VerifyReport, error) {
	v := &verifier{r: r, opt: opt, rep: &VerifyReport{Head: r.Head(), Problems: []Problem{}},
		lens: map[uint32]uint64{}, badSeg: map[uint32]string{}, badLoc: map[segPos]string{}, affected: map[string]*affected{}}
	if err := v.segments(); err != nil {
		return nil, err
	}
	// The view's own tables passed pebble's check when it opened; it links
	// older ones, so the writer's are checked too.
	if r.readOnly {
		bad, _, err := CheckWriterIndex(r.dir)
		if err != nil {
			return nil, err
		}
		for _, b := range bad {
			v.problem(Problem{Kind: "index", Detail: b})
		}
	}
	if opt.Full {
		// The content is re-hashed while the index is walked (both take
		// long); what the damaged content affects is found by a second
		// walk, only when there is damage.
		var cerr error
		var cprobs []Problem
		bad := map[segPos]string{}
		done := make(chan struct{})
		go func() {
			defer close(done)
			cprobs, cerr = v.content(ctx, bad)
		}()
		verr := v.versions(ctx, false)
		<-done
		if err := errors.Join(verr, cerr); err != nil {
			return nil, err
		}
		v.rep.Problems = append(v.rep.Problems, cprobs...)
		if v.badLoc = bad; len(bad) > 0 {
			if err := v.versions(ctx, true); err != nil {
				return nil, err
			}
		}
	} else if err := v.versions(ctx, false); err != nil {
		return nil, err
	}
	if err := v.points(); err != nil {
		return nil, err
	}
	keys := make([]string, 0, len(v.affected))
	for k := range v.affected {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		v.rep.Problems = append(v.rep.Problems, v.times(v.affected[k]))
	}
	return v.rep, nil
}

type verifier struct {
	r      *Repo
	opt    VerifyOptions
	rep    *VerifyReport
	lens   map[uint32]uint64 // readable length of each referenced segment
	badSeg map[uint32]string // segment → what is wrong with it
	badLoc map[segPos]string // content → what is wrong with it (Full)
	// affected gathers, per cause and disk, what a damaged version affects.
	affected map[string]*affected
}

func (v *verifier) problem(p Problem) { v.rep.Problems = append(v.rep.Problems, p) }

// segments checks each segment against its committed length.
func (v *verifier) segments() error {
	return v.r.scan([]byte{kindSegment}, func(k, val []byte) error {
		if len(k) != 5 || len(val) != 8 {
			v.problem(Problem{Kind: "index", Detail: fmt.Sprintf("segment record %x holds %d bytes", k, len(val))})
			return nil
		}
		id, n := binary.BigEndian.Uint32(k[1:]), binary.BigEndian.Uint64(val)
		v.rep.Segments++
		name := "segments/" + segmentName(id)
		fi, err := os.Stat(filepath.Join(v.r.dir, name))
		switch {
		case errors.Is(err, fs.ErrNotExist):
			if n > 0 {
				v.badSeg[id] = fmt.Sprintf("%s is missing (%d bytes committed)", name, n)
			}
		case err != nil:
			return err
		case uint64(fi.Size()) < n:
			v.badSeg[id] = fmt.Sprintf("%s holds %d bytes, less than the %d committed", name, fi.Size(), n)
			v.lens[id] = uint64(fi.Size())
		default:
			v.lens[id] = uint64(fi.Size()) // the newest may hold more: steps published, not yet synced
		}
		if msg, ok := v.badSeg[id]; ok {
			v.problem(Problem{Kind: "segment", Segment: name, Detail: msg})
		}
		return nil
	})
}

// where says what is wrong with content at loc: the cause (a segment, or
// one piece of content in it), and what is wrong; "" if nothing is known.
func (v *verifier) where(loc location, contentOnly bool) (cause, detail string) {
	name := "segments/" + segmentName(loc.seg)
	n, ok := v.lens[loc.seg]
	switch {
	case contentOnly:
	case v.badSeg[loc.seg] != "" && (!ok || loc.off+uint64(loc.n) > n):
		return name, v.badSeg[loc.seg]
	case !ok:
		return name, fmt.Sprintf("content at %s offset %d: the index records no such segment", name, loc.off)
	case loc.off+uint64(loc.n) > n:
		return name, fmt.Sprintf("content at %s offset %d (%d bytes) lies past its end (%d bytes)", name, loc.off, loc.n, n)
	}
	if msg := v.badLoc[segPos{loc.seg, loc.off}]; msg != "" {
		return fmt.Sprintf("%s@%d", name, loc.off), fmt.Sprintf("content at %s offset %d: %s", name, loc.off, msg)
	}
	return "", ""
}

// versions walks the by-block order, finding the versions whose content is
// damaged, and checks it against the by-time order.
// With contentOnly it only maps the damaged content found by content
// (badLoc) to what it affects.
func (v *verifier) versions(ctx context.Context, contentOnly bool) error {
	disks, err := v.r.Disks()
	if err != nil {
		return err
	}
	byID := map[uint32]Disk{}
	for _, d := range disks {
		byID[d.ID] = d
	}
	report := map[uint32]bool{}
	for _, d := range v.opt.Disks {
		report[d.ID] = true
	}
	var sumV, sumJ, sumR uint64
	var nJ, nR uint64
	it, err := v.r.db.NewIter(&pebble.IterOptions{LowerBound: []byte{kindVersion}, UpperBound: []byte{kindVersion + 1}})
	if err != nil {
		return err
	}
	var prevDisk uint32
	var prevBlock, newer uint64 // newer: the seq of the next newer version of the same block (0: none)
	first := true
	for it.First(); it.Valid(); it.Next() {
		if v.rep.Versions%65536 == 0 && ctx.Err() != nil {
			it.Close()
			return ctx.Err()
		}
		disk, block, seq, ok := versionBlock(it.Key())
		val := it.Value()
		if contentOnly {
			if first || disk != prevDisk || block != prevBlock {
				newer = 0
			}
			if d, known := byID[disk]; ok && known && versionValueOK(val) {
				if loc, err := decodeLocation(val[len(Hash{}):]); err == nil && loc.flags&flagZero == 0 {
					if v.r.isRetired(loc.seg) {
						if moved, ok, _ := v.r.relocated(Hash(val[:len(Hash{})])); ok {
							loc = moved
						}
					}
					if cause, detail := v.where(loc, true); cause != "" && (len(report) == 0 || report[disk]) {
						v.affect(cause, detail, loc.seg, d, block, seq, newer)
					}
				}
			}
			prevDisk, prevBlock, newer, first = disk, block, seq, false
			continue
		}
		if !ok || !versionValueOK(val) {
			v.problem(Problem{Kind: "index", Detail: fmt.Sprintf("version record %x of %d bytes is malformed", it.Key(), len(val))})
			continue
		}
		if first || disk != prevDisk || block != prevBlock {
			newer = 0
		}
		v.rep.Versions++
		sumV += mixVersion(disk, block, seq)
		loc, err := decodeLocation(val[len(Hash{}):])
		d, known := byID[disk]
		switch {
		case err != nil:
			v.problem(Problem{Kind: "index", Detail: fmt.Sprintf("version of block %d of disk %d at %d: %v", block, disk, seq, err)})
		case !known:
			v.problem(Problem{Kind: "index", Detail: fmt.Sprintf("version of block %d at %d names disk %d, which does not exist", block, seq, disk)})
		case seq > v.rep.Head:
			v.problem(Problem{Kind: "index", Detail: fmt.Sprintf("version of block %d of disk %q at %d is past the head %d", block, d.Name, seq, v.rep.Head)})
		case loc.flags&flagZero == 0:
			h := Hash(val[:len(Hash{})])
			nR++
			sumR += mixRef(h, disk, block, seq)
			if v.r.isRetired(loc.seg) { // moved by gc: where the content index says
				moved, ok, err := v.r.relocated(h)
				if err != nil {
					it.Close()
					return err
				}
				if !ok {
					v.problem(Problem{Kind: "index", Disk: d.Name, Blocks: []Range{{block, block}}, FromSeq: seq,
						Detail: fmt.Sprintf("version of block %d at %d names content %x that garbage collection moved, and the content index lacks it", block, seq, h[:8])})
					break
				}
				loc = moved
			}
			if cause, detail := v.where(loc, contentOnly); cause != "" && (len(report) == 0 || report[disk]) {
				v.affect(cause, detail, loc.seg, d, block, seq, newer)
			}
		}
		prevDisk, prevBlock, newer, first = disk, block, seq, false
	}
	if err := errors.Join(it.Error(), it.Close()); err != nil || contentOnly {
		return err
	}
	err = v.r.scan([]byte{kindJournal}, func(k, _ []byte) error {
		if len(k) != 21 {
			v.problem(Problem{Kind: "index", Detail: fmt.Sprintf("journal record %x is malformed", k)})
			return nil
		}
		nJ++
		sumJ += mixVersion(binary.BigEndian.Uint32(k[9:]), binary.BigEndian.Uint64(k[13:]), binary.BigEndian.Uint64(k[1:]))
		return nil
	})
	if err != nil {
		return err
	}
	if nJ != v.rep.Versions || sumJ != sumV {
		v.problem(Problem{Kind: "index", Detail: fmt.Sprintf("the by-block and by-time orders disagree: %d block versions, %d journal entries (or the same count of different versions)", v.rep.Versions, nJ)})
	}
	return v.references(nR, sumR)
}

// mixRef is an order-independent summand of one version's reference.
func mixRef(h Hash, disk uint32, block, seq uint64) uint64 {
	return mix64(mixVersion(disk, block, seq) ^ binary.BigEndian.Uint64(h[:]))
}

// references checks what garbage collection relies on: each non-zero
// version (n of them, summing to sum) has its reference key and no other
// reference exists; every referenced content is in the content index; and
// the content index and its by-location keys agree. An index from before
// these keys (no metaRefs) is not checked: its writer builds them.
func (v *verifier) references(n, sum uint64) error {
	if _, ok, err := v.r.get(metaRefs); err != nil || !ok {
		return err
	}
	var nR, sumR uint64
	hit, err := v.r.db.NewIter(&pebble.IterOptions{LowerBound: []byte{kindHash}, UpperBound: []byte{kindHash + 1}})
	if err != nil {
		return err
	}
	defer hit.Close()
	var last Hash
	missing := 0
	err = v.r.scan([]byte{kindRef}, func(k, _ []byte) error {
		if len(k) != 1+len(Hash{})+20 {
			v.problem(Problem{Kind: "index", Detail: fmt.Sprintf("reference record %x is malformed", k)})
			return nil
		}
		h := Hash(k[1 : 1+len(Hash{})])
		nR++
		sumR += mixRef(h, binary.BigEndian.Uint32(k[33:]), binary.BigEndian.Uint64(k[37:]), binary.BigEndian.Uint64(k[45:]))
		if nR > 1 && h == last {
			return nil
		}
		last = h
		if !hit.SeekGE(hashKey(h)) || !bytes.Equal(hit.Key()[1:], h[:]) {
			if missing++; missing <= 10 {
				v.problem(Problem{Kind: "index", Detail: fmt.Sprintf("content %x is referenced by block %d of disk %d at %d, and the content index lacks it",
					h[:8], binary.BigEndian.Uint64(k[37:]), binary.BigEndian.Uint32(k[33:]), binary.BigEndian.Uint64(k[45:]))})
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	if missing > 10 {
		v.problem(Problem{Kind: "index", Detail: fmt.Sprintf("%d more referenced contents are missing from the content index", missing-10)})
	}
	if nR != n || sumR != sum {
		v.problem(Problem{Kind: "index", Detail: fmt.Sprintf("block versions and their references disagree: %d non-zero versions, %d references (or the same count of different ones)", n, nR)})
	}
	var nH, sumH, nC, sumC uint64
	if err := v.r.scan([]byte{kindHash}, func(k, val []byte) error {
		if loc, err := decodeLocation(val); err == nil && len(k) == 1+len(Hash{}) {
			nH++
			sumH += mix64(mix64(uint64(loc.seg)^loc.off) ^ binary.BigEndian.Uint64(k[1:]))
		}
		return nil
	}); err != nil {
		return err
	}
	if err := v.r.scan([]byte{kindContentAt}, func(k, val []byte) error {
		if len(k) == 13 && len(val) == contentAtLen {
			nC++
			sumC += mix64(mix64(uint64(binary.BigEndian.Uint32(k[1:]))^binary.BigEndian.Uint64(k[5:])) ^ binary.BigEndian.Uint64(val))
		}
		return nil
	}); err != nil {
		return err
	}
	if nH != nC || sumH != sumC {
		v.problem(Problem{Kind: "index", Detail: fmt.Sprintf("the content index and its locations disagree: %d contents, %d locations", nH, nC)})
	}
	return nil
}

// mixVersion is an order-independent summand of one version (splitmix64).
func mixVersion(disk uint32, block, seq uint64) uint64 {
	return mix64(mix64(mix64(uint64(disk))^block) ^ seq)
}

func mix64(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ x>>30) * 0xbf58476d1ce4e5b9
	x = (x ^ x>>27) * 0x94d049bb133111eb
	return x ^ x>>31
}

// affect adds the damaged version (block of d written at seq, replaced at
// newer or never) to the problem of its cause in segment seg.
func (v *verifier) affect(cause, detail string, seg uint32, d Disk, block, seq, newer uint64) {
	key := cause + "\x00" + d.Name
	a := v.affected[key]
	if a == nil {
		a = &affected{Problem: Problem{Kind: "content", Detail: detail, Segment: "segments/" + segmentName(seg), Disk: d.Name, FromSeq: seq, ToSeq: max(newer, 1) - 1}, tl: d.Timeline}
		v.affected[key] = a
	}
	p := &a.Problem
	p.FromSeq = min(p.FromSeq, seq)
	if newer == 0 || p.ToSeq == 0 {
		p.ToSeq = 0
	} else {
		p.ToSeq = max(p.ToSeq, newer-1)
	}
	if n := len(p.Blocks); n > 0 && p.Blocks[n-1].Last+1 == block {
		p.Blocks[n-1].Last = block
	} else if n == 0 || p.Blocks[n-1].Last != block {
		p.Blocks = append(p.Blocks, Range{block, block})
	}
}

// affected is a Problem being gathered, with the timeline of its disk.
type affected struct {
	Problem
	tl uint32
}

// times fills in the instants a damaged version shows in: from its point
// to the point that replaced it.
func (v *verifier) times(a *affected) Problem {
	p := a.Problem
	if pt, err := v.r.PointOf(a.tl, p.FromSeq); err == nil {
		p.From = &pt.Time
	}
	if p.ToSeq != 0 {
		if pt, err := v.r.PointOf(a.tl, p.ToSeq+1); err == nil {
			p.Until = &pt.Time
		}
	}
	return p
}

// points checks that each timeline's points are in position order when in
// time order, and none is past the head.
func (v *verifier) points() error {
	var tl uint32
	var last uint64
	return v.r.scan([]byte{kindPoint}, func(k, val []byte) error {
		p, err := decodePoint(k, val)
		if err != nil {
			v.problem(Problem{Kind: "index", Detail: err.Error()})
			return nil
		}
		v.rep.Points++
		if t := binary.BigEndian.Uint32(k[1:]); t != tl || v.rep.Points == 1 {
			tl, last = t, 0
		}
		if p.Seq <= last || p.Seq > v.rep.Head {
			v.problem(Problem{Kind: "index", Detail: fmt.Sprintf("point of timeline %d at %s has position %d: out of order (after %d) or past the head %d",
				tl, p.Time.Format(time.RFC3339Nano), p.Seq, last, v.rep.Head)})
		}
		last = p.Seq
		return nil
	})
}
