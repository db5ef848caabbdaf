package service

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hindsight-cdp/hindsight/store"
)

// rawRequest sends one request over a fresh connection to the socket and
// returns the status and the error body. The request is written in the
// background: the service may answer (too_large) before reading it all.
func rawRequest(t *testing.T, sock, req string) (int, errorBody, string) {
	t.Helper()
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	go io.WriteString(c, req)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("no answer: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var eb errorBody
	json.Unmarshal(b, &eb)
	return resp.StatusCode, eb, string(b)
}

func httpReq(method, path, body string) string {
	return fmt.Sprintf("%s %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", method, path, len(body), body)
}

func TestControlBadRequests(t *testing.T) {
	s, _ := newTestService(t, Options{})
	sock := serveSocket(t, s, defaultLimits)
	big := `{"name":"` + strings.Repeat("a", MaxRequest) + `"}`
	for _, tc := range []struct {
		name, method, path, body string
		status                   int
		kind, msg                string
	}{
		{"malformed", "POST", "/v1/protections", `{"targets":["a"`, 400, "bad_request", "unexpected EOF"},
		{"not an object", "POST", "/v1/head", `[1,2]`, 400, "bad_request", "cannot unmarshal array"},
		{"unknown field", "POST", "/v1/protections", `{"targets":["a"],"mount":"/x"}`, 400, "bad_request", `unknown field "mount"`},
		{"trailing data", "POST", "/v1/head", `{"target":"a"} {"target":"b"}`, 400, "bad_request", "more than one JSON value"},
		{"trailing garbage", "POST", "/v1/head", `{"target":"a"}x`, 400, "bad_request", "more than one JSON value"},
		{"empty body", "POST", "/v1/disks", ``, 400, "bad_request", "EOF"},
		{"oversized", "POST", "/v1/protections", big, 413, "too_large", "longer than 1 MiB"},
		{"wrong method", "PUT", "/v1/protections", `{}`, 400, "bad_request", "no PUT /v1/protections in protocol version 1"},
		{"unknown path", "GET", "/v2/protections", ``, 400, "bad_request", "no GET /v2/protections in protocol version 1"},
		{"bad keep", "DELETE", "/v1/clones/c?keep=maybe", ``, 400, "bad_request", `keep="maybe" is not true or false`},
		{"clone via protections", "POST", "/v1/protections", `{"targets":["a"],"clone":{"source":"a"}}`, 400, "bad_request", "POST /v1/clones"},
		{"bad spec", "POST", "/v1/protections", `{"targets":[]}`, 400, "bad_spec", "needs a disk or group"},
		{"relative mount", "POST", "/v1/protections", `{"targets":["a"],"tap":{"mount":"rel"}}`, 400, "bad_spec", "must be absolute"},
		{"unknown disk", "POST", "/v1/head", `{"target":"nope"}`, 404, "unknown_disk", "nope"},
		{"not protected", "DELETE", "/v1/protections/nope", ``, 404, "not_found", "nope"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, eb, raw := rawRequest(t, sock, httpReq(tc.method, tc.path, tc.body))
			if status != tc.status || eb.Kind != tc.kind || !strings.Contains(eb.Error, tc.msg) {
				t.Errorf("%s %s: got %d %s\nwant %d kind %q with %q", tc.method, tc.path, status, raw, tc.status, tc.kind, tc.msg)
			}
		})
	}
}

// TestControlSocketMode: the socket is its owner's, in a directory of its
// owner's.
func TestControlSocketMode(t *testing.T) {
	s, _ := newTestService(t, Options{})
	sock := serveSocket(t, s, defaultLimits)
	for path, want := range map[string]os.FileMode{sock: 0o600, filepath.Dir(sock): 0o700} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s: mode %o, want %o", path, fi.Mode().Perm(), want)
		}
	}
}

