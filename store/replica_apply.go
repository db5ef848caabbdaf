package store

import (
	"errors"
	"fmt"
	"runtime"
	"time"

	"github.com/klauspost/compress/zstd"
)

// HasContent sets out[i] to whether the repository holds content hs[i]. It
// waits for the writer: while an IncomingPart is open, ask the part.
func (r *Repo) HasContent(hs []Hash, out []bool) error {
	r.wmu.Lock()
	defer r.wmu.Unlock()
	for i, h := range hs {
		_, ok, err := r.holds(h)
		if err != nil {
			return err
		}
		out[i] = ok
	}
	return nil
}

// holds finds content h in the writer's unsynced content or the index; the
// writer is held.
func (r *Repo) holds(h Hash) (location, bool, error) {
	if loc, ok := r.unsynced[h]; ok {
		return loc, true, nil
	}
	if !r.known.mayHold(h) {
		return location{}, false, nil
	}
	v, ok, err := r.get(hashKey(h))
	if err != nil || !ok {
		return location{}, false, err
	}
	loc, err := decodeLocation(v)
	return loc, err == nil, err
}

// IncomingBlock is one block of a replicated step.
type IncomingBlock struct {
	Disk   Disk
	Block  uint64
	Hash   Hash   // the zero Hash: zeros
	Stored []byte // the content as sent; nil when the repository holds it
	Zstd   bool   // Stored is a zstd frame
}

// IncomingStep is one replicated step: its source time and its blocks.
type IncomingStep struct {
	Time   time.Time
	Blocks []IncomingBlock
}

// ApplySteps journals replicated steps on timeline tl, each at its source
// time (which must come after the timeline's newest, and after the step
// before it), as captured steps: visible at once, durable after the next
// Sync. Every block sent with content is checked against its hash first,
// and every block sent without must be held, or sent with content by an
// earlier block of the call: otherwise nothing is journaled (ErrBadContent,
// ErrMissingContent, ErrTimeOrder, ErrOutOfRange).
func (r *Repo) ApplySteps(tl uint32, steps []IncomingStep) error {
	if err := r.writable(); err != nil {
		return err
	}
	if err := r.space.admit(0); err != nil {
		return err
	}
	es := make([]*entry, len(steps))
	for i, st := range steps {
		if st.Time.IsZero() {
			return fmt.Errorf("%w: replicated step %d of %d has no time", ErrTimeOrder, i+1, len(steps))
		}
		e := &entry{tl: tl, at: st.Time, writes: make([]BlockWrite, len(st.Blocks)), prep: make([]prepared, len(st.Blocks))}
		for j, b := range st.Blocks {
			if b.Disk.Timeline != tl {
				return fmt.Errorf("store: disk %q is not on timeline %d", b.Disk.Name, tl)
			}
			p, err := r.incoming(b)
			if err != nil {
				return err
			}
			e.writes[j] = BlockWrite{Disk: b.Disk, Block: b.Block}
			e.prep[j] = p
		}
		es[i] = e
	}
	if err := r.drain(); err != nil {
		return err
	}
	r.wmu.Lock()
	defer r.wmu.Unlock()
	// Every check comes before the first step's frame is appended: a frame
	// appended and then refused would be replayed by the next open after a
	// crash, as a step at the position the next one takes.
	last, err := r.lastTime(tl)
	if err != nil {
		return err
	}
	for i, e := range es {
		if !e.at.After(last) {
			return fmt.Errorf("%w: replicated step %d of %d is at %s, not after %s (the newest point or bookmark, or the step before)",
				ErrTimeOrder, i+1, len(es), e.at.UTC().Format(time.RFC3339Nano), last.Format(time.RFC3339Nano))
		}
		last = e.at
	}
	sent := map[Hash]bool{} // content sent earlier in this call serves the blocks after it
	for _, e := range es {
		if len(e.writes) > 0 {
			if err := r.stillReplica(e.writes[0].Disk); err != nil {
				return err
			}
			break
		}
	}
	for _, e := range es {
		for j, p := range e.prep {
			if p.stored != nil {
				sent[p.hash] = true
			}
			if p.hash == (Hash{}) || p.stored != nil || sent[p.hash] {
				continue
			}
			if _, ok, err := r.holds(p.hash); err != nil {
				return err
			} else if !ok {
				w := e.writes[j]
				return fmt.Errorf("%w: %x for block %d of disk %q", ErrMissingContent, p.hash[:8], w.Block, w.Disk.Name)
			}
		}
	}
	_, err = r.captureLocked(es, false)
	return err
}

// stillReplica refuses a stream's steps into d once d was failed over (the
// writer is held, as Failover holds it to make the change).
func (r *Repo) stillReplica(d Disk) error {
	cur, err := r.Disk(d.Name)
	if err != nil {
		return err
	}
	if cur.Replica == nil || cur.ID != d.ID {
		return fmt.Errorf("%w: %q is writable here now (failed over): its stream ends", ErrNotReplica, d.Name)
	}
	return nil
}

