package store

import (
	"errors"
	"fmt"
	"math/bits"
	"runtime"
	"slices"
	"sync"
	"time"
)

// Captured writes are acknowledged once they are queued, not once they are
// journaled: CaptureAsync copies the write, gives it its place in the
// journal order and its time, and makes it visible to ReadNewest at once;
// the capture goroutine then hashes, compresses and commits queued writes in
// order, each as a step of its own, on the other cores. A front end's write
// therefore costs a copy, and the journal's work overlaps the next write.
// When writes queue up faster than they are journaled (large sequential
// writes), a second goroutine hashes and compresses ahead (prepareLoop)
// while the committer (captureLoop) commits in order, so that the next
// group's hashing overlaps this group's commit. Small writes that find the
// committer idle are prepared by the committer itself: handing each one to
// another goroutine cost more on 2 cores than it saved.
//
// Everything that must come after the writes acknowledged before it waits
// for the queue to drain first: Sync (so fsync covers them), Publish, Mark,
// and every step or metadata change (acquire). The queue holds at most
// queueBytes of data; a writer that finds it full waits.

// queueBytes bounds the data of queued, uncommitted writes.
const queueBytes = 64 << 20

// queue is the repository's capture queue.
type queue struct {
	mu      sync.Mutex
	work    *sync.Cond // the preparer waits for a backlog
	ready   *sync.Cond // the committer waits for entries, or for their preparation
	room    *sync.Cond // drainers and producers wait for progress
	entries []*entry   // FIFO, each removed once committed
	bytes   int
	overlay map[blockKey]pendingBlock // newest queued content of each block
	times   map[uint32]time.Time      // newest time handed out per timeline
	enq     uint64                    // entries ever queued
	claimed uint64                    // entries ever taken to be prepared: entries[:claimed-done]
	backlog int                       // bytes of the entries not claimed yet
	done    uint64                    // entries committed (or dropped after an error)
	err     error                     // the first commit error, for good
	closed  bool
	exited  sync.WaitGroup        // the two goroutines
	bufs    [bufClasses]sync.Pool // *[]byte of cap 4 KiB << class, for entries' data
}

// Entries' data comes from pools of 4 KiB to 8 MiB buffers and goes back
// once committed: a copy per write is needed (the caller's buffer is
// reused), a fresh zeroed allocation for each is not.
const (
	bufMin     = 12 // 4 KiB
	bufClasses = 12 // up to 8 MiB
)

// getBuf returns a buffer of n bytes.
func (q *queue) getBuf(n int) []byte {
	c := max(bits.Len(uint(n-1)), bufMin) - bufMin
	if n == 0 || c >= bufClasses {
		return make([]byte, n)
	}
	if b, ok := q.bufs[c].Get().(*[]byte); ok {
		return (*b)[:n]
	}
	return make([]byte, n, 1<<(c+bufMin))
}

// putBuf takes back a buffer of getBuf.
func (q *queue) putBuf(b []byte) {
	c := bits.Len(uint(cap(b))) - 1 - bufMin
	if c >= 0 && c < bufClasses && cap(b) == 1<<(c+bufMin) {
		q.bufs[c].Put(&b)
	}
}

type entry struct {
	tl     uint32
	at     time.Time
	writes []BlockWrite // Data nil: a zero block
	size   int
	buf    []byte     // the writes' data
	prep   []prepared // the writes' hashes and stored forms, once prepared
	ready  bool       // prep is set (under queue.mu)
}

type blockKey struct {
	disk  uint32
	block uint64
}

type pendingBlock struct {
	e    *entry
	data []byte // nil: zeros
}

// ErrClosed: the repository was closed while a write waited in its queue.
var ErrClosed = errors.New("store: repository closed")

func newQueue() *queue {
	q := &queue{overlay: map[blockKey]pendingBlock{}, times: map[uint32]time.Time{}}
	q.work = sync.NewCond(&q.mu)
	q.ready = sync.NewCond(&q.mu)
	q.room = sync.NewCond(&q.mu)
	return q
}

