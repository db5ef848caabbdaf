package fuseuring

import (
	"encoding/binary"

	"golang.org/x/sys/unix"
)

// serve answers the request the kernel put in entry i: on the queue's own
// thread, or, for requests that may block, on another goroutine.
func (q *queue) serve(i int) {
	e := &q.ents[i]
	e.unique.Store(binary.LittleEndian.Uint64(e.hdr[hdrCommitID:]))
	if offloaded(e.hdr) {
		go q.serveOffloaded(i)
		return
	}
	q.srv.handle(e)
	q.commit(i)
}

// Opcodes that run off the queue thread.
const (
	opcodeFsync     = 20
	opcodeFlush     = 25
	opcodeFsyncdir  = 30
	opcodeFallocate = 43
)

// offloaded reports whether the request in header h runs off the queue
// thread, on a goroutine of its own: those that may wait for storage
// (FSYNC, FSYNCDIR, FLUSH, which is close, FALLOCATE), so that the CPU's
// other requests are not held behind them. The handoff costs two wakeups,
// likely across CPUs (0.1 to 0.2 ms here). The rest, READ and WRITE
// included, run on the queue thread, on the CPU that issued them, without
// a wakeup: large ones too, as a single stream of 1 MiB requests gains
// nothing from another CPU and loses the handoff.
func offloaded(h []byte) bool {
	switch binary.LittleEndian.Uint32(h[inOpcode:]) {
	case opcodeFsync, opcodeFsyncdir, opcodeFlush, opcodeFallocate:
		return true
	}
	return false
}

func (q *queue) serveOffloaded(i int) {
	q.srv.handle(&q.ents[i])
	q.mu.Lock()
	q.done = append(q.done, i)
	q.mu.Unlock()
	one := [8]byte{1}
	if _, err := unix.Write(q.evfd, one[:]); err != nil {
		q.srv.logf("fuseuring: queue %d: wake: %v", q.qid, err)
	}
}

// handle runs the request in e through the protocol server and leaves the
// reply in e: fuse_out_header in in_out, the output arguments in the
// payload, their size in payload_sz.
//
// The ring splits a request the way /dev/fuse does not: header, first
// argument (op_in) and the rest (payload). Joined again as one byte stream
// they are what a read of /dev/fuse would have returned, so go-fuse parses
// them as it always does. The first argument's size is what the header's
// length leaves after the payload.
func (s *Server) handle(e *entry) {
	le := binary.LittleEndian
	h := e.hdr
	unique := le.Uint64(h[inUnique:])
	total := int(le.Uint32(h[inLen:]))
	psz := int(le.Uint32(h[hdrPayloadSize:]))
	arg0 := total - inHeaderSize - psz
	n := 0
	if arg0 >= 0 && arg0 <= opInMax && psz <= len(e.payload) {
		in := [3][]byte{h[:inHeaderSize], h[hdrOpIn : hdrOpIn+arg0], e.payload[:psz]}
		out := [2][]byte{h[:outHdrSize], e.payload}
		n, _ = s.ps.HandleRequest(in[:], out[:])
	} else {
		s.logf("fuseuring: malformed request: length %d, payload %d", total, psz)
	}
	if n < outHdrSize {
		// No reply was written (a malformed request); the kernel
		// waits for one all the same.
		le.PutUint32(h[0:], outHdrSize)
		errno := -int32(unix.EIO)
		le.PutUint32(h[4:], uint32(errno))
		le.PutUint64(h[8:], unique)
		n = outHdrSize
	}
	le.PutUint32(h[hdrPayloadSize:], uint32(n-outHdrSize))
}
