package replica

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	mrand "math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hindsight-cdp/hindsight/store"
	"github.com/hindsight-cdp/hindsight/store/storetest"
)

// testCA is a certificate authority made for one test.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newCA(t testing.TB) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "hindsight replica test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// serverTLS issues a certificate for 127.0.0.1 valid in [from, until],
// writes it and its key to files and loads them with ServerTLS.
func (ca *testCA) serverTLS(t testing.TB, from, until time.Time) *tls.Config {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: from, NotAfter: until, BasicConstraintsValid: true,
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cf, kf := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(cf, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(kf, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	conf, err := ServerTLS(cf, kf)
	if err != nil {
		t.Fatal(err)
	}
	return conf
}

// logBuf collects a logger's lines; a failed test prints them.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func testLog(t testing.TB, name string) (*slog.Logger, *logBuf) {
	lb := &logBuf{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("%s log:\n%s", name, lb.String())
		}
	})
	return slog.New(slog.NewTextHandler(lb, &slog.HandlerOptions{Level: slog.LevelDebug})), lb
}

// tokensFile writes lines as an owner-only tokens file and loads it.
func tokensFile(t testing.TB, lines ...string) *Tokens {
	t.Helper()
	p := filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(p, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tk, err := LoadTokens(p)
	if err != nil {
		t.Fatal(err)
	}
	return tk
}

// site is a repository with a replication server on loopback TLS.
type site struct {
	r    *store.Repo
	srv  *Server
	addr string
	ca   *testCA
	log  *logBuf
}

// newSite makes a repository and serves it to the tokens' sources.
func newSite(t testing.TB, name string, tokens *Tokens, tune func(*ServerOptions)) *site {
	t.Helper()
	r, _ := storetest.Repo(t)
	ca := newCA(t)
	lg, lb := testLog(t, name+" server")
	opt := ServerOptions{TLS: ca.serverTLS(t, time.Now().Add(-time.Hour), time.Now().Add(time.Hour)), Tokens: tokens, Log: lg}
	if tune != nil {
		tune(&opt)
	}
	srv, err := NewServer(r, opt)
	if err != nil {
		t.Fatal(err)
	}
	s := &site{r: r, srv: srv, ca: ca, log: lb}
	s.addr = serve(t, srv)
	return s
}

// serve runs srv on a loopback listener until the test ends.
func serve(t testing.TB, srv *Server) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return ln.Addr().String()
}

