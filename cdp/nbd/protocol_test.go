package nbd

import (
	"bytes"
	"encoding/binary"
	"runtime"
	"slices"
	"testing"
	"time"
)

const diskSize = 4 << 20

func serveOne(t *testing.T) (*memDisk, string) {
	d := newMemDisk(t, diskSize)
	return d, startServer(t, exports(map[string]*memDisk{"disk": d}))
}

func TestOptionReplies(t *testing.T) {
	_, addr := serveOne(t)
	c := dialRaw(t, addr)
	for _, tc := range []struct {
		opt  uint32
		data []byte
		want uint32
	}{
		{42, []byte("whatever"), repErrUnsup},
		{optList, []byte{1}, repErrInvalid},
		{optStartTLS, nil, repErrPolicy},
		{optStructuredReply, []byte{1}, repErrInvalid},
		{optInfo, []byte{0, 0}, repErrInvalid},
		{optInfo, goData("nope"), repErrUnknown},
		{optGo, goData("nope"), repErrUnknown},
		{optGo, append(goData("disk"), 0), repErrInvalid},
		{optGo, goData("di\x00sk"), repErrInvalid},
	} {
		c.option(tc.opt, tc.data)
		opt, typ, _ := c.optReply()
		if opt != tc.opt || typ != tc.want {
			t.Errorf("option %d % x: reply %d/%#x, want %#x", tc.opt, tc.data, opt, typ, tc.want)
		}
	}
	c.option(optList, nil)
	var names []string
	for {
		_, typ, data := c.optReply()
		if typ != repServer {
			break
		}
		names = append(names, string(data[4:]))
	}
	if !slices.Equal(names, []string{"disk"}) {
		t.Errorf("LIST = %q", names)
	}
	// INFO leaves the handshake open; GO then enters transmission.
	c.option(optInfo, goData("disk", infoName, infoDescription))
	seen := map[uint16]string{}
	for {
		_, typ, data := c.optReply()
		if typ != repInfo {
			if typ != repAck {
				t.Fatalf("INFO ended with %#x", typ)
			}
			break
		}
		seen[binary.BigEndian.Uint16(data)] = string(data[2:])
	}
	if seen[infoName] != "disk" || seen[infoDescription] != "in-memory model" || len(seen[infoBlockSize]) != 12 {
		t.Errorf("INFO replies %v", seen)
	}
	typ, size, flags := c.goExport("disk")
	if typ != repAck || size != diskSize || flags != transmissionFlags(false) {
		t.Fatalf("GO: %#x size %d flags %#x", typ, size, flags)
	}
}

func TestExportNameRefusedCloses(t *testing.T) {
	_, addr := serveOne(t)
	c := dialRaw(t, addr)
	c.option(optExportName, []byte("nope"))
	c.expectClosed()

	c = dialRaw(t, addr)
	c.option(optExportName, []byte("disk"))
	var b [10]byte
	c.readFull(b[:])
	if binary.BigEndian.Uint64(b[:]) != diskSize {
		t.Fatalf("EXPORT_NAME reply % x", b)
	}
	c.request(cmdDisc, 0, 1, 0, 0, nil)
	c.expectClosed()
}

func TestOversizedOptionCloses(t *testing.T) {
	_, addr := serveOne(t)
	c := dialRaw(t, addr)
	b := binary.BigEndian.AppendUint64(nil, magicOpt)
	b = binary.BigEndian.AppendUint32(b, optGo)
	b = binary.BigEndian.AppendUint32(b, maxOptionLen+1)
	c.write(b)
	c.expectClosed()
}