// incoming checks one replicated block and prepares it for the journal.
func (r *Repo) incoming(b IncomingBlock) (prepared, error) {
	if b.Block >= b.Disk.Blocks() {
		return prepared{}, fmt.Errorf("%w: block %d of disk %q", ErrOutOfRange, b.Block, b.Disk.Name)
	}
	if b.Hash == (Hash{}) || b.Hash == r.zeroHash(b.Disk.BlockSize) {
		return prepared{}, nil
	}
	if b.Stored == nil {
		return prepared{hash: b.Hash}, nil
	}
	// Content is kept compressed only when that makes it smaller: a larger
	// frame would cost more than the block, up to maxStored for each.
	if (b.Zstd && len(b.Stored) >= b.Disk.BlockSize) || (!b.Zstd && len(b.Stored) != b.Disk.BlockSize) {
		return prepared{}, fmt.Errorf("%w: %d bytes for block %d of disk %q (%d bytes, smaller when compressed)",
			ErrBadContent, len(b.Stored), b.Block, b.Disk.Name, b.Disk.BlockSize)
	}
	plain := b.Stored
	flags := uint8(flagTried)
	if b.Zstd {
		plain = make([]byte, b.Disk.BlockSize)
		if err := r.decodeIncoming(plain, b.Stored); err != nil {
			return prepared{}, fmt.Errorf("%w: block %d of disk %q: %v", ErrBadContent, b.Block, b.Disk.Name, err)
		}
		flags |= flagZstd
	}
	if HashBlock(plain) != b.Hash {
		return prepared{}, fmt.Errorf("%w: block %d of disk %q", ErrBadContent, b.Block, b.Disk.Name)
	}
	if IsZero(plain) {
		return prepared{}, nil
	}
	return prepared{hash: b.Hash, stored: b.Stored, flags: flags}, nil
}

// decodeIncoming decodes a zstd frame sent for a block into dst (a
// block), decoding no more than that: a small frame may claim, or hold,
// gigabytes, and the repository's own decoder would make room for them.
func (r *Repo) decodeIncoming(dst, stored []byte) error {
	r.inDecOnce.Do(func() {
		r.inDec, r.inDecErr = zstd.NewReader(nil, zstd.WithDecodeAllCapLimit(true),
			zstd.WithDecoderConcurrency(runtime.GOMAXPROCS(0)))
	})
	if r.inDecErr != nil {
		return r.inDecErr
	}
	out, err := r.inDec.DecodeAll(stored, dst[:0:len(dst)])
	if err != nil || len(out) != len(dst) || &out[0] != &dst[0] {
		return fmt.Errorf("compressed content does not decode to a block of %d bytes (%v)", len(dst), err)
	}
	return nil
}

// zeroHash is ZeroHash(n), cached; safe without the writer.
func (r *Repo) zeroHash(n int) Hash {
	if h, ok := r.zeroCache.Load(n); ok {
		return h.(Hash)
	}
	h := ZeroHash(n)
	r.zeroCache.Store(n, h)
	return h
}

// IncomingPart journals a replicated step too large for one ApplySteps, a
// part at a time. It holds the writer from BeginIncoming to Commit or Abort
// (other writes of the repository wait, and so does Repo.HasContent: ask
// the part instead), and is durable once Commit returns.
type IncomingPart struct {
	st      *Step
	checked bool // the disks were found still a replica
}

// BeginIncoming starts a replicated step on timeline tl at its source time.
func (r *Repo) BeginIncoming(tl uint32, at time.Time) (*IncomingPart, error) {
	if at.IsZero() {
		return nil, fmt.Errorf("%w: a replicated step has no time", ErrTimeOrder)
	}
	st, err := r.Begin(tl, at)
	if err != nil {
		return nil, err
	}
	return &IncomingPart{st: st}, nil
}

// errPartEnded: a part of a step that was committed or aborted.
var errPartEnded = errors.New("store: the replicated step has ended (committed or aborted)")

// HasContent is Repo.HasContent for the step's next part: it counts the
// content of its earlier parts, and does not wait for the writer the step
// holds.
func (p *IncomingPart) HasContent(hs []Hash, out []bool) error {
	if p.st.done {
		return errPartEnded
	}
	for i, h := range hs {
		_, ok, err := p.st.stored(h)
		if err != nil {
			return err
		}
		out[i] = ok
	}
	return nil
}

// Put journals blocks of the step, checked as ApplySteps checks them.
func (p *IncomingPart) Put(blocks []IncomingBlock) error {
	if p.st.done {
		return errPartEnded
	}
	if len(blocks) > 0 && !p.checked {
		if err := p.st.r.stillReplica(blocks[0].Disk); err != nil {
			return err
		}
		p.checked = true
	}
	for _, b := range blocks {
		if err := p.st.check(b.Disk, b.Block, nil); err != nil {
			return err
		}
		prep, err := p.st.r.incoming(b)
		if err != nil {
			return err
		}
		if prep.hash != (Hash{}) && prep.stored == nil {
			if _, ok, err := p.st.stored(prep.hash); err != nil {
				return err
			} else if !ok {
				return fmt.Errorf("%w: %x for block %d of disk %q", ErrMissingContent, prep.hash[:8], b.Block, b.Disk.Name)
			}
		}
		if err := p.st.putPrepared(b.Disk, b.Block, prep); err != nil {
			return err
		}
	}
	return nil
}

// Commit ends the step: durable and visible.
func (p *IncomingPart) Commit() (Point, error) { return p.st.Commit() }

// Abort drops the step.
func (p *IncomingPart) Abort() error { return p.st.Abort() }
