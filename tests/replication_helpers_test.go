package tests

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Helpers of replication_test.go (issue 19): certificates, tokens, a TCP
// fault proxy run in the test process, and what `replications --json`,
// `points --json` and `export` say, read as a script reads them.

// --- certificates ---

// repPKI is a certificate authority and a server certificate for
// 127.0.0.1 signed by it, as PEM files in a test directory.
type repPKI struct {
	CA, Cert, Key string
}

// newRepPKI writes a new CA and a server certificate for 127.0.0.1 (and
// localhost) valid from an hour ago for a day.
func newRepPKI(t *testing.T) repPKI {
	t.Helper()
	dir := t.TempDir()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	must(t, err)
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "hindsight test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	must(t, err)
	ca, err := x509.ParseCertificate(caDER)
	must(t, err)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	must(t, err)
	leafTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, DNSNames: []string{"localhost"},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, ca, &key.PublicKey, caKey)
	must(t, err)
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	must(t, err)
	p := repPKI{CA: filepath.Join(dir, "ca.pem"), Cert: filepath.Join(dir, "server.pem"), Key: filepath.Join(dir, "server.key")}
	writePEM(t, p.CA, "CERTIFICATE", caDER)
	writePEM(t, p.Cert, "CERTIFICATE", leafDER)
	writePEM(t, p.Key, "PRIVATE KEY", keyDER)
	return p
}

func writePEM(t *testing.T, path, typ string, der []byte) {
	t.Helper()
	must(t, os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600))
}

// listenFlags are the flags of `serve` that take replication streams at
// addr with p's certificate and the tokens file.
func (p repPKI) listenFlags(addr, tokens string) []string {
	return []string{"--replication-listen", addr, "--tls-cert", p.Cert, "--tls-key", p.Key, "--tokens", tokens}
}

// --- tokens ---

// writeTokens writes a target's tokens file (owner-only), one line each:
// "SOURCE TOKEN NAME[,NAME...]".
func writeTokens(t *testing.T, lines ...string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "tokens")
	must(t, os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o600))
	return path
}

// writeTokenFile writes a source's token file (owner-only).
func writeTokenFile(t *testing.T, token string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "token")
	must(t, os.WriteFile(path, []byte(token+"\n"), 0o600))
	return path
}

// freeAddr is a loopback address with a port free a moment ago: a
// listener that must come back on the same port after a restart needs
// it fixed in advance.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// --- a TCP fault proxy ---

// faultProxy forwards TCP connections to a target and counts the bytes
// both ways. It can cut every connection, stall (stop forwarding, on
// every connection, new ones too, until resumed) and delay each chunk.
type faultProxy struct {
	ln     net.Listener
	target string
	closed chan struct{}
	wg     sync.WaitGroup

	mu      sync.Mutex
	conns   map[*proxyPair]struct{}
	stalled chan struct{} // non-nil while stalled: closed by resume
	delay   time.Duration

	up, down atomic.Int64 // bytes forwarded source→target, target→source
	accepted atomic.Int64
	cuts     atomic.Int64 // connections cut
}

// proxyPair is one forwarded connection.
type proxyPair struct {
	a, b net.Conn
	once sync.Once
	done chan struct{}
}

func (p *proxyPair) close() {
	p.once.Do(func() {
		close(p.done)
		p.a.Close()
		p.b.Close()
	})
}

// newFaultProxy listens on a loopback port and forwards to target until
// the test ends.
func newFaultProxy(t *testing.T, target string) *faultProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	p := &faultProxy{ln: ln, target: target, closed: make(chan struct{}), conns: map[*proxyPair]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

// addr is where sources connect: hs://ADDR.
func (p *faultProxy) addr() string { return p.ln.Addr().String() }

func (p *faultProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.accepted.Add(1)
		up, err := net.DialTimeout("tcp", p.target, 5*time.Second)
		if err != nil {
			c.Close() // the target is down: the source sees a cut
			continue
		}
		pair := &proxyPair{a: c, b: up, done: make(chan struct{})}
		p.mu.Lock()
		p.conns[pair] = struct{}{}
		p.mu.Unlock()
		p.wg.Add(2)
		go p.pump(pair, up, c, &p.up)
		go p.pump(pair, c, up, &p.down)
	}
}