// startQueue starts the capture pipeline.
func (r *Repo) startQueue() {
	r.q = newQueue()
	r.q.exited.Add(2)
	go r.prepareLoop()
	go r.captureLoop()
}

// CaptureAsync journals writes (whole blocks of disks of timeline tl) as one
// step: ordered after every write queued before it, timed now (strictly
// after the timeline's previous point), visible to ReadNewest when it
// returns, and durable after the next Sync. The data is copied; a nil Data
// is a zero block. While the repository's filesystem is below its reserve
// (Options.MinFree) the write is refused with ErrNoSpace before any of it is
// queued, and accepted again once space is back. An error of an earlier
// queued write (a failing disk, say) is returned here and by Sync from then on.
func (r *Repo) CaptureAsync(tl uint32, writes []BlockWrite) error {
	if err := r.writable(); err != nil {
		return err
	}
	e := &entry{tl: tl, writes: make([]BlockWrite, len(writes))}
	for _, w := range writes {
		if w.Disk.Timeline != tl {
			return fmt.Errorf("store: disk %q is not on timeline %d", w.Disk.Name, tl)
		}
		if w.Block >= w.Disk.Blocks() {
			return fmt.Errorf("%w: block %d of disk %q (%d blocks)", ErrOutOfRange, w.Block, w.Disk.Name, w.Disk.Blocks())
		}
		if w.Data != nil && len(w.Data) != w.Disk.BlockSize {
			return fmt.Errorf("store: write of %d bytes to disk %q of block size %d", len(w.Data), w.Disk.Name, w.Disk.BlockSize)
		}
		if w.Data != nil {
			e.size += len(w.Data)
		}
	}
	if err := r.space.admit(uint64(e.size)); err != nil {
		return err
	}
	q := r.q
	buf := q.getBuf(e.size) // one copy of all blocks: the caller's buffer is reused
	e.buf = buf
	off := 0
	for i, w := range writes {
		e.writes[i] = BlockWrite{Disk: w.Disk, Block: w.Block}
		if w.Data != nil {
			e.writes[i].Data = buf[off : off+len(w.Data) : off+len(w.Data)]
			copy(e.writes[i].Data, w.Data)
			off += len(w.Data)
		}
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	for q.bytes > 0 && q.bytes+e.size > queueBytes && q.err == nil && !q.closed {
		q.room.Wait()
	}
	if q.err != nil {
		return q.err
	}
	if q.closed {
		return ErrClosed
	}
	e.at = time.Now().UTC()
	if last := q.times[tl]; !e.at.After(last) {
		e.at = last.Add(time.Nanosecond)
	}
	q.times[tl] = e.at
	for _, w := range e.writes {
		q.overlay[blockKey{w.Disk.ID, w.Block}] = pendingBlock{e, w.Data}
	}
	q.entries = append(q.entries, e)
	q.bytes += e.size
	q.backlog += e.size
	q.enq++
	q.ready.Signal()
	if q.backlog >= prepareAhead {
		q.work.Signal()
	}
	return nil
}

// drain waits until every write queued before the call is committed and
// returns the queue's error, if any.
func (r *Repo) drain() error {
	q := r.q
	if q == nil {
		return nil
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	target := q.enq
	for q.done < target && q.err == nil {
		q.room.Wait()
	}
	return q.err
}

// acquire takes the writer after the queue drained: what is about to change
// comes after every write acknowledged before it. A queue error does not
// stop metadata changes; Sync reports it.
func (r *Repo) acquire() {
	r.drain()
	r.wmu.Lock()
}

// prepareAhead is the backlog of unclaimed queued data from which the
// preparer works ahead of the committer.
const prepareAhead = 1 << 20

// claim takes the next group of unclaimed entries (at most groupSteps and
// about groupBytes) to be prepared by the caller. q.mu is held.
func (q *queue) claim(group []*entry) []*entry {
	size := 0
	for _, e := range q.entries[q.claimed-q.done:] {
		if len(group) == groupSteps || size >= groupBytes {
			break
		}
		group = append(group, e)
		size += e.size
	}
	q.claimed += uint64(len(group))
	q.backlog -= size
	return group
}

// prepareGroup prepares claimed entries (nothing after a queue error: the
// committer drops them) and marks them ready.
func (r *Repo) prepareGroup(group []*entry, failed bool, writes []BlockWrite) []BlockWrite {
	if !failed {
		writes = writes[:0]
		for _, e := range group {
			writes = append(writes, e.writes...)
		}
		prep := r.prepare(writes, nil)
		for _, e := range group {
			e.prep, prep = prep[:len(e.writes):len(e.writes)], prep[len(e.writes):]
		}
	}
	r.q.mu.Lock()
	for _, e := range group {
		e.ready = true
	}
	r.q.ready.Broadcast()
	r.q.mu.Unlock()
	return writes
}

// prepareLoop prepares queued writes ahead of the committer while a backlog
// lasts, until the repository closes.
func (r *Repo) prepareLoop() {
	q := r.q
	defer q.exited.Done()
	var group []*entry
	var writes []BlockWrite
	for {
		q.mu.Lock()
		for q.backlog < prepareAhead && !q.closed {
			q.work.Wait()
		}
		if q.closed {
			q.mu.Unlock()
			return
		}
		group = q.claim(group[:0])
		failed := q.err != nil
		q.mu.Unlock()
		writes = r.prepareGroup(group, failed, writes)
	}
}

// captureLoop commits queued writes in order until the repository closes:
// those the preparer claimed once it has prepared them, else a group it
// prepares itself.
func (r *Repo) captureLoop() {
	q := r.q
	defer q.exited.Done()
	var batch []*entry
	var writes []BlockWrite
	for {
		q.mu.Lock()
		for len(q.entries) == 0 && !q.closed {
			q.ready.Wait()
		}
		if len(q.entries) == 0 {
			q.mu.Unlock()
			return
		}
		failed := q.err != nil
		if q.claimed == q.done { // nothing prepared or being prepared: do it here
			batch = q.claim(batch[:0])
			q.mu.Unlock()
			writes = r.prepareGroup(batch, failed, writes)
			q.mu.Lock()
		}
		batch = append(batch[:0], q.entries[:q.claimed-q.done]...)
		for slices.ContainsFunc(batch, func(e *entry) bool { return !e.ready }) {
			q.ready.Wait()
		}
		failed = q.err != nil
		q.mu.Unlock()
		var err error
		if !failed {
			err = r.commitQueued(batch)
		}
		q.mu.Lock()
		if err != nil && q.err == nil {
			q.err = err
			r.logf("journaling captured writes failed: %v", err)
		}
		for _, e := range batch {
			for _, w := range e.writes {
				k := blockKey{w.Disk.ID, w.Block}
				if q.overlay[k].e == e {
					delete(q.overlay, k)
				}
			}
			q.bytes -= e.size
			q.putBuf(e.buf) // no reader holds it: they copy under q.mu
			e.buf, e.prep = nil, nil
		}
		q.entries = q.entries[len(batch):]
		if len(q.entries) == 0 {
			q.entries = nil // let the old backing array go
		}
		q.done += uint64(len(batch))
		q.room.Broadcast()
		q.mu.Unlock()
	}
}

// commitQueued journals prepared entries as consecutive steps, a group of
// them per index batch: one commit serves many small writes.
func (r *Repo) commitQueued(batch []*entry) error {
	for len(batch) > 0 {
		n, size := 0, 0
		for n < len(batch) && n < groupSteps && size < groupBytes {
			size += batch[n].size
			n++
		}
		if _, err := r.captureSteps(batch[:n], true); err != nil {
			return err
		}
		batch = batch[n:]
	}
	return nil
}

// A group of queued steps journaled in one index batch is at most this big.
const (
	groupSteps = 256
	groupBytes = 16 << 20
)

// prepared is a block's hash and its stored form, computed outside the writer lock.
type prepared struct {
	hash   Hash // zero Hash: an all-zero block
	stored []byte
	flags  uint8
}

// parallelBlocks is the size of a write from which its blocks are prepared
// on several cores.
const parallelBlocks = 64

// prepare hashes and compresses the blocks of writes.
func (r *Repo) prepare(writes []BlockWrite, out []prepared) []prepared {
	out = append(out, make([]prepared, len(writes))...)
	one := func(i int) {
		d := writes[i].Data
		if d == nil || IsZero(d) {
			return
		}
		out[i].hash = HashBlock(d)
		out[i].stored, out[i].flags = r.segs.compress(d)
	}
	n := runtime.GOMAXPROCS(0)
	if len(writes) < parallelBlocks || n == 1 {
		for i := range writes {
			one(i)
		}
		return out
	}
	var wg sync.WaitGroup
	for w := range n {
		wg.Go(func() {
			for i := w; i < len(writes); i += n {
				one(i)
			}
		})
	}
	wg.Wait()
	return out
}

// ReadNewest reads disk d's newest state at off: queued writes over the
// journal's head.
func (r *Repo) ReadNewest(d Disk, p []byte, off int64) (int, error) {
	if off < 0 || off >= d.Size {
		return 0, fmt.Errorf("%w: read at %d of disk %q of %d bytes", ErrOutOfRange, off, d.Name, d.Size)
	}
	p = p[:min(int64(len(p)), d.Size-off)]
	miss, err := r.readQueued(d, p, off)
	if err != nil || len(miss) == 0 {
		return len(p), err
	}
	// The head is read after the queue: a write that left the queue before
	// we looked is in it.
	im, err := r.Image(d, r.Head())
	if err != nil {
		return 0, err
	}
	bs := int64(d.BlockSize)
	for _, m := range miss {
		start, end := max(m.first*bs, off), min((m.first+m.n)*bs, off+int64(len(p)))
		if _, err := im.ReadAt(p[start-off:end-off], start); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

// blockRun is n blocks from first.
type blockRun struct{ first, n int64 }

// readQueued copies into p (disk d at off) the blocks that wait in the
// queue, and returns the runs of blocks that do not.
func (r *Repo) readQueued(d Disk, p []byte, off int64) ([]blockRun, error) {
	bs := int64(d.BlockSize)
	first, last := off/bs, (off+int64(len(p))-1)/bs
	all := []blockRun{{first, last - first + 1}}
	q := r.q
	if q == nil || len(p) == 0 {
		return all, nil
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.err != nil {
		return nil, q.err
	}
	if len(q.overlay) == 0 {
		return all, nil
	}
	var miss []blockRun
	for b := first; b <= last; b++ {
		pb, ok := q.overlay[blockKey{d.ID, uint64(b)}]
		if !ok {
			if n := len(miss); n > 0 && miss[n-1].first+miss[n-1].n == b {
				miss[n-1].n++
			} else {
				miss = append(miss, blockRun{b, 1})
			}
			continue
		}
		start, end := max(b*bs, off), min((b+1)*bs, off+int64(len(p)))
		dst := p[start-off : end-off]
		if pb.data == nil {
			clear(dst)
		} else {
			copy(dst, pb.data[start-b*bs:end-b*bs])
		}
	}
	return miss, nil
}

// stopQueue commits what is queued and ends the capture goroutine.
func (r *Repo) stopQueue() error {
	q := r.q
	if q == nil {
		return nil
	}
	err := r.drain()
	q.mu.Lock()
	q.closed = true
	q.work.Broadcast()
	q.ready.Broadcast()
	q.room.Broadcast()
	q.mu.Unlock()
	q.exited.Wait()
	return err
}
