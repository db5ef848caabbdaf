package replica

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/hindsight-cdp/hindsight/store"
)

// A connection's stream runs in three goroutines: the streamer reads the
// timeline into batches, sends each batch's ASK and queues it; the
// completer takes the queued batches in order, waits for each one's HAVE
// and sends its STEPS with the content the target lacks; the reader takes
// HAVE, ACK, PONG and REFUSE. Up to window batches are asked ahead, so a
// long round trip does not set the pace.
//
// In Sync mode a batch with few hashes the target is not known to hold
// skips ASK and carries their content at once: one round trip (STEPS, ACK)
// per flush instead of two, for at most syncDirect blocks of content the
// target may already have.

// Batching bounds, well below the decoder's (wire.go).
const (
	batchSteps   = 256
	batchBlocks  = 2048
	batchContent = 8 << 20 // bytes a batch may carry: its non-zero blocks at full size
	blockOverEst = 48      // a block's bytes in STEPS beside its content
	window       = 32      // batches queued and not yet sent
	passSteps    = 4096    // steps read per pass (no iterator stays open for hours)
	syncDirect   = 64      // Sync: a batch asking no more than this skips ASK
	knownMax     = 1 << 17 // hashes per generation of the known set
)

// errPassFull ends a pass of StreamAfter that read passSteps steps.
var errPassFull = errors.New("replica: pass full")

// link is the source's side of one connection.
type link struct {
	s         *Sender
	conn      net.Conn
	br        *bufio.Reader
	wmu       sync.Mutex // one frame written at a time
	lastWrite atomic.Int64
	haves     chan haveMsg
	queue     chan *batch
	readDone  chan struct{} // closed when the reader ends
	known     knownSet

	// The streamer's state.
	nextID    uint64
	cur       *batch
	after     time.Time // the time of the newest step read
	readSeq   uint64    // its position (the welcome's, before any)
	marksSent map[string]bool
	lastMarks time.Time

	buf []byte // the completer's frame
}

type haveMsg struct {
	id   uint64
	held []bool
}

// batch is the steps of one STEPS frame (or the bookmarks of one MARKS).
type batch struct {
	id     uint64
	steps  []outStep
	blocks int
	size   int
	asked  []store.Hash
	askIdx map[store.Hash]int
	direct bool // Sync: sent without ASK
	marks  []store.Bookmark
}

type outStep struct {
	seq    uint64
	at     time.Time
	part   uint8
	blocks []store.StreamBlock
	marks  []store.Bookmark
}

// session runs one connection until it fails or ctx ends; progressed
// says whether the target acknowledged anything on it.
func (s *Sender) session(ctx context.Context) (progressed bool, err error) {
	conn, err := s.dial(ctx)
	if err != nil {
		return false, err
	}
	defer conn.Close()
	l := &link{s: s, conn: conn, br: bufio.NewReaderSize(conn, 64<<10), haves: make(chan haveMsg, window+1),
		queue: make(chan *batch, window), readDone: make(chan struct{}), marksSent: map[string]bool{}}
	pos, err := l.handshake()
	if err != nil {
		return false, err
	}
	if err := s.welcomed(pos); err != nil {
		return false, err
	}
	s.mu.Lock()
	l.after, l.readSeq = pos, s.ackSeq
	s.mu.Unlock()
	s.log.Info("replica: streaming", "replica", s.name, "target", s.target.Addr, "from", pos)
	g, gctx := errgroup.WithContext(ctx)
	stop := context.AfterFunc(gctx, func() { conn.Close() })
	defer stop()
	var acks atomic.Bool
	g.Go(func() error {
		defer close(l.readDone)
		return l.reader(gctx, &acks)
	})
	g.Go(func() error { return l.complete(gctx) })
	g.Go(func() error { return l.stream(gctx) })
	err = g.Wait()
	return acks.Load(), err
}

