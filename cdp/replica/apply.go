package replica

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hindsight-cdp/hindsight/store"
)

// errLost: the connection broke (closed, reset) between frames or inside one.
var errLost = errors.New("connection lost")

// session is the target's side of one connection.
type session struct {
	s      *Server
	remote string
	conn   net.Conn
	br     *bufio.Reader
	wire   *atomic.Uint64

	name, source string
	tl           uint32
	disks        []store.Disk
	handle       store.Disk // what bookmarks name: the disk, or the group's handle

	// part is the step being received in parts (it holds the writer), at
	// source position partSeq and time partTime.
	part     *store.IncomingPart
	partSeq  uint64
	partTime time.Time

	pending  bool // steps applied, not yet synced and acknowledged
	lastSeq  uint64
	lastTime time.Time
	lastSync time.Time
	out      []byte
}

// run serves the stream's frames until it ends.
func (ss *session) run(ctx context.Context) error {
	defer func() {
		if ss.part != nil {
			ss.part.Abort() // nothing of a step cut off is journaled
			ss.part = nil
		}
	}()
	for {
		ss.conn.SetReadDeadline(time.Now().Add(ss.s.opt.IdleTimeout))
		t, p, err := readFrame(ss.br, MaxFrame)
		if err != nil {
			if errors.Is(err, errBadFrame) || errors.Is(err, errFrameTooLarge) {
				return refusef("%v", err)
			}
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return refusef("no frame within %v", ss.s.opt.IdleTimeout)
			}
			return fmt.Errorf("%w: %v", errLost, err)
		}
		switch t {
		case frameAsk:
			err = ss.ask(p)
		case frameSteps:
			err = ss.steps(p)
		case frameMarks:
			err = ss.marksFrame(p)
		case framePing:
			if len(p) != 0 {
				err = refusef("%v: PING with a payload", errBadFrame)
			} else {
				err = ss.write(endFrameOK(newFrame(ss.out, framePong)))
			}
		default:
			err = refusef("%v: %v from a source", errBadFrame, t)
		}
		if err != nil {
			return err
		}
		// Group commit: one sync for the steps of every frame already here.
		if ss.pending && (ss.br.Buffered() == 0 || time.Since(ss.lastSync) >= groupCommit) {
			if err := ss.commit(); err != nil {
				return err
			}
		}
	}
}

// write sends one frame.
func (ss *session) write(f []byte) error {
	ss.conn.SetWriteDeadline(time.Now().Add(ss.s.opt.IdleTimeout))
	_, err := ss.conn.Write(f)
	return err
}

// refuse tells the source why the stream ends, and logs it.
func (ss *session) refuse(err error) {
	reason := strings.TrimPrefix(err.Error(), errRefused.Error()+": ")
	if f, ferr := jsonFrame(frameRefuse, refusal{Reason: reason}); ferr == nil {
		ss.conn.SetWriteDeadline(time.Now().Add(time.Second))
		ss.conn.Write(f)
	}
	if ss.name != "" {
		reason = fmt.Sprintf("replica %q of source %q: %s", ss.name, ss.source, reason)
	}
	ss.s.refusals.refuse(ss.remote, reason)
}

// ask answers ASK with HAVE.
func (ss *session) ask(p []byte) error {
	id, hs, err := decodeAsk(p)
	if err != nil {
		return refusef("%v", err)
	}
	held := make([]bool, len(hs))
	if ss.part != nil { // the writer is the part's: ask it
		err = ss.part.HasContent(hs, held)
	} else {
		err = ss.s.r.HasContent(hs, held)
	}
	if err != nil {
		return err
	}
	ss.out = appendHave(ss.out, id, held)
	return ss.write(ss.out)
}

// steps applies a STEPS frame: whole steps in one ApplySteps (all or
// nothing), or one part of a step sent in parts.
func (ss *session) steps(p []byte) error {
	m, err := decodeSteps(p)
	if err != nil {
		return refusef("%v", err)
	}
	if len(m.Steps) == 0 {
		return nil
	}
	if err := ss.stillReplica(); err != nil {
		return err
	}
	steps, err := ss.incoming(m)
	if err != nil {
		return err
	}
	if m.Steps[0].Part != partWhole {
		return ss.applyPart(m, steps[0])
	}
	if ss.part != nil {
		return refusef("%v: whole steps while step %d is sent in parts", errBadFrame, ss.partSeq)
	}
	if err := ss.s.r.ApplySteps(ss.tl, steps); err != nil {
		return refusef("steps %d to %d: %v", m.Steps[0].Seq, m.Steps[len(m.Steps)-1].Seq, err)
	}
	for _, st := range m.Steps {
		ss.mark(st.Marks)
	}
	last := m.Steps[len(m.Steps)-1]
	ss.applied(last.Seq, last.Time, len(m.Steps))
	if m.Flags&flagSync != 0 {
		return ss.commit()
	}
	return nil
}