func TestOutOfRangeRequests(t *testing.T) {
	for _, structured := range []bool{false, true} {
		d, addr := serveOne(t)
		c := dialRaw(t, addr)
		if structured {
			c.structured()
		}
		if typ, _, _ := c.goExport("disk"); typ != repAck {
			t.Fatalf("GO: %#x", typ)
		}
		for i, tc := range []struct {
			typ, flags uint16
			off        uint64
			length     uint32
			payload    bool
			want       uint32
		}{
			{cmdWrite, 0, diskSize - 512, 1024, true, errnoNoSpace},
			{cmdWrite, 0, 1<<64 - 512, 1024, true, errnoNoSpace},
			{cmdWrite, 0, 0, 0, false, errnoInval},
			{cmdWrite, 0, 0, 100, true, errnoInval},                 // misaligned
			{cmdWrite, cmdFlagNoHole, 0, 512, true, errnoInval},     // flag of another command
			{cmdWrite, 0, 0, maxBlock + 512, true, errnoInval},      // too long, payload skipped
			{cmdRead, 0, diskSize, 512, false, errnoInval},          // past the end
			{cmdRead, 0, 0, maxBlock + 512, false, errnoInval},      // too long
			{cmdTrim, 0, diskSize - 512, 4096, false, errnoInval},   // past the end
			{cmdWriteZeroes, 0, diskSize, 512, false, errnoNoSpace}, // past the end
			{cmdFlush, 0, 1, 0, false, errnoInval},
			{99, 0, 0, 512, false, errnoInval},
		} {
			var p []byte
			if tc.payload {
				p = fill(int(tc.length), 0xee)
			}
			h := uint64(100 + i)
			c.request(tc.typ, tc.flags, h, tc.off, tc.length, p)
			var r chunk
			if structured {
				r = c.reply()
				if r.typ != replyTypeError || r.flags&replyFlagDone == 0 {
					t.Errorf("case %d: structured reply type %#x flags %#x", i, r.typ, r.flags)
				}
			} else {
				r.errno, r.handle = c.simpleReply()
			}
			if r.errno != tc.want || r.handle != h {
				t.Errorf("case %d (structured=%v): errno %d handle %d, want %d", i, structured, r.errno, r.handle, tc.want)
			}
		}
		// The stream is still framed: a valid write and read work.
		c.request(cmdWrite, 0, 1, 512, 512, fill(512, 0x5a))
		if e, h := c.simpleReply(); e != 0 || h != 1 {
			t.Fatalf("write: errno %d handle %d", e, h)
		}
		data, log := d.snapshot()
		if !bytes.Equal(data[512:1024], fill(512, 0x5a)) || bytes.Count(data, []byte{0xee}) != 0 {
			t.Fatal("model holds refused data")
		}
		if !slices.Equal(log, []string{"W 512 512"}) {
			t.Fatalf("backend calls %q", log)
		}
	}
}

func TestStructuredRead(t *testing.T) {
	d, addr := serveOne(t)
	copy(d.data[4096:], fill(4096, 7))
	c := dialRaw(t, addr)
	c.structured()
	if typ, _, flags := c.goExport("disk"); typ != repAck || flags&tflagSendDF == 0 {
		t.Fatalf("GO: %#x flags %#x", typ, flags)
	}
	c.request(cmdRead, cmdFlagDF, 1, 4096, 4096, nil)
	r := c.reply()
	if r.typ != replyTypeOffsetData || r.flags != replyFlagDone || binary.BigEndian.Uint64(r.payload) != 4096 ||
		!bytes.Equal(r.payload[8:], fill(4096, 7)) {
		t.Fatalf("data chunk type %d flags %d, %d bytes", r.typ, r.flags, len(r.payload))
	}
	c.request(cmdRead, 0, 2, 0, 4096, nil)
	r = c.reply()
	if r.typ != replyTypeOffsetHole || binary.BigEndian.Uint32(r.payload[8:]) != 4096 {
		t.Fatalf("hole chunk type %d payload % x", r.typ, r.payload)
	}
}

func TestBadMagicCloses(t *testing.T) {
	d, addr := serveOne(t)
	c := dialRaw(t, addr)
	c.goExport("disk")
	b := make([]byte, requestLen+512)
	binary.BigEndian.PutUint32(b, 0xdeadbeef)
	binary.BigEndian.PutUint16(b[6:], cmdWrite)
	binary.BigEndian.PutUint32(b[24:], 512)
	c.write(b)
	c.expectClosed()
	if _, log := d.snapshot(); len(log) != 0 {
		t.Fatalf("backend calls %q", log)
	}
}

func TestTruncatedWriteIsDropped(t *testing.T) {
	d, addr := serveOne(t)
	c := dialRaw(t, addr)
	c.goExport("disk")
	c.request(cmdWrite, 0, 1, 0, 4096, fill(1000, 0xcc))
	c.nc.(interface{ CloseWrite() error }).CloseWrite()
	c.expectClosed()
	if data, log := d.snapshot(); len(log) != 0 || bytes.Count(data, []byte{0xcc}) != 0 {
		t.Fatalf("backend calls %q", log)
	}
}

