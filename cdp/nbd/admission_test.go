package nbd

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// logRecorder keeps the server's log lines for the test to count.
type logRecorder struct {
	t     testing.TB
	mu    sync.Mutex
	lines []string
}

func newLogRecorder(t testing.TB) *logRecorder { return &logRecorder{t: t} }

func (r *logRecorder) logf(f string, a ...any) {
	line := fmt.Sprintf(f, a...)
	r.mu.Lock()
	r.lines = append(r.lines, line)
	r.mu.Unlock()
	r.t.Log(line)
}

// matching returns the lines that contain sub.
func (r *logRecorder) matching(sub string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, l := range r.lines {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return out
}

// closedWithin waits for the server to close nc (after whatever it sends)
// and returns how long that took from since; it fails the test if the
// connection is still open after max.
func closedWithin(t *testing.T, nc net.Conn, since time.Time, max time.Duration) time.Duration {
	t.Helper()
	nc.SetReadDeadline(since.Add(max))
	_, err := io.Copy(io.Discard, nc)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("connection still open %v after it was made", max)
	}
	return time.Since(since)
}

// expectRefused dials and checks that the server closes the connection at
// once without sending anything (not even the greeting).
func expectRefused(t *testing.T, network, addr string) {
	t.Helper()
	nc, err := net.DialTimeout(network, addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.SetReadDeadline(time.Now().Add(3 * time.Second))
	b, err := io.ReadAll(nc)
	var ne net.Error
	switch {
	case len(b) != 0:
		t.Fatalf("a connection beyond the cap got %d bytes (% x…): it was served", len(b), b[:min(len(b), 8)])
	case errors.As(err, &ne) && ne.Timeout():
		t.Fatal("a connection beyond the cap was left open")
	}
}

// greeted reports whether a new connection gets the server's greeting, i.e.
// was admitted.
func greeted(network, addr string) bool {
	nc, err := net.DialTimeout(network, addr, 5*time.Second)
	if err != nil {
		return false
	}
	defer nc.Close()
	nc.SetReadDeadline(time.Now().Add(3 * time.Second))
	var g [8]byte
	_, err = io.ReadFull(nc, g[:])
	return err == nil && binary.BigEndian.Uint64(g[:]) == magicNBD
}

// writeRead writes 4 KiB of c at off on an established connection and
// reads it back; both must succeed.
func writeRead(t *testing.T, cl *rawClient, off uint64, c byte) {
	t.Helper()
	cl.request(cmdWrite, 0, 1, off, 4096, fill(4096, c))
	if e, h := cl.simpleReply(); e != 0 || h != 1 {
		t.Fatalf("write on an established connection: errno %d handle %d", e, h)
	}
	cl.request(cmdRead, 0, 2, off, 4096, nil)
	if e, h := cl.simpleReply(); e != 0 || h != 2 {
		t.Fatalf("read on an established connection: errno %d handle %d", e, h)
	}
	got := make([]byte, 4096)
	cl.readFull(got)
	if !bytes.Equal(got, fill(4096, c)) {
		t.Fatal("read on an established connection returned other data")
	}
}

// A client that has not chosen an export when the handshake deadline
// passes is disconnected, whether it is silent or keeps sending options;
// a client that chose one in time is not held to the deadline.
func TestHandshakeDeadline(t *testing.T) {
	const timeout = 300 * time.Millisecond
	d := newMemDisk(t, mib)
	rec := newLogRecorder(t)
	opt := exports(map[string]*memDisk{"disk": d})
	opt.HandshakeTimeout, opt.Logf = timeout, rec.logf
	addr := startServer(t, opt)

	start := time.Now()
	mute, err := net.Dial("tcp", addr) // reads nothing, sends nothing
	if err != nil {
		t.Fatal(err)
	}
	defer mute.Close()
	silent := dialRaw(t, addr) // greeted, sent its flags, then nothing
	chatty := dialRaw(t, addr)
	established := dialRaw(t, addr)
	if typ, _, _ := established.goExport("disk"); typ != repAck {
		t.Fatalf("NBD_OPT_GO: reply %#x", typ)
	}

	// The chatty client lists exports every 50 ms: activity does not
	// extend the deadline.
	var exchanges int
	for {
		if time.Since(start) > 5*time.Second {
			t.Fatalf("a client haggling for 5 s was not disconnected (deadline %v)", timeout)
		}
		b := binary.BigEndian.AppendUint64(nil, magicOpt)
		b = binary.BigEndian.AppendUint32(b, optList)
		b = binary.BigEndian.AppendUint32(b, 0)
		chatty.nc.Write(b)
		if err := readListReply(chatty); err != nil {
			break
		}
		exchanges++
		time.Sleep(50 * time.Millisecond)
	}
	if took := time.Since(start); took < timeout || exchanges < 2 {
		t.Fatalf("chatty client dropped after %v and %d exchanges; want after %v", took, exchanges, timeout)
	}
	for name, nc := range map[string]net.Conn{"mute": mute, "silent": silent.nc} {
		if took := closedWithin(t, nc, start, 3*time.Second); took < timeout {
			t.Fatalf("%s client dropped after %v, before the %v deadline", name, took, timeout)
		}
	}
	if n := len(rec.matching("no export chosen within 300ms")); n == 0 {
		t.Error("no log line says why the clients were dropped")
	}

	// Well past the deadline, the established connection still works.
	time.Sleep(time.Until(start.Add(3 * timeout)))
	writeRead(t, established, 8192, 0x3c)
	if data, _ := d.snapshot(); !bytes.Equal(data[8192:12288], fill(4096, 0x3c)) {
		t.Fatal("the write is not in the model")
	}
}

// readListReply reads NBD_OPT_LIST's replies up to the ACK, returning the
// first read error.
func readListReply(c *rawClient) error {
	c.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		var h [20]byte
		if _, err := io.ReadFull(c.br, h[:]); err != nil {
			return err
		}
		if _, err := io.CopyN(io.Discard, c.br, int64(binary.BigEndian.Uint32(h[16:]))); err != nil {
			return err
		}
		if binary.BigEndian.Uint32(h[12:]) == repAck {
			return nil
		}
	}
}