// pump copies src to dst chunk by chunk, each through the gate.
func (p *faultProxy) pump(pair *proxyPair, dst, src net.Conn, n *atomic.Int64) {
	defer p.wg.Done()
	defer func() {
		pair.close()
		p.mu.Lock()
		delete(p.conns, pair)
		p.mu.Unlock()
	}()
	buf := make([]byte, 32<<10)
	for {
		k, err := src.Read(buf)
		if k > 0 {
			if !p.gate(pair) {
				return
			}
			if _, werr := dst.Write(buf[:k]); werr != nil {
				return
			}
			n.Add(int64(k))
		}
		if err != nil {
			return
		}
	}
}

// gate holds a chunk while the proxy is stalled and for the delay; false:
// the connection was cut meanwhile.
func (p *faultProxy) gate(pair *proxyPair) bool {
	p.mu.Lock()
	stalled, delay := p.stalled, p.delay
	p.mu.Unlock()
	if stalled != nil {
		select {
		case <-stalled:
		case <-pair.done:
			return false
		}
	}
	if delay > 0 {
		select {
		case <-time.After(delay):
		case <-pair.done:
			return false
		}
	}
	return true
}

// cut closes every connection, as a broken link would; it returns how many.
func (p *faultProxy) cut() int {
	p.mu.Lock()
	pairs := make([]*proxyPair, 0, len(p.conns))
	for c := range p.conns {
		pairs = append(pairs, c)
	}
	p.mu.Unlock()
	for _, c := range pairs {
		c.close()
	}
	p.cuts.Add(int64(len(pairs)))
	return len(pairs)
}

// stall stops forwarding until resume.
func (p *faultProxy) stall() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stalled == nil {
		p.stalled = make(chan struct{})
	}
}

// resume forwards again what stall held.
func (p *faultProxy) resume() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stalled != nil {
		close(p.stalled)
		p.stalled = nil
	}
}

// setDelay delays every chunk forwarded from now on by d (0: none).
func (p *faultProxy) setDelay(d time.Duration) {
	p.mu.Lock()
	p.delay = d
	p.mu.Unlock()
}

// wire is the bytes forwarded both ways so far.
func (p *faultProxy) wire() (up, down int64) { return p.up.Load(), p.down.Load() }

func (p *faultProxy) close() {
	select {
	case <-p.closed:
		return
	default:
	}
	close(p.closed)
	p.ln.Close()
	p.resume()
	p.cut()
	p.wg.Wait()
}

// --- what the CLI reports ---

// repStatus is one entry of `replications --json`, by its documented
// field names.
type repStatus struct {
	Spec struct {
		Name       string `json:"name"`
		To         string `json:"to"`
		Sync       bool   `json:"sync"`
		OnLinkLoss string `json:"on_link_loss"`
		Failback   bool   `json:"failback"`
	} `json:"spec"`
	Name         string    `json:"name"`
	Target       string    `json:"target"`
	State        string    `json:"state"`
	Sync         bool      `json:"sync"`
	Degraded     bool      `json:"degraded"`
	Acked        uint64    `json:"acked_seq"`
	AckedTime    time.Time `json:"acked_time"`
	LagSeconds   float64   `json:"lag_seconds"`
	LagBytes     int64     `json:"lag_bytes"`
	WireBytes    uint64    `json:"wire_bytes"`
	Steps        uint64    `json:"steps_sent"`
	Blocks       uint64    `json:"blocks_sent"`
	ContentSent  uint64    `json:"content_blocks_sent"`
	ContentBytes uint64    `json:"content_bytes_sent"`
	Reconnects   uint64    `json:"reconnects"`
	LastError    string    `json:"last_error"`
}