// Overlapping pipelined writes land in arrival order even when the first
// is slow, and a FLUSH sent after them runs after both returned.
func TestWritesKeepOrderAndFlushFollows(t *testing.T) {
	d, addr := serveOne(t)
	d.beforeWrite = func(off int64, p []byte) {
		if p[0] == 1 {
			time.Sleep(200 * time.Millisecond)
		}
	}
	c := dialRaw(t, addr)
	c.goExport("disk")
	c.request(cmdWrite, 0, 1, 0, 8192, fill(8192, 1))
	c.request(cmdWrite, 0, 2, 4096, 4096, fill(4096, 2))
	c.request(cmdFlush, 0, 3, 0, 0, nil)
	c.request(cmdWrite, cmdFlagFUA, 4, 16384, 512, fill(512, 3))
	got := map[uint64]bool{}
	for range 4 {
		e, h := c.simpleReply()
		if e != 0 {
			t.Fatalf("handle %d: errno %d", h, e)
		}
		got[h] = true
	}
	data, log := d.snapshot()
	if !bytes.Equal(data[:4096], fill(4096, 1)) || !bytes.Equal(data[4096:8192], fill(4096, 2)) {
		t.Fatal("overlapping writes reordered")
	}
	// Both writes precede every flush; the FUA write is followed by one.
	if len(log) != 5 || log[0] != "W 0 8192" || log[1] != "W 4096 4096" {
		t.Fatalf("backend calls %q", log)
	}
	if i := slices.Index(log, "W 16384 512"); i < 2 || !slices.Contains(log[i+1:], "F") {
		t.Fatalf("FUA write not flushed: %q", log)
	}
}

// A FLUSH on one connection covers a write acknowledged on another: the
// write has returned from the backend before its reply, and Backend.Flush
// is global (the reason for NBD_FLAG_CAN_MULTI_CONN).
func TestFlushCoversOtherConnections(t *testing.T) {
	d, addr := serveOne(t)
	a, b := dialRaw(t, addr), dialRaw(t, addr)
	for _, c := range []*rawClient{a, b} {
		if typ, _, flags := c.goExport("disk"); typ != repAck || flags&tflagCanMultiConn == 0 {
			t.Fatalf("GO: %#x flags %#x", typ, flags)
		}
	}
	a.request(cmdWrite, 0, 1, 0, 4096, fill(4096, 1))
	if e, _ := a.simpleReply(); e != 0 {
		t.Fatalf("write: errno %d", e)
	}
	b.request(cmdFlush, 0, 2, 0, 0, nil)
	if e, _ := b.simpleReply(); e != 0 {
		t.Fatalf("flush: errno %d", e)
	}
	if _, log := d.snapshot(); !slices.Equal(log, []string{"W 0 4096", "F"}) {
		t.Fatalf("backend calls %q", log)
	}
}

// Shutdown lets a request in flight finish and be answered, then closes
// every connection (TLS ones included, whether haggling or idle); no
// goroutine is left behind.
func TestShutdownFinishesInFlight(t *testing.T) {
	before := runtime.NumGoroutine()
	func() {
		d := newMemDisk(t, diskSize)
		release := make(chan struct{})
		started := make(chan struct{})
		d.beforeWrite = func(int64, []byte) { close(started); <-release }
		opt := exports(map[string]*memDisk{"disk": d})
		_, serverTLS, clientTLS := testPKI(t)
		opt.TLS = serverTLS
		stop := startServerCancel(t, opt)
		c := dialRaw(t, stop.addr) // over TLS, with a write in flight
		c.startTLS(clientTLS)
		c.goExport("disk")
		idle := dialRaw(t, stop.addr) // a second client, still haggling
		tc := dialRaw(t, stop.addr)   // a third, idle in transmission
		tc.startTLS(clientTLS)
		tc.goExport("disk")
		c.request(cmdWrite, 0, 7, 0, 512, fill(512, 9))
		<-started
		stop.cancel()
		time.Sleep(50 * time.Millisecond)
		close(release)
		if e, h := c.simpleReply(); e != 0 || h != 7 {
			t.Fatalf("in-flight write: errno %d handle %d", e, h)
		}
		c.expectClosed()
		idle.expectClosed()
		tc.expectClosed()
		if err := stop.wait(); err != nil {
			t.Fatalf("Serve: %v", err)
		}
		if data, _ := d.snapshot(); !bytes.Equal(data[:512], fill(512, 9)) {
			t.Fatal("in-flight write lost")
		}
		c.nc.Close()
		idle.nc.Close()
		tc.nc.Close()
	}()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		buf := make([]byte, 1<<16)
		t.Fatalf("%d goroutines before, %d after:\n%s", before, n, buf[:runtime.Stack(buf, true)])
	}
}
