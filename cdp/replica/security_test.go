package replica

import (
	"crypto/tls"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	mrand "math/rand/v2"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hindsight-cdp/hindsight/store"
	"github.com/hindsight-cdp/hindsight/store/storetest"
)

const (
	otherToken = "fedcba9876543210fedcba9876543210"
	rogueToken = "00112233445566778899aabbccddeeff"
)

// dialRaw opens a TLS connection to a server as a hand-made client.
func dialRaw(t *testing.T, addr string, ca []byte) net.Conn {
	t.Helper()
	conf, err := clientTLS(Target{Addr: addr, CA: ca})
	if err != nil {
		t.Fatal(err)
	}
	c, err := tls.Dial("tcp", addr, conf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// refusalOf reads the REFUSE a server answers with.
func refusalOf(t *testing.T, c net.Conn) string {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	ft, p, err := readFrame(c, maxHelloFrame)
	if err != nil {
		t.Fatalf("want REFUSE, read: %v", err)
	}
	if ft != frameRefuse {
		t.Fatalf("want REFUSE, got %v", ft)
	}
	var r refusal
	if err := json.Unmarshal(p, &r); err != nil {
		t.Fatal(err)
	}
	return r.Reason
}

func send(t *testing.T, c net.Conn, f []byte) {
	t.Helper()
	if _, err := c.Write(f); err != nil {
		t.Fatal(err)
	}
}

func helloFrame(t *testing.T, token, name string, d store.Disk) []byte {
	f, err := jsonFrame(frameHello, Hello{Version: Version, Token: token, Name: name,
		Disks: []store.DiskSpec{{Name: d.Name, Size: d.Size, BlockSize: d.BlockSize}}})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// waitLog waits until the log holds want.
func waitLog(t *testing.T, lb *logBuf, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(lb.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("the log never said %q", want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// failsWith starts a sender that must fail with want, then stops it.
func failsWith(t *testing.T, r *store.Repo, name string, tg Target, want string) {
	t.Helper()
	s, stop := startSender(t, r, name, tg, SendOptions{}, func(s *Sender) { s.minBackoff, s.maxBackoff = time.Second, time.Second })
	defer stop()
	deadline := time.Now().Add(10 * time.Second)
	for st := s.Status(); !strings.Contains(st.LastError, want); st = s.Status() {
		if time.Now().After(deadline) {
			t.Fatalf("sender's last error %q, want %q", st.LastError, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestServerRefusals makes every kind of bad client the server must turn
// away, beside a legitimate stream: each is refused with a logged reason,
// writes nothing, and the legitimate stream never notices.
func TestServerRefusals(t *testing.T) {
	rng := mrand.New(mrand.NewPCG(7, 8))
	tokens := tokensFile(t, "primary "+testToken+" web", "other "+otherToken+" db", "rogue "+rogueToken+" web")
	dr := newSite(t, "dr", tokens, func(o *ServerOptions) { o.HelloTimeout = time.Second })
	src, web := repoWith(t, "web", 1<<20)
	db, err := src.CreateDisk("db", 1<<20, 4096)
	if err != nil {
		t.Fatal(err)
	}
	good := Target{Addr: dr.addr, CA: dr.ca.pem, Token: testToken}
	legit, _ := startSender(t, src, "web", good, SendOptions{}, nil)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // the legitimate source keeps writing throughout
		defer wg.Done()
		wr := mrand.New(mrand.NewPCG(9, 10))
		for {
			select {
			case <-stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
			w := []store.BlockWrite{{Disk: web, Block: wr.Uint64N(web.Blocks()), Data: block(wr, web.BlockSize)}}
			if err := errors.Join(src.CaptureAsync(web.Timeline, w), src.Sync()); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	halt := sync.OnceFunc(func() { close(stop); wg.Wait() })
	t.Cleanup(halt) // before the repository closes

	// Refusals come slower than the log's rate bound, so each is logged.
	pause := func() { time.Sleep(150 * time.Millisecond) }

	wrong := good
	wrong.Token = "not-the-token-0000000000"
	failsWith(t, src, "web", wrong, "unknown token")
	pause()
	other := good
	other.Token = otherToken
	failsWith(t, src, "web", other, `the token of source "other" does not allow "web"`)
	pause()
	waitAcked(t, src, legit, 30*time.Second) // the replica exists
	rogue := good
	rogue.Token = rogueToken
	failsWith(t, src, "web", rogue, `replicates "primary", not "rogue"`)
	pause()
	foreign := good
	foreign.CA = newCA(t).pem
	failsWith(t, src, "web", foreign, "certificate signed by unknown authority")
	waitLog(t, dr.log, "TLS handshake failed")
	pause()

	// A server beside it whose certificate has expired.
	lg, expiredLog := testLog(t, "expired server")
	srv2, err := NewServer(dr.r, ServerOptions{TLS: dr.ca.serverTLS(t, time.Now().Add(-48*time.Hour), time.Now().Add(-24*time.Hour)), Tokens: tokens, Log: lg})
	if err != nil {
		t.Fatal(err)
	}
	expired := good
	expired.Addr = serve(t, srv2)
	failsWith(t, src, "web", expired, "certificate has expired")
	waitLog(t, expiredLog, "TLS handshake failed")

	// Hand-made clients: before HELLO, and authenticated as the source of
	// db then sending garbage (refused, nothing journaled).
	bad, err := appendSteps(nil, &stepsMsg{ID: 1, Steps: []wireStep{{Seq: 1, Time: time.Now(), Blocks: []wireBlock{{Kind: kindRaw, Hash: store.Hash{1}, Content: make([]byte, 4096)}}}}})
	if err != nil {
		t.Fatal(err)
	}
	badKind := slices.Clone(bad)
	badKind[frameHeader+8+1+4+8+8+1+4+2+8] = 9 // the block's kind
	for _, c := range []struct {
		what  string
		auth  bool
		frame []byte
		want  string
	}{
		{"HELLO without a token", false, helloFrame(t, "", "web", web), "no token"},
		{"an unknown frame type", false, []byte{77, 0, 0, 0, 0}, "malformed frame: unknown frame type 77"},
		{"a HELLO of bad JSON", false, append([]byte{byte(frameHello), 0, 0, 0, 1}, '{'), "malformed frame: HELLO"},
		{"a frame of 4 GiB", false, []byte{byte(frameHello), 0xff, 0xff, 0xff, 0xff}, "frame too large"},
		{"content under a wrong hash", true, bad, "content does not match its hash"},
		{"a block of kind 9", true, badKind, "block kind 9"},
		{"a frame over MaxFrame", true, binary.BigEndian.AppendUint32([]byte{byte(frameSteps)}, MaxFrame+1), "frame too large"},
	} {
		pause()
		conn := dialRaw(t, dr.addr, dr.ca.pem)
		if c.auth {
			send(t, conn, helloFrame(t, otherToken, "db", db))
			conn.SetReadDeadline(time.Now().Add(10 * time.Second))
			if ft, _, err := readFrame(conn, maxHelloFrame); err != nil || ft != frameWelcome {
				t.Fatalf("HELLO for db: %v %v", ft, err)
			}
		}
		send(t, conn, c.frame)
		if r := refusalOf(t, conn); !strings.Contains(r, c.want) {
			t.Errorf("%s refused with %q, want %q", c.what, r, c.want)
		}
	}

	// Slowloris: a connection that says nothing, one that sends one byte,
	// one that completes TLS and then says nothing: closed after HelloTimeout.
	for i, prefix := range [][]byte{nil, {0x16}} {
		pause()
		c, err := net.Dial("tcp", dr.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		send(t, c, prefix)
		start := time.Now()
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.ReadAll(c); err != nil || time.Since(start) > 5*time.Second {
			t.Errorf("slow client %d: closed after %v (%v)", i, time.Since(start), err)
		}
	}
	waitLog(t, dr.log, "no TLS handshake within 1s")
	pause()
	if r := refusalOf(t, dialRaw(t, dr.addr, dr.ca.pem)); r != "no HELLO within 1s" {
		t.Errorf("a client silent after TLS refused with %q", r)
	}

	for _, want := range []string{"unknown token", `does not allow \"web\"`, `replicates \"primary\", not \"rogue\"`, "TLS handshake failed", "no token",
		"unknown frame type 77", "malformed frame: HELLO", "frame too large", "content does not match its hash",
		"block kind 9", "no TLS handshake within 1s", "no HELLO within 1s"} {
		waitLog(t, dr.log, want)
	}
	halt()
	waitAcked(t, src, legit, 30*time.Second)
	sameHistory(t, src, dr.r, "web", 5, rng)
	if st := legit.Status(); st.Reconnects != 0 || st.LastError != "" {
		t.Errorf("the legitimate stream was disturbed: %+v", st)
	}
	disks, err := dr.r.Disks()
	if err != nil {
		t.Fatal(err)
	}
	if len(disks) != 2 || disks[0].Name != "db" || disks[1].Name != "web" {
		t.Errorf("target disks %+v, want the replicas db (empty) and web", disks)
	}
	if _, err := dr.r.LastPoint(disks[0].Timeline); err == nil {
		t.Errorf("the refused source's garbage was journaled on db")
	}
}

// TestRefusalLogBounded floods the refusal log: at most refusalLines a
// second are written, and the next line counts those left out.
func TestRefusalLogBounded(t *testing.T) {
	lg, lb := testLog(t, "refusals")
	l := &refusalLog{log: lg}
	for range 500 {
		l.refuse("192.0.2.1:1", "unknown token")
	}
	if n := strings.Count(lb.String(), "\n"); n != refusalLines {
		t.Fatalf("%d lines for 500 refusals in a second, want %d", n, refusalLines)
	}
	time.Sleep(time.Second)
	l.refuse("192.0.2.1:1", "unknown token")
	if !strings.Contains(lb.String(), "suppressed=490") {
		t.Fatalf("the line after the flood does not count the 490 left out:\n%s", lb.String())
	}
}

// TestInsecureLoopbackOnly: plain TCP streams only on loopback, on both sides.
func TestInsecureLoopbackOnly(t *testing.T) {
	rng := mrand.New(mrand.NewPCG(17, 18))
	dst, _ := storetest.Repo(t)
	srv, err := NewServer(dst, ServerOptions{Tokens: tokensFile(t, "primary "+testToken+" web")})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Serve(t.Context(), ln); err == nil || !strings.Contains(err.Error(), "not a loopback address") {
		t.Errorf("Serve without TLS on %s: %v", ln.Addr(), err)
	}
	src, web := repoWith(t, "web", 1<<20)
	if _, err := NewSender(src, "web", Target{Addr: "192.0.2.1:7443", Token: testToken, Insecure: true}, SendOptions{}); err == nil || !strings.Contains(err.Error(), "only allowed to a loopback address") {
		t.Errorf("an insecure sender to 192.0.2.1: %v", err)
	}
	if _, err := NewSender(src, "web", Target{Addr: "192.0.2.1:7443", Token: testToken}, SendOptions{}); err == nil || !strings.Contains(err.Error(), "no PEM certificate") {
		t.Errorf("a sender without a CA: %v", err)
	}
	writeRandom(t, src, []store.Disk{web}, 20, rng)
	s, _ := startSender(t, src, "web", Target{Addr: serve(t, srv), Token: testToken, Insecure: true}, SendOptions{}, nil)
	waitAcked(t, src, s, 30*time.Second)
	sameHistory(t, src, dst, "web", 3, rng)
}

// TestMaxConns: connections beyond MaxConns are closed at once and logged.
func TestMaxConns(t *testing.T) {
	dr := newSite(t, "dr", tokensFile(t, "primary "+testToken+" web"), func(o *ServerOptions) { o.MaxConns = 2 })
	var held []net.Conn
	for range 2 {
		c, err := net.Dial("tcp", dr.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		held = append(held, c)
	}
	time.Sleep(100 * time.Millisecond) // both accepted
	c, err := net.Dial("tcp", dr.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("a third connection read %v, want EOF at once", err)
	}
	waitLog(t, dr.log, "more than 2 connections at once")
	held[0].SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if _, err := held[0].Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("a connection within the bound: %v, want it still open", err)
	}
}

// TestNewerStreamReplaces: a second connection for a replica closes the
// first, which a source whose link broke unnoticed relies on.
func TestNewerStreamReplaces(t *testing.T) {
	rng := mrand.New(mrand.NewPCG(21, 22))
	dr := newSite(t, "dr", tokensFile(t, "primary "+testToken+" web"), nil)
	src, web := repoWith(t, "web", 1<<20)
	old := dialRaw(t, dr.addr, dr.ca.pem)
	send(t, old, helloFrame(t, testToken, "web", web))
	old.SetReadDeadline(time.Now().Add(10 * time.Second))
	if ft, _, err := readFrame(old, maxHelloFrame); err != nil || ft != frameWelcome {
		t.Fatalf("first HELLO: %v %v", ft, err)
	}
	writeRandom(t, src, []store.Disk{web}, 20, rng)
	s, _ := startSender(t, src, "web", Target{Addr: dr.addr, CA: dr.ca.pem, Token: testToken}, SendOptions{}, nil)
	if _, _, err := readFrame(old, maxHelloFrame); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("the older stream's connection: %v, want it closed", err)
	}
	waitAcked(t, src, s, 30*time.Second)
	waitLog(t, dr.log, "replaced by a newer connection")
	sameHistory(t, src, dr.r, "web", 3, rng)
}