// incoming checks a frame's steps and maps them onto the replica's disks.
// A block sent by hash whose content came earlier in the frame gets that
// content: ApplySteps checks what it holds before it journals any of it.
func (ss *session) incoming(m *stepsMsg) ([]store.IncomingStep, error) {
	if m.Steps[0].Part != partWhole && len(m.Steps) != 1 {
		return nil, refusef("%v: a part of a step comes alone in its frame", errBadFrame)
	}
	fresh := map[store.Hash]*wireBlock{}
	out := make([]store.IncomingStep, len(m.Steps))
	seq := ss.lastSeq
	for i := range m.Steps {
		w := &m.Steps[i]
		if i > 0 && w.Part != partWhole {
			return nil, refusef("%v: a part of a step comes alone in its frame", errBadFrame)
		}
		if w.Part == partWhole && w.Seq <= seq || w.Part != partWhole && w.Seq < seq {
			return nil, refusef("%v: step %d comes after step %d", errBadFrame, w.Seq, seq)
		}
		seq = w.Seq
		st := store.IncomingStep{Time: w.Time, Blocks: make([]store.IncomingBlock, len(w.Blocks))}
		for j := range w.Blocks {
			b := &w.Blocks[j]
			if int(b.Disk) >= len(ss.disks) {
				return nil, refusef("%v: disk %d of %d", errBadFrame, b.Disk, len(ss.disks))
			}
			in := store.IncomingBlock{Disk: ss.disks[b.Disk], Block: b.Block, Hash: b.Hash}
			switch b.Kind {
			case kindHeld:
				if f := fresh[b.Hash]; f != nil {
					in.Stored, in.Zstd = f.Content, f.Kind == kindZstd
				}
			case kindRaw, kindZstd:
				in.Stored, in.Zstd = b.Content, b.Kind == kindZstd
				fresh[b.Hash] = b
			}
			st.Blocks[j] = in
		}
		out[i] = st
	}
	return out, nil
}

// applyPart journals one part of a step sent in parts; the last commits it
// (durable) and is acknowledged at once.
func (ss *session) applyPart(m *stepsMsg, st store.IncomingStep) error {
	w := m.Steps[0]
	r := ss.s.r
	if ss.part == nil {
		if w.Part != partMore {
			return refusef("%v: the last part of step %d, never begun", errBadFrame, w.Seq)
		}
		if ss.pending { // the part holds the writer: no sync until it commits
			if err := ss.commit(); err != nil {
				return err
			}
		}
		p, err := r.BeginIncoming(ss.tl, w.Time)
		if err != nil {
			return refusef("step %d: %v", w.Seq, err)
		}
		ss.part, ss.partSeq, ss.partTime = p, w.Seq, w.Time
	} else if w.Seq != ss.partSeq || !w.Time.Equal(ss.partTime) {
		return refusef("%v: step %d while step %d is sent in parts", errBadFrame, w.Seq, ss.partSeq)
	}
	err := ss.part.Put(st.Blocks)
	if err == nil && w.Part == partLast {
		_, err = ss.part.Commit()
		ss.part = nil
		if err == nil {
			ss.mark(w.Marks)
			ss.applied(w.Seq, w.Time, 1)
			return ss.commit()
		}
	}
	if err != nil {
		if ss.part != nil {
			ss.part.Abort()
			ss.part = nil
		}
		return refusef("step %d: %v", w.Seq, err)
	}
	return nil
}

// stillReplica refuses steps for a disk failed over meanwhile.
func (ss *session) stillReplica() error {
	d, err := ss.s.r.Disk(ss.disks[0].Name)
	if err != nil {
		return err
	}
	if d.Replica == nil || d.Replica.Source != ss.source {
		return refusef("%q is no longer a replica of %q here (failed over)", ss.name, ss.source)
	}
	return nil
}

// applied records steps journaled up to seq at time t.
func (ss *session) applied(seq uint64, t time.Time, n int) {
	ss.lastSeq, ss.lastTime, ss.pending = seq, t, true
	ss.s.mu.Lock()
	if rec := ss.s.replicas[ss.name]; rec != nil {
		rec.Position, rec.Received = t, time.Now().UTC()
		rec.Steps += uint64(n)
	}
	ss.s.mu.Unlock()
}

// commit makes what was applied durable and acknowledges it.
func (ss *session) commit() error {
	if ss.pending {
		if err := ss.s.r.Sync(); err != nil {
			return err
		}
		// A part's Commit made it durable; its ACK comes here too.
	}
	ss.pending, ss.lastSync = false, time.Now()
	ss.s.mu.Lock()
	if rec := ss.s.replicas[ss.name]; rec != nil {
		rec.Seq = ss.lastSeq
	}
	ss.s.mu.Unlock()
	ss.out = appendAck(ss.out, ss.lastSeq, ss.lastTime)
	return ss.write(ss.out)
}

// mark records bookmarks the source sent; one already here is skipped, and
// one that cannot be recorded is logged: the data is whole without it.
func (ss *session) mark(bms []store.Bookmark) {
	for _, bm := range bms {
		if _, err := ss.s.r.Mark(ss.handle, bm); err != nil && !errors.Is(err, store.ErrBookmarkExists) {
			ss.s.log.Warn("replica: bookmark not recorded", "replica", ss.name, "bookmark", bm.Name, "err", err)
		}
	}
}

// marksFrame records the bookmarks of a MARKS frame.
func (ss *session) marksFrame(p []byte) error {
	bms, err := decodeMarksFrame(p)
	if err != nil {
		return refusef("%v", err)
	}
	if ss.part != nil {
		return refusef("%v: MARKS while step %d is sent in parts", errBadFrame, ss.partSeq)
	}
	ss.mark(bms)
	return nil
}
