// Package fuseuring serves a go-fuse RawFileSystem over FUSE's io_uring
// transport (Linux 6.14 and later, CONFIG_FUSE_IO_URING, switched on by
// /sys/module/fuse/parameters/enable_uring), so that a request is answered
// on the CPU that issued it, without waking another CPU.
//
// Over /dev/fuse, a request written on one CPU is read by whichever server
// thread waits, usually on another CPU, and the reply wakes the client
// from there: two cross-CPU wakeups a request, each an IPI, which in a VM
// costs more than the request itself. Over io_uring the kernel keeps one
// queue per CPU and puts a request on the queue of the CPU that issued it;
// the thread serving that queue, pinned to that CPU, is woken there.
//
// # Connection
//
// Mount opens /dev/fuse itself and mounts it with mount(2) (fd=N), so it
// owns the device. The INIT request still comes over /dev/fuse: go-fuse's
// protocol code answers it, asked by ExtraCapabilities to accept
// FUSE_OVER_IO_URING (bit 41 of the 64-bit flags, in flags2), which the
// kernel offers only while the switch is on. go-fuse's protocol minor
// version (7.28) is no obstacle: the kernel looks only at that flag. Then
// one queue per possible CPU registers its ring entries; the kernel holds
// every request until each queue has one, then sends all but FORGET and
// INTERRUPT over the rings. Those two keep coming over /dev/fuse, where a
// reader goroutine hands them to the same protocol code. Notifications
// (go-fuse's Inode.Notify*) are not supported.
//
// Every request, whichever way it came, goes through one
// fuse.ProtocolServer over the RawFileSystem (fs.NewNodeFS returns one):
// the same parsing, dispatch, cancellation and reply encoding as go-fuse's
// own server, fed byte streams instead of a device.
//
// # Ring entries
//
// Each entry is a header and a payload buffer, registered with the kernel
// by IORING_OP_URING_CMD with FUSE_IO_URING_CMD_REGISTER and an iovec pair.
// The header is struct fuse_uring_req_header:
//
//	offset  size
//	     0   128  in_out: fuse_in_header (40 bytes) in, fuse_out_header (16) out
//	   128   128  op_in: the request's first argument (fuse_write_in, ...)
//	   256     8  ring_ent_in_out.flags
//	   264     8  ring_ent_in_out.commit_id: the request's unique
//	   272     4  ring_ent_in_out.payload_sz: bytes in the payload, either way
//	   276    12  padding, reserved
//
// The payload holds the rest of a request (names, write data) and, on the
// way back, every output argument; it is at least
// max(8 KiB, max_write, max_pages pages), or REGISTER fails. The first
// argument's size is the header's len less 40 less payload_sz; header, first
// argument and payload joined are what a read of /dev/fuse would return.
// The reply is committed with FUSE_IO_URING_CMD_COMMIT_AND_FETCH, which
// also hands the entry back for the next request. The command data sit in
// the 80-byte command area of a 128-byte SQE (IORING_SETUP_SQE128), as
// struct fuse_uring_cmd_req: flags u64, commit_id u64, qid u16.
//
// A queue's memory is one anonymous mapping outside the Go heap: 512 bytes
// per entry (its header, then the two iovecs REGISTER points at) and the
// eventfd counter, rounded to a page, then the page-aligned payloads.
//
// # Threads and CPUs
//
// A queue is a goroutine locked to its thread (never unlocked, so the
// thread ends with it), pinned to its CPU, owning an io_uring with
// IORING_SETUP_SINGLE_ISSUER and DEFER_TASKRUN: the kernel's work of copying
// a request into an entry runs in that thread as it waits. Requests are
// served on that thread, except those that may wait for storage (FSYNC,
// FSYNCDIR, FLUSH, FALLOCATE), which run on a goroutine of their own so the
// CPU's other requests go on; their replies come back through an eventfd
// the ring reads.
//
// Queue threads run at SCHED_IDLE, with a guard that gives a starved one
// its normal priority back for a while (see sched.go): a synchronous client
// woken by a reply from a normal thread on its own CPU is moved to an idle
// CPU, and every request after pays a cross-CPU wakeup. Measured here (2
// vCPUs, a no-op file, fio 4 KiB psync random writes with an fsync every
// 64, medians): 58k requests/s at SCHED_IDLE, 26k at normal priority, 22k
// over /dev/fuse with go-fuse's server, 70k on a plain ext4 file. The
// guard's price is the onset of contention: a starved queue waits up to
// one guard tick (5 to 100 ms), and a Go stop-the-world that finds a queue
// thread starved in Go code waits as long.
//
// Each queue thread keeps a Go P while it waits in io_uring_enter (a
// syscall). The program needs one P more per queue than it would otherwise
// use, or its other goroutines, offloaded requests included, wait for the
// runtime to take a P back (milliseconds); fs/fusesrv raises GOMAXPROCS for
// the life of a mount.
//
// # Teardown
//
// Unmounting, from Unmount or from outside, aborts the connection: the
// kernel completes each waiting entry with ENOTCONN, a commit of an entry
// being served fails the same way, and /dev/fuse reads return ENODEV, on
// which the reader cancels the requests still being served (as go-fuse
// does when the connection dies). A queue stops when all its entries are
// done, then frees its ring and buffers; Wait returns when every queue,
// the reader and every handler have returned.
//
// # Limits
//
// A handler must not use its own mount: the request would wait for the
// queue thread that runs the handler. Requests are served on one thread
// per CPU, so a slow READ or WRITE holds that CPU's other requests. A
// process that serves a mount must not open its files through os.OpenFile
// from more goroutines than it has Ps: Go registers the fd with epoll,
// which makes the kernel send FUSE_POLL while the opening thread holds its
// P (go-fuse's server shares this). Root only (the mount is direct).
package fuseuring