// handshake sends HELLO and returns WELCOME's position.
func (l *link) handshake() (time.Time, error) {
	f, err := jsonFrame(frameHello, l.s.hello)
	if err != nil {
		return time.Time{}, err
	}
	l.conn.SetDeadline(time.Now().Add(l.s.readTimeout))
	defer l.conn.SetDeadline(time.Time{})
	if _, err := l.conn.Write(f); err != nil {
		return time.Time{}, err
	}
	t, p, err := readFrame(l.br, maxHelloFrame)
	if err != nil {
		return time.Time{}, fmt.Errorf("waiting for WELCOME: %w", err)
	}
	switch t {
	case frameWelcome:
		var w Welcome
		if err := json.Unmarshal(p, &w); err != nil {
			return time.Time{}, fmt.Errorf("%w: WELCOME: %v", errBadFrame, err)
		}
		return w.Position, nil
	case frameRefuse:
		return time.Time{}, refused(p)
	}
	return time.Time{}, fmt.Errorf("%w: %v instead of WELCOME", errBadFrame, t)
}

// refused is the error of a REFUSE frame.
func refused(p []byte) error {
	var r refusal
	if err := json.Unmarshal(p, &r); err != nil {
		return fmt.Errorf("%w (%s)", ErrRefused, err)
	}
	return fmt.Errorf("%w: %s", ErrRefused, r.Reason)
}

// write sends one frame. After a failed write it waits a moment for the
// reader, which may be about to read the REFUSE that says why.
func (l *link) write(f []byte) error {
	l.wmu.Lock()
	l.conn.SetWriteDeadline(time.Now().Add(l.s.readTimeout))
	_, err := l.conn.Write(f)
	l.wmu.Unlock()
	l.lastWrite.Store(time.Now().UnixNano())
	if err != nil {
		select {
		case <-l.readDone:
		case <-time.After(time.Second):
		}
		return fmt.Errorf("write to target: %w", err)
	}
	return nil
}

// reader takes what the target sends.
func (l *link) reader(ctx context.Context, acks *atomic.Bool) error {
	for {
		l.conn.SetReadDeadline(time.Now().Add(l.s.readTimeout))
		t, p, err := readFrame(l.br, maxHelloFrame)
		if err != nil {
			return fmt.Errorf("read from target: %w", err)
		}
		switch t {
		case frameHave:
			id, held, err := decodeHave(p)
			if err != nil {
				return err
			}
			select {
			case l.haves <- haveMsg{id, held}:
			case <-ctx.Done():
				return ctx.Err()
			}
		case frameAck:
			seq, at, err := decodeAck(p)
			if err != nil {
				return err
			}
			acks.Store(true)
			l.s.acked(seq, at)
		case framePong:
		case frameRefuse:
			return refused(p)
		default:
			return fmt.Errorf("%w: %v from the target", errBadFrame, t)
		}
	}
}

// stream reads the timeline after the target's position into batches,
// then waits for more, pinging while idle.
func (l *link) stream(ctx context.Context) error {
	s := l.s
	if err := l.sendMarks(ctx, true); err != nil {
		return err
	}
	for {
		upto := s.r.Durable()
		n := 0
		err := s.r.StreamAfter(ctx, s.tl, l.after, upto, func(st *store.StreamStep) error {
			if err := l.add(ctx, st); err != nil {
				return err
			}
			if n++; n >= passSteps {
				return errPassFull
			}
			return nil
		})
		full := errors.Is(err, errPassFull)
		if err != nil && !full {
			return err
		}
		if err := l.flush(ctx); err != nil {
			return err
		}
		if !full { // everything of the timeline up to upto is read
			s.cover(l.readSeq, upto)
		}
		if err := l.sendMarks(ctx, false); err != nil {
			return err
		}
		if n > 0 {
			continue
		}
		wctx, cancel := context.WithTimeout(ctx, s.pingEvery)
		err = s.r.DurableWait(wctx, upto)
		cancel()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil && time.Since(time.Unix(0, l.lastWrite.Load())) >= s.pingEvery {
			if err := l.write(endFrameOK(newFrame(nil, framePing))); err != nil {
				return err
			}
		}
	}
}