// TestControlRefusesOtherUsers: with the socket's mode opened by mistake,
// another user's connection is still closed without an answer, and logged.
func TestControlRefusesOtherUsers(t *testing.T) {
	needRoot(t)
	s, log := newTestService(t, Options{})
	dir := t.TempDir()
	sock := filepath.Join(dir, "control.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	// Open everything to everyone: only the peer check is left.
	for _, p := range []string{filepath.Dir(dir), dir} {
		os.Chmod(p, 0o755)
	}
	os.Chmod(sock, 0o777)
	serveOn(t, s, l, defaultLimits)
	// The test binary, copied where nobody may run it, dials as nobody.
	bin := filepath.Join(dir, "service.test")
	data, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-test.run=^TestHelperDial$")
	cmd.Env = append(os.Environ(), "HINDSIGHT_TEST_DIAL="+sock)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("helper as nobody: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "answer: 0 bytes") {
		t.Errorf("nobody's connection was answered:\n%s", out)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(log.String(), "refused a connection from uid 65534") {
		if time.Now().After(deadline) {
			t.Fatalf("the refusal is not logged:\n%s", log.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	// The owner (root) is still served on the same socket.
	if status, _, raw := rawRequest(t, sock, httpReq("GET", "/v1/service", "")); status != 200 {
		t.Errorf("owner: %d %s", status, raw)
	}
}

// TestHelperDial runs in a child process of TestControlRefusesOtherUsers:
// it asks for GET /v1/service and prints how much answer came back.
func TestHelperDial(t *testing.T) {
	sock := os.Getenv("HINDSIGHT_TEST_DIAL")
	if sock == "" {
		t.Skip("a helper of TestControlRefusesOtherUsers")
	}
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatalf("dial as uid %d: %v", os.Getuid(), err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, httpReq("GET", "/v1/service", "")) // may fail: the service closes at once
	b, err := io.ReadAll(c)
	fmt.Printf("uid %d answer: %d bytes (%v)\n%s\n", os.Getuid(), len(b), err, b)
}

// TestControlConnectionCap: the 33rd connection is answered 503 busy before
// it sends anything; once one closes, a new one is served.
func TestControlConnectionCap(t *testing.T) {
	s, _ := newTestService(t, Options{})
	sock := serveSocket(t, s, defaultLimits)
	var held []net.Conn
	t.Cleanup(func() {
		for _, c := range held {
			c.Close()
		}
	})
	for range maxConns {
		c, err := net.Dial("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
	}
	// Read only: writing to a socket the service closed races with its
	// close ("broken pipe").
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("connection %d: no busy answer: %v", maxConns+1, err)
	}
	b, _ := io.ReadAll(resp.Body)
	c.Close()
	var eb errorBody
	if resp.StatusCode != http.StatusServiceUnavailable || json.Unmarshal(b, &eb) != nil || eb.Kind != "busy" || !strings.Contains(eb.Error, "try again") {
		t.Fatalf("connection %d: %d %s, want 503 busy", maxConns+1, resp.StatusCode, b)
	}
	// The client, which writes its request first, sees ErrBusy too.
	if _, err := Dial(context.Background(), s.r.Dir()); !errors.Is(err, ErrBusy) {
		t.Errorf("Dial while full: %v, want ErrBusy", err)
	}
	// A slot comes back when a connection ends.
	held[0].Close()
	held = held[1:]
	deadline := time.Now().Add(5 * time.Second)
	for {
		cl, err := Dial(context.Background(), s.r.Dir())
		if err == nil {
			if _, err := cl.Protections(context.Background()); err != nil {
				t.Fatal(err)
			}
			cl.hc.CloseIdleConnections()
			break
		}
		if !errors.Is(err, ErrBusy) || time.Now().After(deadline) {
			t.Fatalf("after one connection closed: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestControlRequestTimeout: a client that sends nothing, or half a
// request, is dropped after the timeout, its slot given back.
func TestControlRequestTimeout(t *testing.T) {
	s, _ := newTestService(t, Options{})
	sock := serveSocket(t, s, controlLimits{conns: 1, timeout: 300 * time.Millisecond})
	for _, send := range []string{"", "GET /v1/service HTTP/1.1\r\nHost: x\r\n"} {
		c, err := net.Dial("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(c, send)
		start := time.Now()
		c.SetDeadline(start.Add(5 * time.Second))
		b, err := io.ReadAll(c)
		c.Close()
		if err != nil || time.Since(start) > 3*time.Second {
			t.Fatalf("sent %q: not dropped after %v: %v", send, time.Since(start), err)
		}
		if len(b) != 0 && !strings.HasPrefix(string(b), "HTTP/1.1 408") {
			t.Errorf("sent %q: answered %q", send, b)
		}
	}
	// The one slot is free again.
	if status, _, raw := rawRequest(t, sock, httpReq("GET", "/v1/service", "")); status != 200 {
		t.Errorf("after the timeouts: %d %s", status, raw)
	}
}

// TestClientKinds: every kind the service answers comes back to the client
// as its sentinel, with the status of its kind.
func TestClientKinds(t *testing.T) {
	dir := t.TempDir()
	l, err := listenControl(dir)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/service", func(rw http.ResponseWriter, r *http.Request) {
		reply(rw, ServiceInfo{Version: APIVersion}, nil)
	})
	mux.HandleFunc("GET /kind/{kind}", func(rw http.ResponseWriter, r *http.Request) {
		reply(rw, nil, fmt.Errorf("doing something: %w", kinds[r.PathValue("kind")]))
	})
	srv := &http.Server{Handler: mux}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	cl, err := Dial(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(kindOrder) != len(kinds) {
		t.Errorf("kindOrder has %d kinds, kinds %d", len(kindOrder), len(kinds))
	}
	for k, sentinel := range kinds {
		if got := kindOf(sentinel); got != k {
			t.Errorf("kindOf(%v) = %q, want %q", sentinel, got, k)
		}
		if st := statusOf(k); st == http.StatusInternalServerError && k != "corrupt" {
			t.Errorf("kind %s has status 500", k)
		}
		err := cl.do(context.Background(), http.MethodGet, "/kind/"+k, nil, nil)
		if !errors.Is(err, sentinel) || !strings.Contains(err.Error(), "doing something") {
			t.Errorf("kind %s: client got %v, want errors.Is %v", k, err, sentinel)
		}
	}
	// An error without a kind is a 500 whose message still arrives.
	rw := &recorder{header: http.Header{}}
	reply(rw, nil, errors.New("disk on fire"))
	if rw.status != 500 || !strings.Contains(rw.body.String(), "disk on fire") || strings.Contains(rw.body.String(), "kind") {
		t.Errorf("kindless error: %d %s", rw.status, rw.body.String())
	}
}

type recorder struct {
	header http.Header
	status int
	body   strings.Builder
}

func (r *recorder) Header() http.Header         { return r.header }
func (r *recorder) Write(b []byte) (int, error) { return r.body.Write(b) }
func (r *recorder) WriteHeader(s int)           { r.status = s }

// TestDialNoService: no socket, or a socket no one serves, is ErrNoService.
func TestDialNoService(t *testing.T) {
	dir := t.TempDir()
	if _, err := Dial(context.Background(), dir); !errors.Is(err, ErrNoService) {
		t.Errorf("no socket: %v", err)
	}
	l, err := listenControl(dir)
	if err != nil {
		t.Fatal(err)
	}
	l.Close() // the file stays: a dead service's socket
	if _, err := Dial(context.Background(), dir); !errors.Is(err, ErrNoService) {
		t.Errorf("dead socket: %v", err)
	}
}

// TestClientRoundTrips drives every request of the client through the
// socket against a real service, with a real tap.
func TestClientRoundTrips(t *testing.T) {
	needRoot(t)
	s, _ := newTestService(t, Options{Record: true})
	runService(t, s)
	serveSocket(t, s, defaultLimits)
	ctx := context.Background()
	cl, err := Dial(ctx, s.r.Dir())
	if err != nil {
		t.Fatal(err)
	}
	if cl.Info.Version != APIVersion || cl.Info.PID != os.Getpid() || cl.Info.Repo != s.r.Dir() || !cl.Info.Record {
		t.Errorf("service info: %+v", cl.Info)
	}
	const size = 1 << 20
	d, err := cl.CreateDisk(ctx, DiskRequest{Name: "web", Size: size, BlockSize: 4096})
	if err != nil || d.Name != "web" || d.Size != size {
		t.Fatalf("create disk: %+v %v", d, err)
	}
	if _, err := cl.CreateDisk(ctx, DiskRequest{Name: "web", Size: size, BlockSize: 4096}); !errors.Is(err, store.ErrDiskExists) {
		t.Errorf("create it again: %v, want ErrDiskExists", err)
	}
	if _, err := cl.CreateDisk(ctx, DiskRequest{Name: "bad/name", Size: size, BlockSize: 4096}); !errors.Is(err, store.ErrBadName) {
		t.Errorf("bad name: %v, want ErrBadName", err)
	}
	for _, n := range []string{"db1", "db2"} {
		if _, err := cl.CreateDisk(ctx, DiskRequest{Name: n, Size: size, BlockSize: 4096}); err != nil {
			t.Fatal(err)
		}
	}
	g, err := cl.CreateGroup(ctx, "db", []string{"db1"})
	if err != nil || g.Name != "db" {
		t.Fatalf("create group: %+v %v", g, err)
	}
	if g, err = cl.JoinGroup(ctx, "db", "db2"); err != nil || len(g.Disks) != 2 {
		t.Fatalf("join group: %+v %v", g, err)
	}
	if _, err := cl.JoinGroup(ctx, "nogroup", "web"); !errors.Is(err, store.ErrUnknownGroup) {
		t.Errorf("join unknown group: %v, want ErrUnknownGroup", err)
	}

	// Import an image, then read its point back through head.
	img := filepath.Join(t.TempDir(), "web.img")
	data := make([]byte, size)
	copy(data[8192:], "imported")
	os.WriteFile(img, data, 0o600)
	res, err := cl.Import(ctx, ImportRequest{Disk: "web", Path: img}, nil)
	if err != nil || res.Read != size || res.Changed != 1 {
		t.Fatalf("import: %+v %v", res, err)
	}
	if _, err := cl.Import(ctx, ImportRequest{Disk: "web", Path: "web.img"}, nil); !errors.Is(err, ErrBadRequest) {
		t.Errorf("relative import path: %v, want ErrBadRequest", err)
	}
	if _, err := cl.Import(ctx, ImportRequest{Disk: "nodisk", Path: img}, nil); !errors.Is(err, store.ErrUnknownDisk) {
		t.Errorf("import to unknown disk: %v, want ErrUnknownDisk", err)
	}
	h, err := cl.Head(ctx, "web")
	if err != nil || h.Point.Seq != res.Point.Seq || h.Group || len(h.Disks) != 1 {
		t.Fatalf("head: %+v %v (import point %+v)", h, err, res.Point)
	}
	if _, err := cl.Head(ctx, "nodisk"); !errors.Is(err, store.ErrUnknownDisk) {
		t.Errorf("head of unknown disk: %v", err)
	}
	bm, err := cl.Mark(ctx, "web", store.Bookmark{Name: "imported", Time: h.Point.Time, Kind: "user"})
	if err != nil || bm.Name != "imported" || bm.Seq != h.Point.Seq {
		t.Fatalf("mark: %+v %v", bm, err)
	}
	if _, err := cl.Mark(ctx, "web", store.Bookmark{Name: "imported", Time: h.Point.Time, Kind: "user"}); !errors.Is(err, store.ErrBookmarkExists) {
		t.Errorf("mark again: %v, want ErrBookmarkExists", err)
	}

	// Protect through a tap, write, see the figures, unprotect.
	mnt := filepath.Join(t.TempDir(), "tap")
	st, err := cl.Protect(ctx, ProtectSpec{Targets: []string{"web"}, Tap: &TapSpec{Mount: mnt}})
	if err != nil {
		t.Fatalf("protect: %v", err)
	}
	t.Cleanup(func() {
		if isMountPoint(t, mnt) {
			syscall.Unmount(mnt, syscall.MNT_DETACH)
		}
	})
	if st.Name != "web" || st.FrontEnd != "tap" || st.State != StateRunning || len(st.Disks) != 1 || st.Disks[0].Path != filepath.Join(mnt, "web.img") {
		t.Fatalf("protect answered %+v", st)
	}
	if _, err := cl.Protect(ctx, ProtectSpec{Targets: []string{"web"}, Tap: &TapSpec{Mount: mnt + "2"}}); !errors.Is(err, ErrExists) {
		t.Errorf("protect again: %v, want ErrExists", err)
	}
	if _, err := cl.Protect(ctx, ProtectSpec{Name: "other", Targets: []string{"web"}, Tap: &TapSpec{Mount: mnt + "2"}}); !errors.Is(err, ErrExists) {
		t.Errorf("protect the disk under another name: %v, want ErrExists", err)
	}
	if _, err := cl.Protect(ctx, ProtectSpec{Targets: []string{"nodisk"}, Tap: &TapSpec{Mount: mnt + "3"}}); !errors.Is(err, store.ErrUnknownDisk) {
		t.Errorf("protect an unknown disk: %v, want ErrUnknownDisk", err)
	}
	if _, err := cl.Protect(ctx, ProtectSpec{Targets: []string{"web"}}); !errors.Is(err, ErrBadSpec) {
		t.Errorf("protect without a front end: %v, want ErrBadSpec", err)
	}
	f, err := os.OpenFile(st.Disks[0].Path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("tapped"), 4096); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	ps, err := cl.Protections(ctx)
	if err != nil || len(ps) != 1 || ps[0].Disks[0].Writes == 0 || ps[0].Disks[0].BytesWritten == 0 {
		t.Fatalf("protections: %+v %v", ps, err)
	}

	// A clone of the newest point, beside the protection.
	cmnt := filepath.Join(t.TempDir(), "clone")
	cst, err := cl.Clone(ctx, CloneSpec{Name: "web-test", Source: "web", At: "latest", Mount: cmnt})
	if err != nil {
		t.Fatalf("clone: %v", err)
	}
	t.Cleanup(func() {
		if isMountPoint(t, cmnt) {
			syscall.Unmount(cmnt, syscall.MNT_DETACH)
		}
	})
	if cst.FrontEnd != "clone" || cst.Clone == nil || cst.Clone.Source != "web" {
		t.Errorf("clone answered %+v", cst)
	}
	got := make([]byte, 6)
	cf, err := os.Open(filepath.Join(cmnt, "web-test.img"))
	if err != nil {
		t.Fatal(err)
	}
	cf.ReadAt(got, 4096)
	cf.Close()
	if string(got) != "tapped" {
		t.Errorf("the clone reads %q at 4096, want the synced %q", got, "tapped")
	}
	if _, err := cl.EndClone(ctx, "web", false); !errors.Is(err, ErrNotFound) {
		t.Errorf("clone-end of a protection: %v, want ErrNotFound", err)
	}
	if _, err := cl.EndClone(ctx, "web-test", false); err != nil {
		t.Fatalf("clone-end: %v", err)
	}
	if isMountPoint(t, cmnt) {
		t.Errorf("the clone is still mounted at %s", cmnt)
	}
	if _, err := s.r.Disk("web-test"); !errors.Is(err, store.ErrUnknownDisk) {
		t.Errorf("the ended clone's disk: %v, want it deleted", err)
	}

	ust, err := cl.Unprotect(ctx, "web")
	if err != nil || ust.Name != "web" {
		t.Fatalf("unprotect: %+v %v", ust, err)
	}
	if isMountPoint(t, mnt) {
		t.Errorf("the tap is still mounted at %s", mnt)
	}
	if _, err := cl.Unprotect(ctx, "web"); !errors.Is(err, ErrNotFound) {
		t.Errorf("unprotect again: %v, want ErrNotFound", err)
	}
	if specs := s.state.specs(); len(specs) != 0 {
		t.Errorf("recorded after unprotect: %+v", specs)
	}
}

// countingReader is an endless body that counts what was read of it.
type countingReader struct{ n int64 }

func (c *countingReader) Read(p []byte) (int, error) {
	if c.n > 64<<20 {
		return 0, io.EOF
	}
	for i := range p {
		p[i] = ' '
	}
	c.n += int64(len(p))
	return len(p), nil
}

// TestDecodeReadsAtMostMaxRequest: an oversized body is refused having read
// MaxRequest+1 bytes of it, not all of it.
func TestDecodeReadsAtMostMaxRequest(t *testing.T) {
	body := &countingReader{}
	var v HeadRequest
	err := decode(body, &v)
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("decode of an endless body: %v, want ErrTooLarge", err)
	}
	if body.n > MaxRequest+64<<10 {
		t.Errorf("read %d bytes of the body; at most MaxRequest+1 (%d) needed", body.n, MaxRequest+1)
	}
}