// Connections beyond MaxConns are closed at once, without a greeting,
// while the connections already served keep reading and writing; the
// refusals are logged at most once a second, with a count of the rest.
func TestConnectionCap(t *testing.T) {
	d := newMemDisk(t, mib)
	rec := newLogRecorder(t)
	opt := exports(map[string]*memDisk{"disk": d})
	opt.MaxConns, opt.MaxHandshakes, opt.Logf = 3, 2, rec.logf
	addr := startServer(t, opt)

	a, b := dialRaw(t, addr), dialRaw(t, addr)
	a.goExport("disk")
	b.goExport("disk")
	c := dialRaw(t, addr) // the third, still in the handshake
	const burst = 20
	for range burst {
		expectRefused(t, "tcp", addr)
	}
	// The established connections and the one in the handshake are served.
	writeRead(t, a, 0, 0x5a)
	b.request(cmdRead, 0, 9, 0, 4096, nil)
	if e, _ := b.simpleReply(); e != 0 {
		t.Fatalf("read on the second connection: errno %d", e)
	}
	got := make([]byte, 4096)
	b.readFull(got)
	if !bytes.Equal(got, fill(4096, 0x5a)) {
		t.Fatal("the second connection does not see the first one's write")
	}
	if typ, _, _ := c.goExport("disk"); typ != repAck {
		t.Fatalf("the connection in the handshake: NBD_OPT_GO reply %#x", typ)
	}
	writeRead(t, c, 4096, 0xa5)
	data, _ := d.snapshot()
	if !bytes.Equal(data[:4096], fill(4096, 0x5a)) || !bytes.Equal(data[4096:8192], fill(4096, 0xa5)) {
		t.Fatal("the writes are not in the model")
	}

	// One more refusal after the interval logs a line with the count of
	// those suppressed since the last line: every refusal is accounted
	// for, in at most one line a second.
	time.Sleep(refusalLogInterval + 100*time.Millisecond)
	expectRefused(t, "tcp", addr)
	lines := rec.matching("connections already served")
	total := len(lines)
	for _, l := range lines {
		if m := regexp.MustCompile(`and (\d+) more`).FindStringSubmatch(l); m != nil {
			n, _ := strconv.Atoi(m[1])
			total += n
		}
	}
	if total != burst+1 || len(lines) > 3 {
		t.Fatalf("%d refusals logged in %d lines (counting the suppressed: %d):\n%s", burst+1, len(lines), total, strings.Join(lines, "\n"))
	}

	// A connection that ends frees its slot.
	a.nc.Close()
	deadline := time.Now().Add(5 * time.Second)
	for !greeted("tcp", addr) {
		if time.Now().After(deadline) {
			t.Fatal("a closed connection's slot was not freed")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Connections beyond MaxHandshakes are refused while that many are still
// in the handshake, even with MaxConns to spare; an established
// connection keeps working, and a client that leaves the handshake frees
// its slot.
func TestHandshakeCap(t *testing.T) {
	d := newMemDisk(t, mib)
	opt := exports(map[string]*memDisk{"disk": d})
	opt.MaxConns, opt.MaxHandshakes = 10, 2
	addr := startServer(t, opt)

	e := dialRaw(t, addr)
	e.goExport("disk")
	h1, h2 := dialRaw(t, addr), dialRaw(t, addr)
	for range 3 {
		expectRefused(t, "tcp", addr)
	}
	writeRead(t, e, 0, 0x77)
	h2.option(optList, nil)
	if err := readListReply(h2); err != nil {
		t.Fatalf("a connection in the handshake was disturbed: %v", err)
	}
	h1.goExport("disk") // out of the handshake: its slot is free
	deadline := time.Now().Add(5 * time.Second)
	for !greeted("tcp", addr) {
		if time.Now().After(deadline) {
			t.Fatal("a finished handshake's slot was not freed")
		}
		time.Sleep(20 * time.Millisecond)
	}
	writeRead(t, h1, 4096, 0x78)
}

// openDir returns a new directory every user may enter, removed at the end.
func openDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "nbd-unix-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// serveUnix serves opt on a socket made by ListenUnix at path until the
// test ends.
func serveUnix(t *testing.T, opt Options, path string) {
	t.Helper()
	l, err := ListenUnix(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- NewServer(opt).Serve(ctx, l) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
}

// nobody is the uid and gid the tests run other users' clients as.
const nobody = 65534

// qemuIOAs runs qemu-io as uid (root when 0) and reports whether every
// command succeeded.
func qemuIOAs(t *testing.T, uid uint32, args ...string) (string, bool) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to run a client as another user")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, needTool(t, "qemu-io", qemuPkg), args...)
	cmd.Dir = "/"
	if uid != 0 {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid}}
	}
	out, err := cmd.CombinedOutput()
	return string(out), err == nil && !strings.Contains(string(out), "failed")
}

// The peer-credential check alone keeps other users out: with the socket
// opened to everyone (mode 0666 in a directory all may enter), qemu-io
// running as nobody is refused and writes nothing, while root's qemu-io
// on the same socket reads and writes.
func TestUnixPeerCredentials(t *testing.T) {
	d := newMemDisk(t, mib)
	rec := newLogRecorder(t)
	opt := exports(map[string]*memDisk{"disk": d})
	opt.Logf = rec.logf
	sock := filepath.Join(openDir(t), "nbd.sock")
	serveUnix(t, opt, sock)
	if err := os.Chmod(sock, 0o666); err != nil {
		t.Fatal(err)
	}
	url := "nbd+unix:///disk?socket=" + sock

	out, ok := qemuIOAs(t, nobody, "-f", "raw", url, "-c", "write -P 0xcd 0 4k")
	if ok {
		t.Fatalf("qemu-io as uid %d wrote through the socket:\n%s", nobody, out)
	}
	if data, _ := d.snapshot(); !bytes.Equal(data[:4096], make([]byte, 4096)) {
		t.Fatal("a refused client's write reached the disk")
	}
	if len(rec.matching(fmt.Sprintf("refused a connection from uid %d", nobody))) == 0 {
		t.Fatalf("no log line names the refused uid; qemu-io said:\n%s", out)
	}
	if out, ok := qemuIOAs(t, 0, "-f", "raw", url, "-c", "write -P 0xab 0 4k", "-c", "read -P 0xab 0 4k"); !ok {
		t.Fatalf("qemu-io as root on the same socket:\n%s", out)
	}
	if data, _ := d.snapshot(); !bytes.Equal(data[:4096], fill(4096, 0xab)) {
		t.Fatal("root's write is not in the model")
	}
}

// ListenUnix makes a socket only its owner can open, even under a umask
// of 0 and in a directory everyone may enter: qemu-io as nobody gets
// EACCES from connect itself (it never reaches the peer check). A stale
// socket is replaced; a live one or another file is left alone.
func TestListenUnixMode(t *testing.T) {
	d := newMemDisk(t, mib)
	rec := newLogRecorder(t)
	opt := exports(map[string]*memDisk{"disk": d})
	opt.Logf = rec.logf
	dir := openDir(t)
	sock := filepath.Join(dir, "nbd.sock")

	old := syscall.Umask(0)
	serveUnix(t, opt, sock)
	syscall.Umask(old)
	fi, err := os.Stat(sock)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != fs.ModeSocket || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode %v, want a socket with 0600", fi.Mode())
	}
	url := "nbd+unix:///disk?socket=" + sock
	out, ok := qemuIOAs(t, nobody, "-f", "raw", url, "-c", "read 0 4k")
	if ok || !strings.Contains(out, "Permission denied") {
		t.Fatalf("qemu-io as uid %d: want connect refused with EACCES:\n%s", nobody, out)
	}
	if n := len(rec.matching("refused a connection")); n != 0 {
		t.Fatalf("nobody reached the server (%d refusals logged): the mode did not keep it out", n)
	}
	if out, ok := qemuIOAs(t, 0, "-f", "raw", url, "-c", "read -P 0 0 4k"); !ok {
		t.Fatalf("qemu-io as root:\n%s", out)
	}

	if _, err := ListenUnix(sock); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("ListenUnix on a live socket: %v", err)
	}
	file := filepath.Join(dir, "file")
	os.WriteFile(file, []byte("keep"), 0o600)
	if _, err := ListenUnix(file); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Fatalf("ListenUnix on a regular file: %v", err)
	}
	stale := filepath.Join(dir, "stale.sock")
	sl, err := net.Listen("unix", stale)
	if err != nil {
		t.Fatal(err)
	}
	sl.(*net.UnixListener).SetUnlinkOnClose(false)
	sl.Close()
	l, err := ListenUnix(stale)
	if err != nil {
		t.Fatalf("ListenUnix on a stale socket: %v", err)
	}
	l.Close()
}