// add puts a step read into batches: with the steps before it, or, when
// it is too large for one frame, alone in parts.
func (l *link) add(ctx context.Context, st *store.StreamStep) error {
	s := l.s
	var bytes int64
	size := 0
	for _, b := range st.Blocks {
		bs := s.blockSize(b.Disk)
		bytes += int64(bs)
		size += blockOverEst
		if b.Hash != (store.Hash{}) {
			size += bs
		}
	}
	marks := slices.Clone(st.Bookmarks)
	for _, bm := range marks {
		l.marksSent[bm.Name] = true
		j, _ := json.Marshal(bm)
		size += 4 + len(j)
	}
	s.read(st.Point.Seq, bytes)
	l.after, l.readSeq = st.Point.Time, st.Point.Seq
	if len(st.Blocks) <= batchBlocks && size <= batchContent {
		if c := l.cur; c != nil && (len(c.steps) >= batchSteps || c.blocks+len(st.Blocks) > batchBlocks || c.size+size > batchContent) {
			if err := l.flush(ctx); err != nil {
				return err
			}
		}
		if l.cur == nil {
			l.cur = &batch{}
		}
		l.cur.steps = append(l.cur.steps, outStep{seq: st.Point.Seq, at: st.Point.Time, blocks: slices.Clone(st.Blocks), marks: marks})
		l.cur.blocks += len(st.Blocks)
		l.cur.size += size
		return nil
	}
	if err := l.flush(ctx); err != nil {
		return err
	}
	for i := 0; i < len(st.Blocks); {
		j, sz := i, 0
		for j < len(st.Blocks) && j-i < batchBlocks {
			c := blockOverEst
			if st.Blocks[j].Hash != (store.Hash{}) {
				c += s.blockSize(st.Blocks[j].Disk)
			}
			if j > i && sz+c > batchContent {
				break
			}
			sz += c
			j++
		}
		part := outStep{seq: st.Point.Seq, at: st.Point.Time, part: partMore, blocks: slices.Clone(st.Blocks[i:j])}
		if j == len(st.Blocks) {
			part.part, part.marks = partLast, marks
		}
		if err := l.enqueue(ctx, &batch{steps: []outStep{part}, blocks: j - i, size: sz}); err != nil {
			return err
		}
		i = j
	}
	return nil
}

// blockSize is the block size of the disk of that ID.
func (s *Sender) blockSize(id uint32) int {
	if i, ok := s.index[id]; ok {
		return s.disks[i].BlockSize
	}
	return store.MaxBlockSize
}

// flush queues the batch being filled.
func (l *link) flush(ctx context.Context) error {
	b := l.cur
	l.cur = nil
	if b == nil {
		return nil
	}
	return l.enqueue(ctx, b)
}

// enqueue queues a batch for the completer and asks for the hashes of its
// blocks the target is not known to hold.
func (l *link) enqueue(ctx context.Context, b *batch) error {
	l.nextID++
	b.id = l.nextID
	if b.marks == nil {
		b.askIdx = map[store.Hash]int{}
		l.known.mu.Lock()
		for _, st := range b.steps {
			for _, blk := range st.blocks {
				h := blk.Hash
				if _, ok := b.askIdx[h]; ok || h == (store.Hash{}) || l.known.has(h) {
					continue
				}
				b.askIdx[h] = len(b.asked)
				b.asked = append(b.asked, h)
			}
		}
		l.known.mu.Unlock()
		if l.s.opt.Sync && len(b.asked) <= syncDirect {
			b.direct, b.asked, b.askIdx = true, nil, nil
		}
	}
	select {
	case l.queue <- b:
	case <-ctx.Done():
		return ctx.Err()
	}
	if len(b.asked) == 0 {
		return nil
	}
	return l.write(appendAsk(nil, b.id, b.asked))
}

// sendMarks queues the bookmarks made since their point was read (at most
// once a second unless forced): StreamAfter gives a step the bookmarks
// that exist when it is read, and most are made later.
func (l *link) sendMarks(ctx context.Context, force bool) error {
	if !force && time.Since(l.lastMarks) < time.Second {
		return nil
	}
	l.lastMarks = time.Now()
	bms, err := l.s.r.Bookmarks(l.s.handle)
	if err != nil {
		return err
	}
	var fresh []store.Bookmark
	for _, bm := range bms {
		if bm.Seq <= l.readSeq && !l.marksSent[bm.Name] {
			l.marksSent[bm.Name] = true
			fresh = append(fresh, bm)
		}
	}
	for len(fresh) > 0 {
		n, size := 0, 0
		for n < len(fresh) && n < 256 && size < batchContent {
			j, _ := json.Marshal(fresh[n])
			size += 4 + len(j)
			n++
		}
		if err := l.enqueue(ctx, &batch{marks: fresh[:n]}); err != nil {
			return err
		}
		fresh = fresh[n:]
	}
	return nil
}

