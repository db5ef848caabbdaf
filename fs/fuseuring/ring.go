package fuseuring

import (
	"encoding/binary"
	"fmt"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ring is one io_uring instance with 128-byte SQEs, used by one thread.
type ring struct {
	fd      int
	sqMem   []byte // SQ and CQ rings (one mapping: IORING_FEAT_SINGLE_MMAP)
	sqes    []byte
	sqHead  *uint32
	sqTail  *uint32
	sqMask  uint32
	sqN     uint32
	cqHead  *uint32
	cqTail  *uint32
	cqMask  uint32
	cqes    []byte
	pending uint32 // SQEs written but not yet submitted
}

// newRing sets up a ring of at least entries SQEs. flags are extra
// io_uring_setup flags; SQE128 is always set.
func newRing(entries uint32, flags uint32) (*ring, error) {
	var p [paramsSize]byte
	le := binary.LittleEndian
	le.PutUint32(p[paramFlags:], flags|setupSQE128|setupCQSize|setupSubmitAll)
	le.PutUint32(p[paramCQEntries:], 2*entries)
	fd, _, errno := unix.Syscall(unix.SYS_IO_URING_SETUP, uintptr(entries), uintptr(unsafe.Pointer(&p[0])), 0)
	if errno != 0 {
		return nil, fmt.Errorf("io_uring_setup: %w", errno)
	}
	r := &ring{fd: int(fd)}
	if le.Uint32(p[paramFeatures:])&featSingleMmap == 0 {
		r.close()
		return nil, fmt.Errorf("io_uring_setup: kernel lacks IORING_FEAT_SINGLE_MMAP")
	}
	sqN := le.Uint32(p[paramSQEntries:])
	cqN := le.Uint32(p[paramCQEntries:])
	sq := func(off int) uint32 { return le.Uint32(p[paramSQOff+off:]) }
	cq := func(off int) uint32 { return le.Uint32(p[paramCQOff+off:]) }
	size := max(sq(sqOffArray)+4*sqN, cq(cqOffCQEs)+cqeSize*cqN)
	var err error
	r.sqMem, err = unix.Mmap(r.fd, offSQRing, int(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		r.close()
		return nil, fmt.Errorf("mmap io_uring rings: %w", err)
	}
	r.sqes, err = unix.Mmap(r.fd, offSQEs, int(sqN*sqeSize), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		r.close()
		return nil, fmt.Errorf("mmap io_uring SQEs: %w", err)
	}
	u32 := func(off uint32) *uint32 { return (*uint32)(unsafe.Pointer(&r.sqMem[off])) }
	r.sqHead, r.sqTail = u32(sq(ringOffHead)), u32(sq(ringOffTail))
	r.sqMask, r.sqN = *u32(sq(ringOffMask)), sqN
	r.cqHead, r.cqTail = u32(cq(ringOffHead)), u32(cq(ringOffTail))
	r.cqMask = *u32(cq(ringOffMask))
	r.cqes = r.sqMem[cq(cqOffCQEs) : cq(cqOffCQEs)+cqeSize*cqN]
	// The SQ array maps ring slots to SQE indexes; ours is the identity.
	arr := sq(sqOffArray)
	for i := range sqN {
		*u32(arr + 4*i) = i
	}
	return r, nil
}

// registerFile makes fd the ring's fixed file 0.
func (r *ring) registerFile(fd int) error {
	fds := [1]int32{int32(fd)}
	_, _, errno := unix.Syscall6(unix.SYS_IO_URING_REGISTER, uintptr(r.fd), registerFiles, uintptr(unsafe.Pointer(&fds[0])), 1, 0, 0)
	if errno != 0 {
		return fmt.Errorf("io_uring_register files: %w", errno)
	}
	return nil
}

// sqe returns the next free SQE, zeroed, or nil when the SQ is full.
func (r *ring) sqe() []byte {
	head := atomic.LoadUint32(r.sqHead)
	tail := *r.sqTail + r.pending
	if tail-head >= r.sqN {
		return nil
	}
	off := (tail & r.sqMask) * sqeSize
	s := r.sqes[off : off+sqeSize : off+sqeSize]
	clear(s)
	r.pending++
	return s
}

// enter publishes the pending SQEs and, if wait, blocks until at least one
// CQE is there. EINTR is retried.
func (r *ring) enter(wait bool) error {
	n := r.pending
	if n > 0 {
		atomic.StoreUint32(r.sqTail, *r.sqTail+n)
		r.pending = 0
	}
	var flags, minComplete uintptr
	if wait {
		flags, minComplete = enterGetEvents, 1
	}
	if n == 0 && !wait {
		return nil
	}
	for {
		// With IORING_SETUP_SUBMIT_ALL every SQE is consumed; an
		// error is reported with nothing submitted, so a retry
		// submits the same ones.
		_, _, errno := unix.Syscall6(unix.SYS_IO_URING_ENTER, uintptr(r.fd), uintptr(n), minComplete, flags, 0, 0)
		if errno == unix.EINTR {
			continue
		}
		if errno != 0 {
			return fmt.Errorf("io_uring_enter: %w", errno)
		}
		return nil
	}
}

// cqe is a completion.
type cqe struct {
	userData uint64
	res      int32
}

// reap appends the completions that are ready to dst and consumes them.
func (r *ring) reap(dst []cqe) []cqe {
	head := *r.cqHead
	tail := atomic.LoadUint32(r.cqTail)
	le := binary.LittleEndian
	for ; head != tail; head++ {
		off := (head & r.cqMask) * cqeSize
		c := r.cqes[off : off+cqeSize]
		dst = append(dst, cqe{userData: le.Uint64(c), res: int32(le.Uint32(c[8:]))})
	}
	atomic.StoreUint32(r.cqHead, head)
	return dst
}

// close unmaps the rings and closes the ring fd, which cancels every
// request still in flight.
func (r *ring) close() {
	if r.sqes != nil {
		_ = unix.Munmap(r.sqes)
		r.sqes = nil
	}
	if r.sqMem != nil {
		_ = unix.Munmap(r.sqMem)
		r.sqMem = nil
	}
	if r.fd >= 0 {
		_ = unix.Close(r.fd)
		r.fd = -1
	}
}
