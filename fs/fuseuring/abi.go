package fuseuring

// Kernel ABI of io_uring (include/uapi/linux/io_uring.h) and of FUSE over
// io_uring (include/uapi/linux/fuse.h, protocol 7.42 to 7.45), as offsets
// into the shared memory rather than Go structs: the kernel reads and writes
// these bytes while Go code runs, so they are accessed only at fixed offsets.

// io_uring_setup flags, io_uring_enter flags, opcodes.
const (
	setupCQSize       = 1 << 3
	setupSubmitAll    = 1 << 7
	setupSQE128       = 1 << 10 // FUSE commands need the 80-byte command area
	setupSingleIssuer = 1 << 12
	setupDeferTaskrun = 1 << 13

	featSingleMmap = 1 << 0

	enterGetEvents = 1 << 0

	opRead     = 22 // IORING_OP_READ
	opURingCmd = 46 // IORING_OP_URING_CMD

	sqeFixedFile = 1 << 0 // IOSQE_FIXED_FILE: fd is an index into registered files

	registerFiles = 2 // IORING_REGISTER_FILES

	offSQRing = 0
	offSQEs   = 0x10000000
)

// struct io_uring_params: 40 bytes of fields, then io_sqring_offsets and
// io_cqring_offsets, 40 bytes each.
const (
	paramsSize         = 120
	paramSQEntries     = 0
	paramCQEntries     = 4
	paramFlags         = 8
	paramFeatures      = 20
	paramSQOff         = 40
	paramCQOff         = 80
	ringOffHead        = 0 // within io_sqring_offsets and io_cqring_offsets
	ringOffTail        = 4
	ringOffMask        = 8
	ringOffEntries     = 12
	sqOffArray         = 24 // io_sqring_offsets.array
	cqOffCQEs          = 20 // io_cqring_offsets.cqes
	cqeSize            = 16 // user_data u64, res s32, flags u32
	sqeSize            = 128
	sqeOpcode          = 0
	sqeFlags           = 1
	sqeFd              = 4
	sqeCmdOp           = 8 // u32, in the union with off
	sqeAddr            = 16
	sqeLen             = 24
	sqeUserData        = 32
	sqeCmd             = 48 // 80 bytes of command data with SQE128
	cmdReqCommitID     = sqeCmd + 8
	cmdReqQID          = sqeCmd + 16
	fuseCmdRegister    = 1 // FUSE_IO_URING_CMD_REGISTER
	fuseCmdCommitFetch = 2 // FUSE_IO_URING_CMD_COMMIT_AND_FETCH
)

// struct fuse_uring_req_header, one per ring entry:
//
//	in_out[128]        fuse_in_header from the kernel, fuse_out_header back
//	op_in[128]         the request's first argument (fuse_write_in, ...)
//	ring_ent_in_out    flags u64, commit_id u64, payload_sz u32, padding u32, reserved u64
//
// The rest of a request (names, write data) is in the entry's payload
// buffer, payload_sz bytes; a reply puts every output argument there and
// sets payload_sz.
const (
	hdrInOut       = 0
	hdrOpIn        = 128
	hdrEntInOut    = 256
	hdrCommitID    = hdrEntInOut + 8
	hdrPayloadSize = hdrEntInOut + 16
	hdrSize        = 288

	opInMax      = 128
	inHeaderSize = 40 // struct fuse_in_header
	outHdrSize   = 16 // struct fuse_out_header

	// minPayload is FUSE_MIN_READ_BUFFER: the kernel refuses payload
	// buffers smaller than max(this, max_write, max_pages * page size).
	minPayload = 8192

	capOverIOURing = 1 << 41 // FUSE_OVER_IO_URING, bit 9 of flags2
)

// fuse_in_header fields.
const (
	inLen    = 0
	inOpcode = 4
	inUnique = 8
)

// Opcodes the /dev/fuse loop treats specially.
const (
	opcodeForget      = 2
	opcodeInit        = 26
	opcodeInterrupt   = 36
	opcodeBatchForget = 42
)

// ringFlags are the io_uring_setup flags of a queue's ring: one thread
// submits, and completion work (copying a request into an entry) runs when
// that thread waits for completions, on its own CPU.
const ringFlags = setupSingleIssuer | setupDeferTaskrun
