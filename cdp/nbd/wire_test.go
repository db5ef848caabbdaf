package nbd

import (
	"encoding/binary"
	"errors"
	"testing"
)

func requestBytes(r request) []byte {
	b := binary.BigEndian.AppendUint32(nil, magicRequest)
	b = binary.BigEndian.AppendUint16(b, r.flags)
	b = binary.BigEndian.AppendUint16(b, r.typ)
	b = binary.BigEndian.AppendUint64(b, r.handle)
	b = binary.BigEndian.AppendUint64(b, r.off)
	return binary.BigEndian.AppendUint32(b, r.length)
}

func TestValidate(t *testing.T) {
	g := geometry{size: 1 << 20, minBlock: 512}
	for _, tc := range []struct {
		r    request
		want uint32
	}{
		{request{typ: cmdRead, off: 0, length: 4096}, 0},
		{request{typ: cmdRead, off: 1<<20 - 512, length: 512}, 0},
		{request{typ: cmdRead, flags: cmdFlagFUA, length: 512}, 0},
		{request{typ: cmdRead, flags: cmdFlagDF, length: 512}, errnoInval}, // DF needs structured replies
		{request{typ: cmdRead, off: 1 << 20, length: 512}, errnoInval},
		{request{typ: cmdRead, off: 1<<64 - 512, length: 1024}, errnoInval},
		{request{typ: cmdRead, length: 0}, errnoInval},
		{request{typ: cmdRead, off: 1, length: 512}, errnoInval},
		{request{typ: cmdWrite, off: 1<<20 - 512, length: 1024}, errnoNoSpace},
		{request{typ: cmdWrite, length: maxBlock + 512}, errnoInval},
		{request{typ: cmdWrite, length: 512, flags: cmdFlagFastZero}, errnoInval},
		{request{typ: cmdWriteZeroes, length: 1 << 20, flags: cmdFlagNoHole | cmdFlagFastZero | cmdFlagFUA}, 0},
		{request{typ: cmdWriteZeroes, off: 512, length: 1 << 20}, errnoNoSpace},
		{request{typ: cmdTrim, off: 512, length: 1 << 20}, errnoInval},
		{request{typ: cmdTrim, length: 1 << 20}, 0},
		{request{typ: cmdFlush}, 0},
		{request{typ: cmdFlush, length: 1}, errnoInval},
		{request{typ: 5, length: 512}, errnoInval},    // CACHE: not offered
		{request{typ: 7, length: 512}, errnoInval},    // BLOCK_STATUS: not negotiated
		{request{typ: 0xffff, length: 0}, errnoInval}, // unknown
	} {
		if got, msg := g.validate(tc.r); got != tc.want || (got != 0) != (msg != "") {
			t.Errorf("validate(%+v) = %d %q, want %d", tc.r, got, msg, tc.want)
		}
	}
	// A length may end exactly at an unaligned export size.
	g = geometry{size: 1000, minBlock: 512}
	if e, _ := g.validate(request{typ: cmdRead, off: 512, length: 488}); e != 0 {
		t.Errorf("unaligned tail: %d", e)
	}
}

func FuzzParseRequest(f *testing.F) {
	f.Add(requestBytes(request{typ: cmdRead, handle: 1, length: 4096}), uint64(1<<20), false)
	f.Add(requestBytes(request{typ: cmdWrite, flags: cmdFlagFUA, off: 1 << 19, length: 1 << 19}), uint64(1<<20), true)
	f.Add(requestBytes(request{typ: cmdWriteZeroes, flags: 0x13, off: 1<<64 - 512, length: 1024}), uint64(1<<20), false)
	f.Add(requestBytes(request{typ: cmdFlush}), uint64(0), true)
	f.Add([]byte{0xde, 0xad, 0xbe, 0xef}, uint64(512), false)
	f.Fuzz(func(t *testing.T, b []byte, size uint64, structured bool) {
		r, err := parseRequest(b)
		switch {
		case len(b) < requestLen:
			if err == nil {
				t.Fatal("short header accepted")
			}
			return
		case binary.BigEndian.Uint32(b) != magicRequest:
			if !errors.Is(err, errBadRequestMagic) {
				t.Fatalf("bad magic: %v", err)
			}
			return
		case err != nil:
			t.Fatal(err)
		}
		if got := requestBytes(r); string(got) != string(b[:requestLen]) {
			t.Fatalf("round trip % x != % x", got, b[:requestLen])
		}
		size &= 1<<63 - 1 // a Backend's Size is an int64
		g := geometry{size: size, minBlock: 512, structured: structured}
		errno, msg := g.validate(r)
		if errno != 0 {
			if msg == "" || (errno != errnoInval && errno != errnoNoSpace) {
				t.Fatalf("errno %d msg %q", errno, msg)
			}
			return
		}
		// Accepted: the backend call it leads to is in range.
		switch r.typ {
		case cmdFlush, cmdDisc:
			if r.off != 0 || r.length != 0 {
				t.Fatalf("accepted %+v", r)
			}
			return
		case cmdRead, cmdWrite:
			if r.length > maxBlock {
				t.Fatalf("accepted length %d", r.length)
			}
		case cmdTrim, cmdWriteZeroes:
		default:
			t.Fatalf("accepted command %d", r.typ)
		}
		end := r.off + uint64(r.length)
		if r.length == 0 || end < r.off || end > size || r.off%512 != 0 {
			t.Fatalf("accepted out-of-range %+v for size %d", r, size)
		}
	})
}

func FuzzParseInfoRequest(f *testing.F) {
	f.Add(goData("disk", infoBlockSize, infoName))
	f.Add(goData(""))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		req, err := parseInfoRequest(data)
		if err != nil {
			return
		}
		if len(req.name) > maxNameLen || string(goData(req.name, req.infos...)) != string(data) {
			t.Fatalf("accepted %q as %+v", data, req)
		}
	})
}
