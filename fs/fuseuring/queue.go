package fuseuring

import (
	"encoding/binary"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// queue serves the kernel's ring queue of one CPU: a goroutine locked to a
// thread pinned to that CPU owns an io_uring with depth registered entries.
type queue struct {
	srv    *Server
	qid    int
	tid    int           // the thread, if it runs at SCHED_IDLE
	served atomic.Uint64 // requests served, for the scheduling guard
	r      *ring
	mem    []byte // entries' headers and payloads, outside the Go heap
	ents   []entry
	alive  int // entries the kernel may still hand a request, or being served

	evfd    int    // offloaded handlers signal here when they finish
	evBuf   []byte // 8 bytes in mem that the eventfd read fills
	evArmed bool
	mu      sync.Mutex
	done    []int // entries whose offloaded handler has written its reply
	cqes    []cqe
}

// entry is one ring entry: a header and a payload buffer registered with the
// kernel, which puts one request at a time in them.
type entry struct {
	hdr      []byte // struct fuse_uring_req_header
	payload  []byte
	iov      []byte        // the two iovecs REGISTER points at
	unique   atomic.Uint64 // request in hand, for interrupts; 0 if none
	cmd      uint32        // last command sent: REGISTER or COMMIT_AND_FETCH
	commitID uint64        // its commit_id
	dead     bool
}

// Memory of a queue: a control area of hdrStride bytes per entry (its
// header, then its two iovecs) and the eventfd counter, rounded up to a
// page, then the page-aligned payload buffers.
const (
	hdrStride = 512
	iovOff    = 320
	evTag     = 0 // user_data of the eventfd read; entries use index + 1
)

func newQueue(s *Server, qid, depth int) *queue {
	return &queue{srv: s, qid: qid, evfd: -1, ents: make([]entry, depth)}
}

// run serves the queue until no entry is left: the connection was aborted
// (unmounted). It reports setup, including the registration of every
// entry, on ready.
func (q *queue) run(payloadSize int, ready chan<- error) {
	// Never unlocked: the thread ends with the goroutine, so the CPU
	// affinity set here is not handed to other goroutines.
	runtime.LockOSThread()
	err := q.setup(payloadSize)
	ready <- err
	q.loop()
	q.teardown()
}

func (q *queue) setup(payloadSize int) error {
	var set unix.CPUSet
	set.Set(q.qid)
	if err := unix.SchedSetaffinity(0, &set); err != nil {
		// An offline CPU: its queue still needs entries for the
		// kernel to start the ring; serve it from anywhere.
		q.srv.logf("fuseuring: queue %d not pinned: %v", q.qid, err)
	}
	if q.srv.idle {
		if err := setPolicy(0, schedIdle); err != nil {
			q.srv.logf("fuseuring: queue %d stays at normal priority: %v", q.qid, err)
		} else {
			q.tid = unix.Gettid()
		}
	}
	depth := len(q.ents)
	var err error
	if q.r, err = newRing(uint32(depth+1), ringFlags); err != nil {
		return err
	}
	if err := q.r.registerFile(q.srv.fd); err != nil {
		return err
	}
	payloadSize = (payloadSize + 4095) &^ 4095
	ctl := (depth*hdrStride + 8 + 4095) &^ 4095
	q.mem, err = unix.Mmap(-1, 0, ctl+depth*payloadSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return fmt.Errorf("mmap ring buffers: %w", err)
	}
	le := binary.LittleEndian
	for i := range q.ents {
		e := &q.ents[i]
		h := i * hdrStride
		e.hdr = q.mem[h : h+hdrSize : h+hdrSize]
		e.iov = q.mem[h+iovOff : h+iovOff+32]
		p := ctl + i*payloadSize
		e.payload = q.mem[p : p+payloadSize : p+payloadSize]
		le.PutUint64(e.iov[0:], uint64(uintptr(unsafe.Pointer(&e.hdr[0]))))
		le.PutUint64(e.iov[8:], hdrSize)
		le.PutUint64(e.iov[16:], uint64(uintptr(unsafe.Pointer(&e.payload[0]))))
		le.PutUint64(e.iov[24:], uint64(payloadSize))
	}
	q.evBuf = q.mem[depth*hdrStride : depth*hdrStride+8]
	if q.evfd, err = unix.Eventfd(0, unix.EFD_CLOEXEC); err != nil {
		return fmt.Errorf("eventfd: %w", err)
	}
	for i := range q.ents {
		q.command(i, fuseCmdRegister, 0)
	}
	q.armEventfd()
	if err := q.r.enter(false); err != nil {
		// Nothing was submitted: no entry is known to the kernel.
		q.evArmed = false
		return err
	}
	q.alive = depth
	// A refused REGISTER completes at once; an accepted one only when a
	// request comes.
	q.cqes = q.r.reap(q.cqes[:0])
	var first error
	for _, c := range q.cqes {
		if c.userData != evTag && c.res < 0 {
			q.ents[c.userData-1].dead = true
			q.alive--
			if first == nil {
				first = fmt.Errorf("register ring entry of queue %d: %w", q.qid, unix.Errno(-c.res))
			}
		}
	}
	return first
}

// command queues an SQE for entry i: REGISTER, or COMMIT_AND_FETCH of the
// request with commit_id commit.
func (q *queue) command(i int, op uint32, commit uint64) {
	q.ents[i].cmd, q.ents[i].commitID = op, commit
	s := q.r.sqe() // never nil: one SQE an entry, plus the eventfd's
	le := binary.LittleEndian
	s[sqeOpcode] = opURingCmd
	s[sqeFlags] = sqeFixedFile
	le.PutUint32(s[sqeCmdOp:], op)
	le.PutUint64(s[sqeUserData:], uint64(i+1))
	le.PutUint64(s[cmdReqCommitID:], commit)
	le.PutUint16(s[cmdReqQID:], uint16(q.qid))
	if op == fuseCmdRegister {
		le.PutUint64(s[sqeAddr:], uint64(uintptr(unsafe.Pointer(&q.ents[i].iov[0]))))
		le.PutUint32(s[sqeLen:], 2)
	}
}

// armEventfd queues a read of the eventfd, which completes when an
// offloaded handler has finished.
func (q *queue) armEventfd() {
	s := q.r.sqe()
	le := binary.LittleEndian
	s[sqeOpcode] = opRead
	le.PutUint32(s[sqeFd:], uint32(q.evfd))
	le.PutUint64(s[sqeAddr:], uint64(uintptr(unsafe.Pointer(&q.evBuf[0]))))
	le.PutUint32(s[sqeLen:], 8)
	le.PutUint64(s[sqeUserData:], evTag)
	q.evArmed = true
}

// loop waits for requests and serves them until every entry is dead.
func (q *queue) loop() {
	for q.alive > 0 {
		if err := q.r.enter(true); err != nil {
			q.srv.logf("fuseuring: queue %d: %v", q.qid, err)
			return
		}
		q.cqes = q.r.reap(q.cqes[:0])
		for _, c := range q.cqes {
			if c.userData == evTag {
				q.evArmed = false
				q.finishOffloaded()
				continue
			}
			i := int(c.userData - 1)
			if c.res == 0 {
				q.served.Add(1)
				q.srv.wakeGuard()
				q.serve(i)
			} else {
				q.failed(i, unix.Errno(-c.res))
			}
		}
	}
}

// failed handles the failure of entry i's last command.
func (q *queue) failed(i int, errno unix.Errno) {
	e := &q.ents[i]
	switch {
	case errno == unix.ENOTCONN || errno == unix.ECONNABORTED || errno == unix.ECANCELED:
		// Unmounted, or aborted: the entry is done.
	case errno == unix.EAGAIN || errno == unix.EINTR:
		q.command(i, e.cmd, e.commitID)
		return
	case e.cmd == fuseCmdCommitFetch:
		// The kernel dropped the reply (it has ended the request)
		// and kept the entry: hand the buffers back as a new one.
		q.srv.logf("fuseuring: queue %d: commit of request %d: %v", q.qid, e.commitID, errno)
		q.command(i, fuseCmdRegister, 0)
		return
	default:
		q.srv.logf("fuseuring: queue %d: register entry %d: %v", q.qid, i, errno)
	}
	e.dead = true
	q.alive--
}

// finishOffloaded commits the replies of handlers that ran off the queue's
// thread.
func (q *queue) finishOffloaded() {
	q.mu.Lock()
	done := q.done
	q.done = nil
	q.mu.Unlock()
	for _, i := range done {
		q.commit(i)
	}
	if q.alive > 0 {
		q.armEventfd()
	}
}

// commit sends entry i's reply and asks for its next request.
func (q *queue) commit(i int) {
	e := &q.ents[i]
	commit := e.unique.Swap(0)
	q.command(i, fuseCmdCommitFetch, commit)
}

// teardown frees the ring and the buffers; no entry is in the kernel's
// hands any more.
func (q *queue) teardown() {
	if q.r != nil && q.evArmed && q.evfd >= 0 {
		// Let the eventfd read complete before its buffer goes.
		var one [8]byte
		one[0] = 1
		_, _ = unix.Write(q.evfd, one[:])
		for q.evArmed {
			if err := q.r.enter(true); err != nil {
				break
			}
			for _, c := range q.r.reap(q.cqes[:0]) {
				if c.userData == evTag {
					q.evArmed = false
				}
			}
		}
	}
	if q.r != nil {
		q.r.close()
	}
	if q.evfd >= 0 {
		unix.Close(q.evfd)
	}
	if q.mem != nil {
		_ = unix.Munmap(q.mem)
	}
}