// complete sends the queued batches in order, each once its HAVE is in.
func (l *link) complete(ctx context.Context) error {
	for {
		var b *batch
		select {
		case b = <-l.queue:
		case <-ctx.Done():
			return ctx.Err()
		}
		if b.marks != nil {
			f, err := appendMarksFrame(l.buf, b.marks)
			if err != nil {
				return err
			}
			if err := l.write(f); err != nil {
				return err
			}
			l.buf = f
			continue
		}
		var held []bool
		if len(b.asked) > 0 {
			select {
			case h := <-l.haves:
				if h.id != b.id || len(h.held) != len(b.asked) {
					return fmt.Errorf("%w: HAVE %d of %d hashes for ASK %d of %d", errBadFrame, h.id, len(h.held), b.id, len(b.asked))
				}
				held = h.held
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		if err := l.sendSteps(b, held); err != nil {
			return err
		}
	}
}

// sendSteps sends a batch's STEPS: content for the blocks the target
// lacks, each hash's content once per connection.
func (l *link) sendSteps(b *batch, held []bool) error {
	s := l.s
	m := stepsMsg{ID: b.id, Steps: make([]wireStep, len(b.steps))}
	if s.opt.Sync {
		m.Flags = flagSync
	}
	var steps, blocks, contents, contentBytes uint64
	for i, st := range b.steps {
		ws := wireStep{Seq: st.seq, Time: st.at, Part: st.part, Marks: st.marks, Blocks: make([]wireBlock, len(st.blocks))}
		for j, blk := range st.blocks {
			idx, ok := s.index[blk.Disk]
			if !ok {
				return fmt.Errorf("replica: %q: disk ID %d joined the timeline after the stream started", s.name, blk.Disk)
			}
			w := wireBlock{Disk: idx, Block: blk.Block, Hash: blk.Hash, Kind: kindHeld}
			if blk.Hash == (store.Hash{}) {
				w.Kind = kindZeros
			} else if l.missing(b, held, blk.Hash) {
				data, zstd, err := s.r.StoredContent(blk, s.disks[idx].BlockSize)
				if err != nil {
					return err
				}
				w.Kind, w.Content = kindRaw, data
				if zstd {
					w.Kind = kindZstd
				}
				contents++
				contentBytes += uint64(len(data))
			}
			ws.Blocks[j] = w
		}
		m.Steps[i] = ws
		blocks += uint64(len(st.blocks))
		if st.part != partMore {
			steps++
		}
	}
	f, err := appendSteps(l.buf, &m)
	if err != nil {
		return err
	}
	if err := l.write(f); err != nil {
		return err
	}
	l.buf = f
	s.mu.Lock()
	s.st.Steps += steps
	s.st.Blocks += blocks
	s.st.ContentSent += contents
	s.st.ContentBytes += contentBytes
	s.mu.Unlock()
	return nil
}

// missing decides whether h's content goes with the block, and if so
// counts it as held from now on (the target applies frames in order).
func (l *link) missing(b *batch, held []bool, h store.Hash) bool {
	send := b.direct
	i, asked := b.askIdx[h]
	if asked {
		send = !held[i]
	}
	l.known.mu.Lock()
	defer l.known.mu.Unlock()
	if !send || l.known.has(h) {
		if asked && !send {
			l.known.add(h) // answered held
		}
		return false
	}
	l.known.add(h)
	return true
}

// knownSet is a bounded set of hashes the target holds: sent with content
// or answered held on this connection. Two generations: when the newer
// fills, the older is dropped.
type knownSet struct {
	mu       sync.Mutex
	cur, old map[store.Hash]struct{}
}

func (k *knownSet) has(h store.Hash) bool {
	if _, ok := k.cur[h]; ok {
		return true
	}
	_, ok := k.old[h]
	return ok
}

func (k *knownSet) add(h store.Hash) {
	if k.cur == nil || len(k.cur) >= knownMax {
		k.old, k.cur = k.cur, make(map[store.Hash]struct{}, 1024)
	}
	k.cur[h] = struct{}{}
}
