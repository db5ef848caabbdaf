package control

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hindsight-cdp/hindsight/store"
)

// fakeJournal answers Head with a fixed point and records each Mark.
type fakeJournal struct {
	mu    sync.Mutex
	marks []store.Bookmark
}

var fakeHead = Head{Point: store.Point{Seq: 7, Time: time.Unix(1764065220, 0).UTC()}, Disks: []string{"web"}}

func (f *fakeJournal) Head(ctx context.Context, target string) (Head, error) {
	if target != "web" {
		return Head{}, store.ErrUnknownDisk
	}
	return fakeHead, nil
}

func (f *fakeJournal) Mark(ctx context.Context, target string, bm store.Bookmark) (store.Bookmark, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.marks = append(f.marks, bm)
	bm.Disk, bm.Seq = target, 7
	return bm, nil
}

// serve starts a server on a new directory, with tune applied before it
// serves, and stops it at cleanup. It returns the directory.
func serve(t *testing.T, j Journal, tune func(*Server)) string {
	t.Helper()
	dir := t.TempDir()
	s, err := Listen(dir, j)
	if err != nil {
		t.Fatal(err)
	}
	if tune != nil {
		tune(s)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return dir
}

func dial(t *testing.T, dir string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("unix", SocketPath(dir), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// readAnswer reads the server's one answer line within d.
func readAnswer(t *testing.T, c net.Conn, d time.Duration) response {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(d))
	var resp response
	if err := json.NewDecoder(c).Decode(&resp); err != nil {
		t.Fatalf("no answer within %v: %v", d, err)
	}
	return resp
}

// TestClientServer: head and mark round trip, errors keep their kind, and a
// request the server does not understand is answered as such.
func TestClientServer(t *testing.T) {
	j := &fakeJournal{}
	dir := serve(t, j, nil)
	cl, err := Dial(dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	h, err := cl.Head(ctx, "web")
	if err != nil || h.Point.Seq != 7 || !h.Point.Time.Equal(fakeHead.Point.Time) || len(h.Disks) != 1 {
		t.Fatalf("Head = %+v, %v; want %+v", h, err, fakeHead)
	}
	if _, err := cl.Head(ctx, "nope"); !errors.Is(err, store.ErrUnknownDisk) {
		t.Fatalf("Head of an unknown disk: %v, want ErrUnknownDisk", err)
	}
	bm, err := cl.Mark(ctx, "web", store.Bookmark{Name: "b1", Kind: "user", Files: map[string]string{"f": "x"}})
	if err != nil || bm.Name != "b1" || bm.Disk != "web" {
		t.Fatalf("Mark = %+v, %v", bm, err)
	}
	if len(j.marks) != 1 || j.marks[0].Files["f"] != "x" {
		t.Fatalf("journal got %+v", j.marks)
	}
	for _, bad := range []string{`{"op":"drop","target":"web"}` + "\n", `{"op":"mark","target":"web"}` + "\n", "{\n"} {
		c := dial(t, dir)
		c.Write([]byte(bad))
		if resp := readAnswer(t, c, 5*time.Second); !strings.Contains(resp.Error, "bad request") {
			t.Fatalf("%q answered %+v, want a bad request error", bad, resp)
		}
	}
}

// TestOversizedRequestRefused streams 64 MiB that never ends a line: the
// server must refuse it after MaxRequest bytes, answering ErrTooLarge,
// without reading it whole or holding it in memory.
func TestOversizedRequestRefused(t *testing.T) {
	dir := serve(t, &fakeJournal{}, nil)
	c := dial(t, dir)
	const total = 64 << 20
	chunk := bytes.Repeat([]byte("a"), 64<<10)

	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	c.SetWriteDeadline(time.Now().Add(30 * time.Second))
	written, _ := c.Write([]byte(`{"op":"head","target":"`))
	var werr error
	for written < total && werr == nil {
		var n int
		n, werr = c.Write(chunk)
		written += n
	}
	if werr == nil { // read whole: let a server without a limit answer at all
		c.(*net.UnixConn).CloseWrite()
	}
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	var resp response
	rerr := json.NewDecoder(c).Decode(&resp)
	runtime.ReadMemStats(&after)

	t.Logf("server took %d KiB of the request; allocations grew %d KiB", written>>10, (after.TotalAlloc-before.TotalAlloc)>>10)
	// The socket buffers hold a few hundred KiB beyond what was read.
	if written > 4<<20 {
		t.Errorf("the server took %d MiB of the request before refusing it (write error: %v)", written>>20, werr)
	}
	if rerr != nil || resp.Kind != "too_large" || !strings.Contains(resp.Error, "1 MiB") {
		t.Errorf("answer %+v (%v), want the too_large error", resp, rerr)
	}
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 16<<20 {
		t.Errorf("the server allocated %d MiB for a refused request, want < 16 MiB", grew>>20)
	}
}

// TestConnectionCap: with maxConns connections open, one more is answered
// ErrBusy at once; once they go, requests are served again.
func TestConnectionCap(t *testing.T) {
	dir := serve(t, &fakeJournal{}, func(s *Server) { s.timeout = time.Minute })
	var held []net.Conn
	for range maxConns {
		held = append(held, dial(t, dir)) // silent: each holds its slot
	}
	// Connections are accepted in order and each takes its slot before the
	// next is accepted, so these find every slot taken.
	for range 3 {
		resp := readAnswer(t, dial(t, dir), 2*time.Second)
		if resp.Kind != "busy" {
			t.Fatalf("connection %d answered %+v, want busy", maxConns+1, resp)
		}
	}
	cl, err := Dial(dir) // its probe is refused, and that is all
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Head(context.Background(), "web"); !errors.Is(err, ErrBusy) {
		t.Fatalf("Head beyond the cap: %v, want ErrBusy", err)
	}
	for _, c := range held {
		c.Close()
	}
	headSoon(t, cl)
}

// headSoon asks for web's head until the server has a slot free (it frees
// one just after closing the connection), for at most 5 s.
func headSoon(t *testing.T, cl *Client) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		h, err := cl.Head(context.Background(), "web")
		if err == nil {
			if h.Point.Seq != 7 {
				t.Fatalf("Head = %+v", h)
			}
			return
		}
		if !errors.Is(err, ErrBusy) || time.Now().After(deadline) {
			t.Fatalf("Head once the slots are free: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestSilentClientDropped: a client that sends nothing is answered and
// dropped after the read deadline, and its slot serves the next request.
func TestSilentClientDropped(t *testing.T) {
	const timeout = 300 * time.Millisecond
	dir := serve(t, &fakeJournal{}, func(s *Server) {
		s.timeout = timeout
		s.slots = make(chan struct{}, 1) // the one slot the silent client holds
	})
	c := dial(t, dir)
	start := time.Now()
	resp := readAnswer(t, c, 5*time.Second)
	if !strings.Contains(resp.Error, "no request within") {
		t.Fatalf("silent client answered %+v", resp)
	}
	// The server's clock starts at accept, a moment before ours: not exact.
	if took := time.Since(start); took < timeout-50*time.Millisecond || took > 3*time.Second {
		t.Fatalf("dropped after %v, want about %v", took, timeout)
	}
	if _, err := bufio.NewReader(c).ReadByte(); err == nil {
		t.Fatal("connection still open after the answer")
	}
	headSoon(t, &Client{path: SocketPath(dir)})
}