// hsQuiet runs the binary without a testing.T, for goroutines beside the
// test: its stdout, and an error saying why it failed.
func hsQuiet(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, hsBin, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.Env = append(os.Environ(), "HINDSIGHT_REPO=", "GORACE=atexit_sleep_ms=0")
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("hindsight %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return out.String(), nil
}

func parseReplications(out string) (map[string]repStatus, error) {
	var sts []repStatus
	if err := json.Unmarshal([]byte(out), &sts); err != nil {
		return nil, fmt.Errorf("replications --json: %v\n%s", err, out)
	}
	m := map[string]repStatus{}
	for _, st := range sts {
		m[st.Spec.Name] = st
	}
	return m, nil
}

// replications is `replications --json` of repo's service by name.
func replications(t *testing.T, repo string) map[string]repStatus {
	t.Helper()
	m, err := parseReplications(ok(t, "--repo", repo, "--json", "replications"))
	must(t, err)
	return m
}

// waitReplication polls `replications --json` until cond holds for
// name's entry, and returns it; it fails the test after d.
func waitReplication(t *testing.T, repo, name string, d time.Duration, what string, cond func(repStatus) bool) repStatus {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		st, there := replications(t, repo)[name]
		if there && cond(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("replication of %s: not %s after %v; last: %+v", name, what, d, st)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitCaughtUp waits until the target acknowledged disk's newest point on
// repo (its source) and returns the replication's status.
func waitCaughtUp(t *testing.T, repo, disk string, d time.Duration) repStatus {
	t.Helper()
	waitPublished(t, repo)
	head := newestPoint(t, repo, disk).Seq
	return waitReplication(t, repo, disk, d, fmt.Sprintf("caught up to seq %d", head),
		func(st repStatus) bool { return st.Acked >= head })
}

// waitNewestAt waits until disk's newest point on repo, as readers in
// other processes see it, is at least at at: a target acknowledges what is
// durable, and publishes it to readers a moment later.
func waitNewestAt(t *testing.T, repo, disk string, at time.Time) repPoint {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var ps []repPoint
		out, err := hsQuiet(context.Background(), "--repo", repo, "--json", "points", disk, "--limit", "1")
		if err == nil && json.Unmarshal([]byte(out), &ps) == nil && len(ps) == 1 && !ps[0].Time.Before(at) {
			return ps[0]
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s's newest point on %s is not at %s after 10s: %v %s", disk, repo, at.Format(time.RFC3339Nano), err, out)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// repPoint is one row of `points --json`.
type repPoint struct {
	Seq    uint64    `json:"seq"`
	Time   time.Time `json:"time"`
	Blocks uint64    `json:"blocks"`
}

// allPoints lists every point of disk, oldest first.
func allPoints(t *testing.T, repo, disk string) []repPoint {
	t.Helper()
	var ps []repPoint
	out := ok(t, "--repo", repo, "--json", "points", disk, "--limit", "0")
	if err := json.Unmarshal([]byte(out), &ps); err != nil {
		t.Fatalf("points --json: %v\n%.2000s", err, out)
	}
	return ps
}

// newestPoint is disk's newest point.
func newestPoint(t *testing.T, repo, disk string) repPoint {
	t.Helper()
	var ps []repPoint
	out := ok(t, "--repo", repo, "--json", "points", disk, "--limit", "1")
	if err := json.Unmarshal([]byte(out), &ps); err != nil || len(ps) != 1 {
		t.Fatalf("points --limit 1 --json: %v\n%s", err, out)
	}
	return ps[0]
}

// samePoints compares two lists of points by time and block count (the
// positions differ between repositories) and says where they first part.
func samePoints(src, dst []repPoint) string {
	for i := range min(len(src), len(dst)) {
		if !src[i].Time.Equal(dst[i].Time) || src[i].Blocks != dst[i].Blocks {
			near := func(ps []repPoint) string {
				var s []string
				for _, p := range ps[max(0, i-2):min(len(ps), i+3)] {
					s = append(s, fmt.Sprintf("%s/%d", p.Time.Format(time.RFC3339Nano), p.Blocks))
				}
				return strings.Join(s, " ")
			}
			return fmt.Sprintf("point %d: source %s (%d blocks), replica %s (%d blocks)\n source near it:  %s\n replica near it: %s",
				i, src[i].Time.Format(time.RFC3339Nano), src[i].Blocks, dst[i].Time.Format(time.RFC3339Nano), dst[i].Blocks, near(src), near(dst))
		}
	}
	if len(src) != len(dst) {
		return fmt.Sprintf("the source has %d points, the replica %d", len(src), len(dst))
	}
	return ""
}

// exportHash exports disk at instant (or its newest with "") to a file,
// hashes it with SHA-256 and removes it; no testing.T, so that several
// run at once.
func exportHash(repo, disk, instant, dir string) ([32]byte, error) {
	f, err := os.CreateTemp(dir, "export")
	if err != nil {
		return [32]byte{}, err
	}
	out := f.Name()
	f.Close()
	os.Remove(out)
	defer os.Remove(out)
	args := []string{"--repo", repo, "export", disk, "--out", out}
	if instant != "" {
		args = append(args, "--at", instant)
	}
	if _, err := hsQuiet(context.Background(), args...); err != nil {
		return [32]byte{}, err
	}
	f, err = os.Open(out)
	if err != nil {
		return [32]byte{}, err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return [32]byte{}, err
	}
	return [32]byte(h.Sum(nil)), nil
}

// exportNewest is disk's newest image on repo.
func exportNewest(t *testing.T, repo, disk string) []byte {
	t.Helper()
	out := filepath.Join(t.TempDir(), "newest.raw")
	ok(t, "--repo", repo, "export", disk, "--out", out)
	b, err := os.ReadFile(out)
	must(t, err)
	os.Remove(out)
	return b
}

// --- acknowledged positions seen during a run ---

// ackSample is what one poll of `replications --json` said.
type ackSample struct {
	at    time.Time
	acked uint64
	time  time.Time
	state string
}

// ackPoller polls a source's `replications --json` for one replication
// until stopped, keeping every answer: a log of acknowledged positions.
type ackPoller struct {
	stop    chan struct{}
	done    chan struct{}
	mu      sync.Mutex
	samples []ackSample
	fails   int // polls that got no answer (the service was down)
}

func pollAcks(t *testing.T, repo, name string, every time.Duration) *ackPoller {
	p := &ackPoller{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			out, err := hsQuiet(ctx, "--repo", repo, "--json", "replications")
			cancel()
			var st repStatus
			var there bool
			if err == nil {
				var m map[string]repStatus
				if m, err = parseReplications(out); err == nil {
					st, there = m[name]
				}
			}
			p.mu.Lock()
			if err != nil || !there {
				p.fails++
			} else {
				p.samples = append(p.samples, ackSample{at: time.Now(), acked: st.Acked, time: st.AckedTime, state: st.State})
			}
			p.mu.Unlock()
			select {
			case <-p.stop:
				return
			case <-time.After(every):
			}
		}
	}()
	t.Cleanup(func() { p.end() })
	return p
}

// end stops polling (safe to call twice) and returns the log.
func (p *ackPoller) end() []ackSample {
	select {
	case <-p.stop:
	default:
		close(p.stop)
	}
	<-p.done
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.samples
}

// checkAckLog checks that the acknowledged positions (and their times)
// never go backwards; a 0 position is "not known yet" (a source that just
// restarted) and is skipped. It returns how many distinct positions it saw.
func checkAckLog(t *testing.T, log []ackSample) int {
	t.Helper()
	var last ackSample
	distinct := 0
	for _, s := range log {
		if s.acked == 0 {
			continue
		}
		if s.acked < last.acked || s.time.Before(last.time) {
			t.Errorf("the acknowledged position went backwards: seq %d (%s) at %s after seq %d (%s) at %s",
				s.acked, s.time.Format(time.RFC3339Nano), s.at.Format(time.RFC3339Nano),
				last.acked, last.time.Format(time.RFC3339Nano), last.at.Format(time.RFC3339Nano))
		}
		if s.acked != last.acked {
			distinct++
		}
		last = s
	}
	return distinct
}

// --- tap writes ---

// tapWriter writes whole 4 KiB blocks to a tap's file and fsyncs them.
type tapWriter struct {
	f *os.File
}

func openTap(t *testing.T, path string) *tapWriter {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	must(t, err)
	w := &tapWriter{f: f}
	t.Cleanup(func() { w.f.Close() })
	return w
}

// write writes data at block b; it does not fsync.
func (w *tapWriter) write(b int, data []byte) error {
	_, err := w.f.WriteAt(data, int64(b)*4096)
	return err
}

// fsyncTimed fsyncs in a goroutine and reports on the channel when it
// returned, with its error.
func (w *tapWriter) fsyncTimed() <-chan error {
	ch := make(chan error, 1)
	go func() { ch <- w.f.Sync() }()
	return ch
}

// blockOf is a 4 KiB block that names its test, block and version.
func blockOf(tag string, b, v int) []byte {
	p := bytes.Repeat([]byte(fmt.Sprintf("%s block %d version %d;", tag, b, v)), 4096/16)
	return p[:4096]
}

// errSlow: an fsync took longer than allowed.
var errSlow = errors.New("fsync did not return in time")

// waitFsync waits up to d for an fsync started with fsyncTimed.
func waitFsync(ch <-chan error, d time.Duration) error {
	select {
	case err := <-ch:
		return err
	case <-time.After(d):
		return errSlow
	}
}

// imgDiff counts the 4 KiB blocks in which a and b differ; images of
// different sizes differ everywhere.
func imgDiff(a, b []byte) int {
	if len(a) != len(b) {
		return max(len(a), len(b)) / 4096
	}
	return diffBlocks(a, b)
}
