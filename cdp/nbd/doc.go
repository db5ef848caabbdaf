// Package nbd is a small NBD (Network Block Device) server: the capture
// front end that lets QEMU/KVM (-drive file=nbd://…), qemu-img, qemu-io
// and libnbd tools (nbdcopy, nbdinfo, nbdfuse) read and write a protected
// disk. It is written from the protocol document, proto.md of the
// NetworkBlockDevice/nbd project. The consumer (the engine) implements
// Backend, one per export name, and calls Serve.
//
// # Admission
//
// Serve checks every accepted connection before it sends anything:
//
//   - Over a Unix socket, the peer's uid (SO_PEERCRED) must be allowed by
//     Options.AllowUID: by default the server's own effective uid (the
//     socket's owner) and root. ListenUnix makes the socket itself mode
//     0600, so others cannot even connect; the check also covers a socket
//     whose mode or directory lets them in.
//   - At most Options.MaxConns connections (default 64) are served at once
//     and at most Options.MaxHandshakes (default 8) of them may still be
//     in the handshake. A connection beyond either cap is closed at once;
//     the others are not disturbed.
//   - The handshake, TLS included, must have chosen an export within
//     Options.HandshakeTimeout (default 10 s) of accept, however active
//     the client is; then the connection is closed.
//
// Refused and failed connections are logged at most once a second per
// reason, the next line counting those left out, so a flood of them
// cannot flood the log.
//
// # Handshake
//
// Fixed newstyle only, with NBD_FLAG_FIXED_NEWSTYLE and NBD_FLAG_NO_ZEROES.
// Options:
//
//   - NBD_OPT_EXPORT_NAME: the old way in; an unknown export closes the
//     connection, as the option cannot report an error.
//   - NBD_OPT_INFO, NBD_OPT_GO: NBD_INFO_EXPORT, NBD_INFO_BLOCK_SIZE
//     (always sent: minimum Options.MinBlock, default 512; preferred 4096;
//     maximum 32 MiB), NBD_INFO_NAME and NBD_INFO_DESCRIPTION (when asked
//     and the Backend is a Describer). An unknown or refused export is
//     NBD_REP_ERR_UNKNOWN.
//   - NBD_OPT_LIST (Options.List; NBD_REP_ERR_POLICY when nil),
//     NBD_OPT_ABORT, NBD_OPT_STRUCTURED_REPLY.
//   - NBD_OPT_STARTTLS: with Options.TLS set the server runs in FORCEDTLS
//     mode (every other option but NBD_OPT_ABORT gets NBD_REP_ERR_TLS_REQD,
//     NBD_OPT_EXPORT_NAME closes); without it, NBD_REP_ERR_POLICY.
//   - Anything else (metadata contexts, extended headers, …) is
//     NBD_REP_ERR_UNSUP; clients fall back.
//
// Option data is limited to 64 KiB (a longer option closes the
// connection rather than be skipped) and export names to 4096 bytes of
// UTF-8 without NUL.
//
// # Transmission
//
// Flags: HAS_FLAGS, SEND_FLUSH, SEND_FUA, SEND_TRIM, SEND_WRITE_ZEROES,
// SEND_FAST_ZERO, CAN_MULTI_CONN, and SEND_DF once structured replies are
// negotiated. Commands: READ, WRITE, FLUSH, TRIM, WRITE_ZEROES (NO_HOLE
// and FAST_ZERO accepted), DISC. TRIM and WRITE_ZEROES both call
// Backend.Zero, so a trimmed range reads back as zeros. FAST_ZERO
// requests succeed because Backend.Zero writes no content and so is never
// slower than a WRITE of the same zeros.
//
// With structured replies a read answers with one NBD_REPLY_TYPE_OFFSET_DATA
// chunk (or one NBD_REPLY_TYPE_OFFSET_HOLE chunk when it is all zeros),
// flagged DONE; errors are NBD_REPLY_TYPE_ERROR chunks with a message.
// A single chunk per read also satisfies NBD_CMD_FLAG_DF, so EOVERFLOW is
// never needed. Other successes use simple replies, as the protocol allows.
//
// Validation before any backend call (the backend never sees a range
// outside [0, Size)): an unknown command or a flag not valid for the
// command is EINVAL; length 0 is EINVAL; a READ or WRITE longer than
// 32 MiB is EINVAL; a range past the end or overflowing 64 bits is ENOSPC
// for WRITE and WRITE_ZEROES and EINVAL for READ and TRIM; offsets and
// lengths not multiples of the minimum block size are EINVAL (a length
// may end exactly at the export size). TRIM and WRITE_ZEROES carry no
// payload and are not held to the 32 MiB maximum (qemu zeroes a whole
// disk in one request). A refused WRITE's payload is read and dropped, so
// the stream stays framed and nothing is written. A bad request magic or
// a request cut short closes the connection; a WRITE is executed only
// once its whole payload has arrived.
//
// # Ordering and flush
//
// Each connection has one reader. At most 16 requests, holding at most
// 64 MiB of buffers, are in flight per connection; beyond that the reader
// stops reading and TCP pushes back. Reads run concurrently. Writes,
// TRIM, WRITE_ZEROES and FLUSH pass through one FIFO executed by one
// writer goroutine, so a connection's mutations reach the backend in the
// order the client sent them: overlapping writes cannot be reordered
// (qemu-nbd does not promise this; Hindsight's journal wants the client's
// order) and the journal order of one connection is its wire order.
// Replies are sent whole under a mutex, in any order.
//
// A write is acknowledged only after Backend.WriteAt (or Zero) returned.
// FLUSH enters the same FIFO, so when it is executed every mutation the
// connection received before it has returned from the backend; it then
// calls Backend.Flush, which makes durable everything the backend has
// acknowledged, from any connection. That is enough: the protocol asks
// FLUSH to cover the writes already acknowledged to the client, and those
// are a subset of what Backend.Flush covers. A FUA write or zero calls
// Backend.Flush after its own mutation, before its reply. Flushes run in
// goroutines of their own, so later writes do not wait for them.
//
// CAN_MULTI_CONN holds because nothing is cached per connection: every
// write goes straight to the Backend, where it is visible to all readers
// at once, and Backend.Flush is global, so a FLUSH on one connection
// covers writes acknowledged on every connection to the same export (the
// Backends returned for one name must share state; see Backend).
//
// # Shutdown
//
// When Serve's context is done the listener closes, each connection
// stops reading (a request half read is dropped, never half executed),
// requests already read finish and are answered (within 10 s for a client
// that stopped reading), and connections close; Serve returns after the
// last one. NBD_CMD_DISC does the same for one connection.
package nbd