// startSender makes a sender of name and runs it until the test ends (or
// until the returned stop is called).
func startSender(t testing.TB, r *store.Repo, name string, tg Target, opt SendOptions, tune func(*Sender)) (*Sender, func()) {
	t.Helper()
	if opt.Log == nil {
		opt.Log, _ = testLog(t, name+" sender")
	}
	s, err := NewSender(r, name, tg, opt)
	if err != nil {
		t.Fatal(err)
	}
	s.minBackoff, s.maxBackoff = 20*time.Millisecond, 200*time.Millisecond
	if tune != nil {
		tune(s)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return s, stop
}

// waitAcked waits until s has everything durable in r acknowledged.
func waitAcked(t testing.TB, r *store.Repo, s *Sender, within time.Duration) {
	t.Helper()
	if err := r.Sync(); err != nil {
		t.Fatal(err)
	}
	want := r.Durable()
	deadline := time.Now().Add(within)
	for s.Acked() < want {
		if time.Now().After(deadline) {
			t.Fatalf("acknowledged %d, want %d within %v; status %+v", s.Acked(), want, within, s.Status())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// block is test content: half random, half zeros (about half compresses away).
func block(rng *mrand.Rand, size int) []byte {
	b := make([]byte, size)
	for i := 0; i < size/2; i += 8 {
		v := rng.Uint64()
		for k := 0; k < 8 && i+k < size/2; k++ {
			b[i+k] = byte(v >> (8 * k))
		}
	}
	return b
}

// writeRandom captures n steps of 1 to 3 random blocks of the disks
// (all on one timeline), with zero blocks and repeats among them, and a
// Sync every few steps.
func writeRandom(t testing.TB, r *store.Repo, disks []store.Disk, n int, rng *mrand.Rand) {
	t.Helper()
	var recent [][]byte
	for i := range n {
		var ws []store.BlockWrite
		seen := map[[2]uint64]bool{}
		for range 1 + rng.IntN(3) {
			d := disks[rng.IntN(len(disks))]
			blk := rng.Uint64N(d.Blocks())
			if seen[[2]uint64{uint64(d.ID), blk}] {
				continue
			}
			seen[[2]uint64{uint64(d.ID), blk}] = true
			var data []byte
			switch x := rng.IntN(10); {
			case x == 0: // zeros
			case x == 1 && len(recent) > 0 && len(recent[0]) == d.BlockSize:
				data = recent[rng.IntN(len(recent))]
			default:
				data = block(rng, d.BlockSize)
				recent = append(recent, data)
				if len(recent) > 32 {
					recent = recent[1:]
				}
			}
			ws = append(ws, store.BlockWrite{Disk: d, Block: blk, Data: data})
		}
		if err := r.CaptureAsync(disks[0].Timeline, ws); err != nil {
			t.Fatal(err)
		}
		if i%7 == 6 {
			if err := r.Sync(); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := r.Sync(); err != nil {
		t.Fatal(err)
	}
}

// importStep journals one step of n blocks of d through Begin/Put/Commit,
// as an import does.
func importStep(t testing.TB, r *store.Repo, d store.Disk, n int, rng *mrand.Rand) store.Point {
	t.Helper()
	st, err := r.Begin(d.Timeline, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	var prev []byte
	for i, blk := range rng.Perm(int(d.Blocks()))[:n] {
		data := block(rng, d.BlockSize)
		switch i % 10 {
		case 3:
			data = make([]byte, d.BlockSize)
		case 7:
			if prev != nil {
				data = prev
			}
		}
		prev = data
		if err := st.Put(d, uint64(blk), data); err != nil {
			t.Fatal(err)
		}
	}
	p, err := st.Commit()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// sameHistory checks that the replica of name in dst shows what name in
// src shows: the same points (times and block counts), the same
// bookmarks, and at instants random instants the same images, byte for byte.
func sameHistory(t testing.TB, src, dst *store.Repo, name string, instants int, rng *mrand.Rand) {
	t.Helper()
	tlS, dS, err := src.Members(name)
	if err != nil {
		t.Fatal(err)
	}
	tlD, dD, err := dst.Members(name)
	if err != nil {
		t.Fatal(err)
	}
	all := func(r *store.Repo, tl uint32) []store.Point {
		ps, err := r.Points(tl, time.Unix(0, 0), time.Now().Add(time.Hour), 0)
		if err != nil {
			t.Fatal(err)
		}
		return ps
	}
	pS, pD := all(src, tlS), all(dst, tlD)
	if len(pS) != len(pD) {
		t.Fatalf("%s: %d points at the source, %d on the replica", name, len(pS), len(pD))
	}
	for i := range pS {
		if !pS[i].Time.Equal(pD[i].Time) || pS[i].Blocks != pD[i].Blocks {
			t.Fatalf("%s: point %d is %s with %d blocks at the source, %s with %d on the replica",
				name, i, pS[i].Time, pS[i].Blocks, pD[i].Time, pD[i].Blocks)
		}
	}
	handle := func(r *store.Repo, ds []store.Disk) store.Disk {
		if ds[0].Group == name {
			g, err := r.Group(name)
			if err != nil {
				t.Fatal(err)
			}
			return g.Handle()
		}
		return ds[0]
	}
	marks := func(r *store.Repo, d store.Disk) string {
		bms, err := r.Bookmarks(d)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, bm := range bms {
			out = append(out, fmt.Sprintf("%s@%s/%s", bm.Name, bm.Time.Format(time.RFC3339Nano), bm.Kind))
		}
		return strings.Join(out, " ")
	}
	if a, b := marks(src, handle(src, dS)), marks(dst, handle(dst, dD)); a != b {
		t.Fatalf("%s: bookmarks at the source %q, on the replica %q", name, a, b)
	}
	if len(pS) == 0 {
		return
	}
	first, last := pS[0].Time, pS[len(pS)-1].Time
	for k := range instants {
		at := last
		if k > 0 {
			at = first.Add(time.Duration(rng.Int64N(int64(last.Sub(first)) + 1)))
		}
		a, err := src.PointAt(tlS, at)
		if err != nil {
			t.Fatal(err)
		}
		b, err := dst.PointAt(tlD, at)
		if err != nil {
			t.Fatal(err)
		}
		for i := range dS {
			if !bytes.Equal(image(t, src, dS[i], a.Seq), image(t, dst, dD[i], b.Seq)) {
				t.Fatalf("%s: disk %s at %s differs on the replica", name, dS[i].Name, at.Format(time.RFC3339Nano))
			}
		}
	}
}

// image reads disk d at position seq.
func image(t testing.TB, r *store.Repo, d store.Disk, seq uint64) []byte {
	t.Helper()
	im, err := r.Image(d, seq)
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, d.Size)
	if _, err := im.ReadAt(b, 0); err != nil && err != io.EOF {
		t.Fatal(err)
	}
	return b
}

// proxy relays TCP to a target and can cut, stall and delay the relay;
// it counts the bytes it relays, both ways.
type proxy struct {
	ln      net.Listener
	target  string
	delay   time.Duration // each way
	bytes   atomic.Int64
	stalled atomic.Bool
	mu      sync.Mutex
	conns   []net.Conn
	wg      sync.WaitGroup
}

func newProxy(t testing.TB, target string, delay time.Duration) *proxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, target: target, delay: delay}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(func() {
		ln.Close()
		p.stalled.Store(false)
		p.cut()
		p.wg.Wait()
	})
	return p
}

func (p *proxy) addr() string { return p.ln.Addr().String() }

func (p *proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		u, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, c, u)
		p.mu.Unlock()
		p.wg.Add(2)
		go p.relay(c, u)
		go p.relay(u, c)
	}
}

// relay copies from a to b, each chunk held until delay after it was
// read and while the proxy is stalled.
func (p *proxy) relay(a, b net.Conn) {
	defer p.wg.Done()
	type chunk struct {
		at   time.Time
		data []byte
	}
	ch, done := make(chan chunk, 4096), make(chan struct{})
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		defer close(ch)
		for {
			buf := make([]byte, 32<<10)
			n, err := a.Read(buf)
			if n > 0 {
				p.bytes.Add(int64(n))
				select {
				case ch <- chunk{time.Now(), buf[:n]}:
				case <-done:
					return
				}
			}
			if err != nil {
				return
			}
		}
	}()
	defer close(done)
	defer a.Close()
	defer b.Close()
	for c := range ch {
		time.Sleep(time.Until(c.at.Add(p.delay)))
		for p.stalled.Load() {
			time.Sleep(5 * time.Millisecond)
		}
		if _, err := b.Write(c.data); err != nil {
			return
		}
	}
}

// cut closes every connection relayed so far.
func (p *proxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

// repoWith makes a repository with one disk of 4 KiB blocks.
func repoWith(t testing.TB, name string, size int64) (*store.Repo, store.Disk) {
	t.Helper()
	r, _ := storetest.Repo(t)
	d, err := r.CreateDisk(name, size, 4096)
	if err != nil {
		t.Fatal(err)
	}
	return r, d
}
