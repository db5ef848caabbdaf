package store

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"

	"github.com/cockroachdb/pebble/v2"
)

// A captured step is appended to the newest segment as one frame that says
// everything the index holds of it, followed by its new content:
//
//	frame:  magic u32 | length u32 | step | entry × count | content | crc32c u32
//	step:   seq u64 | timeline u32 | time u64 | count u32
//	entry:  disk u32 | block u64 | hash [32] | location
//
// Frames written since reads are checked ("HSF2") carry locations with the
// content's checksum; older ones ("HSF1", locationLenV1) are still replayed.
// The length counts what lies between it and the crc, which covers the
// magic through the content. Entries of new content locate it inside the
// frame; zero blocks and content stored before carry their own location.
//
// The segment is thereby the journal's write-ahead log: Sync (fsync, flush,
// FUA) makes a capture durable with one fdatasync of the segment, and the
// index's batches for captured steps are never synced on their own. On open,
// every step above the last synced position (metaSynced) is dropped from the
// index and rebuilt from the frames that follow the synced log position
// (metaLog), as far as they are whole: a crash loses exactly the steps whose
// frames did not reach the disk, which no Sync had acknowledged.

const (
	frameMagic   = 0x48534632 // "HSF2"
	frameMagicV1 = 0x48534631 // "HSF1"
	frameHead    = 4 + 4
	frameStep    = 8 + 4 + 8 + 4
	frameEntry   = 4 + 8 + 32 + locationLen
	frameEntryV1 = 4 + 8 + 32 + locationLenV1
	frameTail    = 4
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// metaLog is the segment position just past what metaSynced covers: where
// replay starts.
var metaLog = []byte{kindMeta, 'l', 'o', 'g'}

func logPos(seg uint32, off uint64) []byte { return be64(be32(nil, seg), off) }

// frameBlock is one block of a captured step, resolved under the writer.
type frameBlock struct {
	d     *Disk
	block uint64
	hash  Hash
	loc   location
	blob  []byte // new content stored in this frame (loc filled on placement)
	same  int    // >0: the content is blob of block same-1 of this frame
}

// putFrame journals writes (hashed and compressed by prepare) as the step's
// blocks and appends its frame. The step's time must be fixed (when).
func (s *Step) putFrame(writes []BlockWrite, prep []prepared) error {
	r := s.r
	blocks := make([]frameBlock, len(writes))
	var fresh map[Hash]int // new content of this frame, for a write of several blocks
	if len(writes) > 1 {
		fresh = make(map[Hash]int, len(writes))
	}
	blobs := 0
	for i := range writes {
		w := &writes[i]
		if err := s.check(w.Disk, w.Block, nil); err != nil {
			return err
		}
		fb := frameBlock{d: &w.Disk, block: w.Block, hash: prep[i].hash}
		switch {
		case fb.hash == (Hash{}):
			fb.hash, fb.loc = s.zeroHash(w.Disk.BlockSize), location{flags: flagZero}
		case fresh[fb.hash] > 0:
			fb.same = fresh[fb.hash]
		default:
			loc, ok, err := s.stored(fb.hash)
			if err != nil {
				return err
			}
			if ok {
				fb.loc = loc
			} else {
				fb.blob, fb.loc.flags = prep[i].stored, prep[i].flags&flagZstd
				blobs += len(fb.blob)
				if fresh != nil {
					fresh[fb.hash] = i + 1
				}
			}
		}
		blocks[i] = fb
	}
	size := frameHead + frameStep + len(blocks)*frameEntry + blobs + frameTail
	seg, off, err := r.segs.reserve(uint64(size))
	if err != nil {
		return err
	}
	pos := off + uint64(size-blobs-frameTail)
	for i := range blocks {
		if b := &blocks[i]; b.blob != nil {
			b.loc.seg, b.loc.off, b.loc.n = seg, pos, uint32(len(b.blob))
			b.loc.flags |= flagSum
			b.loc.sum = checksum(b.blob)
			pos += uint64(len(b.blob))
		}
	}
	for i := range blocks {
		if b := &blocks[i]; b.same > 0 {
			b.loc = blocks[b.same-1].loc
		}
	}
	head := make([]byte, 0, size-blobs)
	head = be32(head, frameMagic)
	head = be32(head, uint32(size-frameHead-frameTail))
	head = be64(head, s.seq)
	head = be32(head, s.tl)
	head = be64(head, encodeTime(s.at))
	head = be32(head, uint32(len(blocks)))
	for _, b := range blocks {
		head = be32(head, b.d.ID)
		head = be64(head, b.block)
		head = append(head, b.hash[:]...)
		head = b.loc.append(head)
	}
	crc := crc32.Update(0, castagnoli, head)
	if err := r.segs.append(head); err != nil {
		return err
	}
	for _, b := range blocks {
		if b.blob != nil {
			crc = crc32.Update(crc, castagnoli, b.blob)
			if err := r.segs.append(b.blob); err != nil {
				return err
			}
		}
	}
	if err := r.segs.append(be32(nil, crc)); err != nil {
		return err
	}
	for _, b := range blocks {
		if b.blob != nil { // found by stored, for later steps, until Sync indexes it
			r.unsynced[b.hash] = b.loc
		}
		s.index(*b.d, b.block, b.hash, b.loc)
	}
	return nil
}

// stored finds content with hash h already stored: by this step (an
// import's), by a capture not yet synced, or in the index.
func (s *Step) stored(h Hash) (location, bool, error) {
	if loc, ok := s.pending[h]; ok {
		return loc, true, nil
	}
	return s.r.holds(h)
}

// recoverLog makes the index agree with the log after the writer stopped,
// however it stopped: captured steps above the last sync are dropped, then
// rebuilt from the whole frames that follow the synced log position, in
// order with the records of durable batches (records.go) that the index
// lacks (its tail was lost): a frame applies when it is the step after the
// head, a record once the head has reached the one it was committed at.
func (r *Repo) recoverLog() error {
	synced, err := r.getU64(metaSynced)
	if err != nil {
		return err
	}
	v, ok, err := r.get(metaLog)
	if err != nil {
		return err
	}
	start := segPos{1, 0} // a new repository's log starts the first segment
	if ok && len(v) == 12 {
		start = segPos{binary.BigEndian.Uint32(v), binary.BigEndian.Uint64(v[4:])}
	}
	roff, err := r.getU64(metaRecords)
	if err != nil {
		return err
	}
	b := r.db.NewIndexedBatch()
	defer func() { b.Close() }()
	gone, added := map[uint32]uint64{}, map[uint32]uint64{}
	cut := r.head.Load() > synced
	if cut {
		if err := r.cutAt(b, synced+1, gone); err != nil {
			return err
		}
	}
	known, err := knownDisks(b)
	if err != nil {
		return err
	}
	fs := &frameScanner{dir: r.segs.dir, pos: start}
	defer fs.close()
	n, recs := 0, 0
	for {
		if b.Len() > recoverBatchBytes { // a long replay (a rebuilt index): commit as it goes
			if err := r.commitRecovered(b, fs.pos, roff); err != nil {
				return err
			}
			b.Close()
			b = r.db.NewIndexedBatch()
		}
		if frame, end, ok := fs.peek(); ok && r.replayFrame(b, frame, added, known) {
			fs.pos = end
			n++
			continue
		}
		rec, ok := readRecord(r.recs.f, roff)
		if !ok || rec.head > r.head.Load() {
			break
		}
		if err := r.applyRecord(b, rec); err != nil {
			return err
		}
		roff += rec.size
		recs++
		if fs.pos.seg < rec.pos.seg || fs.pos.seg == rec.pos.seg && fs.pos.off < rec.pos.off {
			fs.pos = rec.pos // past raw content the record's batch indexed
		}
		if known, err = knownDisks(b); err != nil {
			return err
		}
	}
	if frame, _, ok := fs.peek(); ok { // whole, and yet not the next step: a gap
		return fmt.Errorf("%w: the log holds the step of position %d at segments/%s offset %d, but the journal's head is %d "+
			"and nothing in between can be found; run 'hindsight verify'", ErrCorrupt, binary.BigEndian.Uint64(frame[frameHead:]),
			segmentName(fs.pos.seg), fs.pos.off, r.head.Load())
	}
	if rec, ok := readRecord(r.recs.f, roff); ok {
		return fmt.Errorf("%w: %s holds a record committed at position %d, past the journal's head %d: "+
			"the segments lack the steps before it; run 'hindsight verify'", ErrCorrupt, recordsFile, rec.head, r.head.Load())
	}
	if roff < r.recs.size { // a torn tail: never acknowledged
		if err := r.recs.f.Truncate(int64(roff)); err != nil {
			return err
		}
		r.recs.size = roff
	}
	end := fs.pos
	if !cut && n == 0 && recs == 0 {
		return nil
	}
	if recs == 0 {
		for id := range known {
			if gone[id] == 0 && added[id] == 0 {
				continue
			}
			total, err := r.getU64(diskVersionsKey(id))
			if err != nil {
				return err
			}
			b.Set(diskVersionsKey(id), be64(nil, total-min(total, gone[id])+added[id]), nil)
		}
	}
	if recs > 0 {
		r.notef("the index was behind its log (its tail was lost): %d durable batches and %d captured steps replayed from %s and the segments; head %d",
			recs, n, recordsFile, r.head.Load())
	} else {
		r.notef("journal recovered: steps above the last sync (position %d) rebuilt from the log: %d replayed, head %d", synced, n, r.head.Load())
	}
	for id := start.seg; id < end.seg; id++ { // segments the frames filled
		if fi, err := os.Stat(filepath.Join(r.segs.dir, segmentName(id))); err == nil {
			b.Set(segmentKey(id), be64(nil, uint64(fi.Size())), nil)
		}
	}
	if err := r.commitRecovered(b, end, roff); err != nil {
		return err
	}
	if recs > 0 { // records carry counts as of their time: count anew
		return r.recount()
	}
	return nil
}

// recoverBatchBytes bounds the batch a replay builds before committing it.
const recoverBatchBytes = 64 << 20

// commitRecovered commits what b replayed, with where the replay stands:
// an open that stops after it goes on from there.
func (r *Repo) commitRecovered(b *pebble.Batch, end segPos, roff uint64) error {
	b.Set(segmentKey(end.seg), be64(nil, end.off), nil)
	b.Set(metaHead, be64(nil, r.head.Load()), nil)
	b.Set(metaSynced, be64(nil, r.head.Load()), nil)
	b.Set(metaLog, logPos(end.seg, end.off), nil)
	b.Set(metaRecords, be64(nil, roff), nil)
	return b.Commit(pebble.Sync)
}

// applyRecord adds the operations of rec to b and takes the head it sets.
func (r *Repo) applyRecord(b *pebble.Batch, rec record) error {
	rb := r.db.NewBatch()
	defer rb.Close()
	if err := rb.SetRepr(rec.batch); err != nil {
		return fmt.Errorf("%w: a record of %s does not decode: %v", ErrCorrupt, recordsFile, err)
	}
	if err := b.Apply(rb, nil); err != nil {
		return err
	}
	v, closer, err := b.Get(metaHead)
	if err == nil {
		if len(v) == 8 && binary.BigEndian.Uint64(v) > r.head.Load() {
			r.head.Store(binary.BigEndian.Uint64(v))
		}
		closer.Close()
	} else if !errors.Is(err, pebble.ErrNotFound) {
		return err
	}
	return nil
}

// knownDisks are the ids of the disks b (over the index) holds.
func knownDisks(b *pebble.Batch) (map[uint32]bool, error) {
	it, err := b.NewIter(&pebble.IterOptions{LowerBound: []byte{kindDisk}, UpperBound: []byte{kindDisk + 1}})
	if err != nil {
		return nil, err
	}
	known := map[uint32]bool{}
	for it.First(); it.Valid(); it.Next() {
		var d Disk
		if json.Unmarshal(it.Value(), &d) == nil {
			known[d.ID] = true
		}
	}
	return known, errors.Join(it.Error(), it.Close())
}

// recount sets every disk's count of non-zero versions from the index.
func (r *Repo) recount() error {
	counts := map[uint32]uint64{}
	err := r.scan([]byte{kindVersion}, func(k, v []byte) error {
		if disk, _, _, ok := versionBlock(k); ok && versionValueOK(v) && v[len(Hash{})]&flagZero == 0 {
			counts[disk]++
		}
		return nil
	})
	if err != nil {
		return err
	}
	disks, err := r.Disks()
	if err != nil {
		return err
	}
	b := r.db.NewBatch()
	defer b.Close()
	for _, d := range disks {
		b.Set(diskVersionsKey(d.ID), be64(nil, counts[d.ID]), nil)
	}
	return b.Commit(pebble.Sync)
}

type segPos struct {
	seg uint32
	off uint64
}

// frameScanner reads the log's frames from pos on. A frame that did not fit
// in a segment starts the next one.
type frameScanner struct {
	dir  string
	pos  segPos
	f    *os.File
	fseg uint32
}

// peek returns the whole frame at pos and where it ends; false if there is
// none (the end of the log, a torn write, or bytes that are no frame).
func (s *frameScanner) peek() ([]byte, segPos, bool) {
	for _, at := range []segPos{s.pos, {s.pos.seg + 1, 0}} {
		f, err := s.open(at.seg)
		if err != nil {
			continue
		}
		if frame, ok := readFrame(f, at.off); ok {
			return frame, segPos{at.seg, at.off + uint64(len(frame))}, true
		}
	}
	return nil, s.pos, false
}

func (s *frameScanner) open(seg uint32) (*os.File, error) {
	if s.f != nil && s.fseg == seg {
		return s.f, nil
	}
	f, err := os.Open(filepath.Join(s.dir, segmentName(seg)))
	if err != nil {
		return nil, err
	}
	s.close()
	s.f, s.fseg = f, seg
	return f, nil
}

func (s *frameScanner) close() {
	if s.f != nil {
		s.f.Close()
		s.f = nil
	}
}

// readFrame reads the whole frame at off of f; false if there is none (the
// end of the log, a torn write, or bytes that are no frame).
func readFrame(f io.ReaderAt, off uint64) ([]byte, bool) {
	var h [frameHead]byte
	if _, err := f.ReadAt(h[:], int64(off)); err != nil {
		return nil, false
	}
	if m := binary.BigEndian.Uint32(h[:]); m != frameMagic && m != frameMagicV1 {
		return nil, false
	}
	n := binary.BigEndian.Uint32(h[4:])
	if n < frameStep || n > maxSegment {
		return nil, false
	}
	// The frame's last byte must exist before its length is trusted with
	// an allocation: a damaged length would otherwise cost up to 1 GiB.
	var last [1]byte
	if _, err := f.ReadAt(last[:], int64(off)+frameHead+int64(n)+frameTail-1); err != nil {
		return nil, false
	}
	frame := make([]byte, frameHead+int(n)+frameTail)
	if _, err := f.ReadAt(frame, int64(off)); err != nil {
		return nil, false
	}
	body := frame[:len(frame)-frameTail]
	if crc32.Checksum(body, castagnoli) != binary.BigEndian.Uint32(frame[len(body):]) {
		return nil, false
	}
	return frame, true
}

// replayFrame adds the step of frame to b if it is the step after the head
// and names only disks that exist.
func (r *Repo) replayFrame(b *pebble.Batch, frame []byte, added map[uint32]uint64, known map[uint32]bool) bool {
	entry := frameEntry
	if binary.BigEndian.Uint32(frame) == frameMagicV1 {
		entry = frameEntryV1
	}
	p := frame[frameHead : len(frame)-frameTail]
	seq, tl := binary.BigEndian.Uint64(p), binary.BigEndian.Uint32(p[8:])
	at, count := decodeTime(binary.BigEndian.Uint64(p[12:])), binary.BigEndian.Uint32(p[20:])
	p = p[frameStep:]
	if seq != r.head.Load()+1 || uint64(count)*uint64(entry) > uint64(len(p)) {
		return false
	}
	for i := range int(count) {
		e := p[i*entry : (i+1)*entry]
		if !known[binary.BigEndian.Uint32(e)] {
			r.logf("log frame of position %d names an unknown disk: replay ends there", seq)
			return false
		}
		if _, err := decodeLocation(e[12+len(Hash{}):]); err != nil {
			r.logf("log frame of position %d holds a bad location: replay ends there", seq)
			return false
		}
	}
	for range count {
		disk, block := binary.BigEndian.Uint32(p), binary.BigEndian.Uint64(p[4:])
		v := p[12:entry] // hash | location
		b.Set(versionKey(disk, block, seq), v, nil)
		b.Set(journalKey(seq, disk, block), nil, nil)
		if v[len(Hash{})]&flagZero == 0 {
			added[disk]++
			b.Set(refKey(Hash(v[:len(Hash{})]), disk, block, seq), nil, nil)
			r.indexHash(b, Hash(v[:len(Hash{})]), v[len(Hash{}):])
		}
		p = p[entry:]
	}
	b.Set(pointKey(tl, at), be64(be64(nil, seq), uint64(count)), nil)
	r.head.Store(seq)
	return true
}
