package tests

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// This file: issue 17's acceptance items 3 (kill -9 of `hindsight serve`
// under load, restarted ten times) and 4 (isolation of misbehaving front
// ends). Helpers carry an svc prefix so that they do not collide with
// tests/service_test.go.

// svcStart runs `hindsight serve` on repo and waits until its control
// socket answers. Cleanup stops it with SIGTERM unless the test killed it.
func svcStart(t *testing.T, repo string) *proc {
	t.Helper()
	p := start(t, nil, "--repo", repo, "serve", "--sync-interval", "200ms")
	p.waitUntil(t, "hindsight serve ready", func() bool {
		_, err := os.Stat(filepath.Join(repo, "run", "control.sock"))
		return err == nil && strings.Contains(p.stderr.String(), "service ready")
	})
	return p
}

// svcProtections runs `protections --json` and returns its entries by
// name, and how long the command took.
func svcProtections(t *testing.T, repo string) (map[string]protStatus, time.Duration) {
	t.Helper()
	begin := time.Now()
	ps := protections(t, repo)
	took := time.Since(begin)
	m := map[string]protStatus{}
	for _, p := range ps {
		m[p.Name] = p
	}
	return m, took
}

// svcAllRunning waits until every protection in names is listed as
// running by the service.
func svcAllRunning(t *testing.T, p *proc, repo string, names ...string) {
	t.Helper()
	var last map[string]protStatus
	deadline := time.Now().Add(15 * time.Second)
	for {
		last, _ = svcProtections(t, repo)
		missing := ""
		for _, n := range names {
			if e, ok := last[n]; !ok || e.State != "running" {
				missing = n
				break
			}
		}
		if missing == "" {
			return
		}
		if p.exited() || time.Now().After(deadline) {
			t.Fatalf("protection %s is not running after the restart: %+v\nservice log:\n%s", missing, last[missing], p.stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// --- a small NBD client (fixed newstyle, NBD_OPT_GO, simple replies) ---

const (
	nbdMagic        = 0x4e42444d41474943
	nbdOptMagic     = 0x49484156454f5054
	nbdOptReply     = 0x3e889045565a9
	nbdRequestMagic = 0x25609513
	nbdSimpleMagic  = 0x67446698
	nbdOptGo        = 7
	nbdRepAck       = 1
	nbdCmdRead      = 0
	nbdCmdWrite     = 1
	nbdCmdFlush     = 3
)

// svcNBD is one NBD connection to an export.
type svcNBD struct {
	nc     net.Conn
	br     *bufio.Reader
	handle uint64
}

// svcDialNBD connects to export over the Unix socket sock.
func svcDialNBD(sock, export string) (*svcNBD, error) {
	nc, err := net.DialTimeout("unix", sock, 5*time.Second)
	if err != nil {
		return nil, err
	}
	c := &svcNBD{nc: nc, br: bufio.NewReader(nc)}
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	if err := c.handshake(export); err != nil {
		nc.Close()
		return nil, fmt.Errorf("nbd handshake with %s: %w", sock, err)
	}
	nc.SetDeadline(time.Time{})
	return c, nil
}

func (c *svcNBD) handshake(export string) error {
	var g [18]byte
	if _, err := io.ReadFull(c.br, g[:]); err != nil {
		return err
	}
	if binary.BigEndian.Uint64(g[0:]) != nbdMagic || binary.BigEndian.Uint64(g[8:]) != nbdOptMagic {
		return fmt.Errorf("bad greeting % x", g)
	}
	b := binary.BigEndian.AppendUint32(nil, 3) // FIXED_NEWSTYLE | NO_ZEROES
	b = binary.BigEndian.AppendUint64(b, nbdOptMagic)
	b = binary.BigEndian.AppendUint32(b, nbdOptGo)
	b = binary.BigEndian.AppendUint32(b, uint32(4+len(export)+2))
	b = binary.BigEndian.AppendUint32(b, uint32(len(export)))
	b = append(b, export...)
	b = binary.BigEndian.AppendUint16(b, 0)
	if _, err := c.nc.Write(b); err != nil {
		return err
	}
	for {
		var h [20]byte
		if _, err := io.ReadFull(c.br, h[:]); err != nil {
			return err
		}
		if binary.BigEndian.Uint64(h[0:]) != nbdOptReply {
			return fmt.Errorf("bad option reply % x", h)
		}
		typ := binary.BigEndian.Uint32(h[12:])
		if _, err := io.CopyN(io.Discard, c.br, int64(binary.BigEndian.Uint32(h[16:]))); err != nil {
			return err
		}
		switch {
		case typ == nbdRepAck:
			return nil
		case typ&(1<<31) != 0:
			return fmt.Errorf("export %q refused: reply type %#x", export, typ)
		}
	}
}

// request sends one request; it does not wait for the reply.
func (c *svcNBD) request(typ uint16, off uint64, length uint32, payload []byte) error {
	c.handle++
	b := binary.BigEndian.AppendUint32(make([]byte, 0, 28+len(payload)), nbdRequestMagic)
	b = binary.BigEndian.AppendUint16(b, 0)
	b = binary.BigEndian.AppendUint16(b, typ)
	b = binary.BigEndian.AppendUint64(b, c.handle)
	b = binary.BigEndian.AppendUint64(b, off)
	b = binary.BigEndian.AppendUint32(b, length)
	_, err := c.nc.Write(append(b, payload...))
	return err
}

// call sends a WRITE or FLUSH and waits for its reply.
func (c *svcNBD) call(typ uint16, off uint64, payload []byte) error {
	if err := c.request(typ, off, uint32(len(payload)), payload); err != nil {
		return err
	}
	var h [16]byte
	if _, err := io.ReadFull(c.br, h[:]); err != nil {
		return err
	}
	if binary.BigEndian.Uint32(h[0:]) != nbdSimpleMagic || binary.BigEndian.Uint64(h[8:]) != c.handle {
		return fmt.Errorf("bad reply % x", h)
	}
	if e := binary.BigEndian.Uint32(h[4:]); e != 0 {
		return fmt.Errorf("nbd error %d", e)
	}
	return nil
}

func (c *svcNBD) write(off int64, p []byte) error { return c.call(nbdCmdWrite, uint64(off), p) }
func (c *svcNBD) flush() error                    { return c.call(nbdCmdFlush, 0, nil) }
func (c *svcNBD) Close() error                    { return c.nc.Close() }

// --- a block model: which version of each block was acknowledged durable ---

const svcBlock = 4096

// svcBlocks models a disk written in whole 4 KiB blocks, each a version
// that names the disk (tag), the block and the version, with a checksum.
type svcBlocks struct {
	tag     uint32
	sent    []uint32       // newest version written to each block
	durable []uint32       // newest version acknowledged durable
	pending map[int]uint32 // written since the last acknowledged flush
	cycle   int
	when    map[int]string
	base    []byte // the disk before the model wrote it
	rng     *rand.Rand
}

func newSvcBlocks(tag uint32, size int64, base []byte, rng *rand.Rand) *svcBlocks {
	n := int(size / svcBlock)
	return &svcBlocks{tag: tag, sent: make([]uint32, n), durable: make([]uint32, n), pending: map[int]uint32{}, when: map[int]string{}, base: base, rng: rng}
}

func svcBlockBytes(tag uint32, b int, v uint32) []byte {
	p := make([]byte, svcBlock)
	binary.LittleEndian.PutUint32(p, tag)
	binary.LittleEndian.PutUint32(p[4:], uint32(b))
	binary.LittleEndian.PutUint32(p[8:], v)
	for i := 12; i < svcBlock-32; i++ {
		p[i] = byte(int(tag)*31 + b*7 + int(v)*13 + i)
	}
	sum := sha256.Sum256(p[:svcBlock-32])
	copy(p[svcBlock-32:], sum[:])
	return p
}

// next picks a block and its next version and returns its offset and bytes.
func (m *svcBlocks) next() (int64, []byte) {
	b := m.rng.IntN(len(m.sent))
	m.sent[b]++
	m.pending[b] = m.sent[b]
	return int64(b) * svcBlock, svcBlockBytes(m.tag, b, m.sent[b])
}

// unacked forgets the write at off from what the next flush makes
// durable: it failed (the service was killed under it), so the block may
// hold it or not, and check accepts either (any version at least the
// durable one). Without this, the next cycle's first flush would claim
// it.
func (m *svcBlocks) unacked(off int64) { delete(m.pending, int(off/svcBlock)) }

// restarted forgets the writes never flushed before a kill: they may be
// lost (the frames and the index tail were still in the process's
// buffers), so a flush to the next service does not make them durable.
func (m *svcBlocks) restarted() { clear(m.pending) }

// flushed records that everything written so far is durable.
func (m *svcBlocks) flushed() {
	for b, v := range m.pending {
		m.durable[b] = max(m.durable[b], v)
		if m.when == nil {
			m.when = map[int]string{}
		}
		m.when[b] = fmt.Sprintf("cycle %d at %s", m.cycle, time.Now().Format("15:04:05.000"))
	}
	clear(m.pending)
}

// check compares an image of the disk with the model: a block holds its
// base content only if no version of it was acknowledged durable, else a
// whole version at least as new as the durable one. It describes the
// first mismatch, "" if none.
func (m *svcBlocks) check(img []byte) string {
	if len(img) != len(m.sent)*svcBlock {
		return fmt.Sprintf("the image is %d bytes, want %d", len(img), len(m.sent)*svcBlock)
	}
	for b := range m.sent {
		got := img[b*svcBlock : (b+1)*svcBlock]
		v := binary.LittleEndian.Uint32(got[8:])
		whole := binary.LittleEndian.Uint32(got) == m.tag && binary.LittleEndian.Uint32(got[4:]) == uint32(b) &&
			v >= 1 && v <= m.sent[b] && bytes.Equal(got, svcBlockBytes(m.tag, b, v))
		switch {
		case whole && v >= m.durable[b]:
		case m.durable[b] == 0 && bytes.Equal(got, m.base[b*svcBlock:(b+1)*svcBlock]):
		case whole:
			return fmt.Sprintf("block %d holds version %d, older than version %d acknowledged durable", b, v, m.durable[b])
		default:
			return fmt.Sprintf("block %d is neither a written version nor its old content (version %d acknowledged durable, %d sent, flushed %s; it holds tag %d block %d version %d, zero: %v)",
				b, m.durable[b], m.sent[b], m.when[b], binary.LittleEndian.Uint32(got), binary.LittleEndian.Uint32(got[4:]), v, allZeroBytes(got))
		}
	}
	return ""
}

// svcExport exports disk's newest instant and returns it.
func svcExport(t *testing.T, repo, disk string) []byte {
	t.Helper()
	out := filepath.Join(t.TempDir(), disk+".img")
	ok(t, "--repo", repo, "export", disk, "--out", out)
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	os.Remove(out)
	return b
}

// --- ext4 through a loop device on a tap ---

// svcExt4 is the user's side of a tap: a loop device on the tap's file
// and ext4 mounted on it, with records appended and fsynced to files.
type svcExt4 struct {
	t     *testing.T
	img   string // the tap's file
	dev   string
	mnt   string
	acked []int // per file: records whose fsync returned
}

const svcLogs = 3

// attach attaches the tap's file and mounts ext4 from it (replaying its
// journal, as after any crash).
func (e *svcExt4) attach() {
	e.t.Helper()
	e.dev = strings.TrimSpace(run(e.t, "losetup", "-f", "--show", e.img))
	run(e.t, "mount", "-t", "ext4", "-o", "commit=1", e.dev, e.mnt)
}

// detach unmounts ext4 and detaches the loop device; after a kill the tap
// below is dead, and both go as a user would take them down. Safe to call
// twice.
func (e *svcExt4) detach() {
	if isMounted(e.mnt) {
		if err := exec.Command("umount", e.mnt).Run(); err != nil {
			exec.Command("umount", "-l", e.mnt).Run()
		}
	}
	if e.dev != "" {
		detachLoop(e.t, e.dev)
		e.dev = ""
	}
}

// work appends records to the files until ctx ends or a write fails (the
// service was killed), each fsynced; acked counts those that were.
func (e *svcExt4) work(ctx context.Context, rng *rand.Rand) {
	fds := make([]*os.File, svcLogs)
	defer func() {
		for _, fd := range fds {
			if fd != nil {
				fd.Close()
			}
		}
	}()
	for f := range fds {
		fd, err := os.OpenFile(filepath.Join(e.mnt, fmt.Sprintf("log%d", f)), os.O_CREATE|os.O_WRONLY, 0o644)
		if err != nil {
			return
		}
		fds[f] = fd
		// Records written but never acknowledged may have survived: cut
		// them, so that the file is exactly the acknowledged ones.
		if fd.Truncate(int64(e.acked[f])*512) != nil || fd.Sync() != nil {
			return
		}
	}
	for ctx.Err() == nil {
		f := rng.IntN(svcLogs)
		if _, err := fds[f].WriteAt(recordBytes(f, e.acked[f]), int64(e.acked[f])*512); err != nil {
			return
		}
		if fds[f].Sync() != nil {
			return
		}
		e.acked[f]++
	}
}

// check verifies that every acknowledged record is in dir, a mount of
// the filesystem.
func (e *svcExt4) check(dir, what string) {
	e.t.Helper()
	for f := 0; f < svcLogs; f++ {
		data, err := os.ReadFile(filepath.Join(dir, fmt.Sprintf("log%d", f)))
		if err != nil && e.acked[f] > 0 {
			e.t.Fatalf("%s: log%d: %v (%d records were fsynced)", what, f, err, e.acked[f])
		}
		for i := 0; i < e.acked[f]; i++ {
			if len(data) < (i+1)*512 || !bytes.Equal(data[i*512:(i+1)*512], recordBytes(f, i)) {
				e.t.Fatalf("%s: record %d of log%d, fsynced before the kill, is missing or torn", what, i, f)
			}
		}
	}
}

// checkExport checks the newest instant of the disk: its ext4 journal
// replayed on a scratch copy, e2fsck -fn clean, every acknowledged record
// in it.
func (e *svcExt4) checkExport(repo, disk, what string) {
	e.t.Helper()
	img := filepath.Join(e.t.TempDir(), "t1.img")
	ok(e.t, "--repo", repo, "export", disk, "--out", img)
	defer os.Remove(img)
	if out, err := exec.Command("e2fsck", "-E", "journal_only", "-y", img).CombinedOutput(); err != nil {
		if ee, isExit := err.(*exec.ExitError); !isExit || ee.ExitCode() > 1 {
			e.t.Fatalf("%s: journal replay: %v\n%s", what, err, out)
		}
	}
	if out, err := exec.Command("e2fsck", "-fn", img).CombinedOutput(); err != nil {
		e.t.Fatalf("%s: e2fsck -fn: %v\n%s", what, err, out)
	}
	dev, detach := attachLoopNow(e.t, img, 0, 0)
	defer detach()
	dir, unmount := mountRONow(e.t, dev)
	defer unmount()
	e.check(dir, what)
}

// svcTapBlocks writes a model's blocks to a tap file with pwrite, and
// fdatasync every few writes, until ctx ends or a call fails.
func svcTapBlocks(ctx context.Context, path string, m *svcBlocks) {
	fd, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return
	}
	defer fd.Close()
	m.restarted()
	for i := 1; ctx.Err() == nil; i++ {
		off, p := m.next()
		if _, err := fd.WriteAt(p, off); err != nil {
			m.unacked(off)
			return
		}
		if i%8 == 0 {
			if unix.Fdatasync(int(fd.Fd())) != nil {
				return
			}
			m.flushed()
		}
	}
}

// svcNBDBlocks writes a model's blocks over NBD, with a FLUSH every few
// writes, until ctx ends or a request fails.
func svcNBDBlocks(ctx context.Context, sock, export string, m *svcBlocks) {
	c, err := svcDialNBD(sock, export)
	if err != nil {
		return
	}
	defer c.Close()
	m.restarted()
	for i := 1; ctx.Err() == nil; i++ {
		off, p := m.next()
		if c.write(off, p) != nil {
			m.unacked(off)
			return
		}
		if i%8 == 0 {
			if c.flush() != nil {
				return
			}
			m.flushed()
		}
	}
}

// TestServiceKill9 is issue 17's acceptance item 3. One service protects
// a tap with ext4 on a loop device, an NBD export written by a client
// that flushes, and a clone of the NBD disk written through its tap. Ten
// times, at a random moment under load, the service is killed with
// SIGKILL and started again: it must bring every protection and the clone
// back by itself (the dead taps are not unmounted by the test, only the
// ext4 and loop device on top, as a user would), the newest instant of
// each disk must hold every write acknowledged by fsync or FLUSH before
// the kill, and verify must pass.
//
// kill -9 keeps the page cache: what the killed process wrote reaches the
// disk anyway, so this tests the restart and recovery path, not
// durability across a power cut (powercut_test.go does that).
//
// HINDSIGHT_SERVICE_KILL_SEED=N repeats a run's kill moments.
func TestServiceKill9(t *testing.T) {
	t.Parallel()
	needRoot(t)
	needTools(t, "mkfs.ext4", "e2fsck", "losetup", "mount", "umount")
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("HINDSIGHT_SERVICE_KILL_SEED"); s != "" {
		var err error
		if seed, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatalf("HINDSIGHT_SERVICE_KILL_SEED=%q: want a decimal number", s)
		}
	}
	t.Logf("HINDSIGHT_SERVICE_KILL_SEED=%d", seed)
	rng := rand.New(rand.NewPCG(seed, 17))

	repo := newRepo(t)
	const size = 16 << 20
	ok(t, "--repo", repo, "disk", "create", "t1", "--size", "32M")
	ok(t, "--repo", repo, "disk", "create", "n1", "--size", "16M")
	base := t.TempDir()
	tapDir, cloneDir := filepath.Join(base, "t1"), filepath.Join(base, "c1")
	sock := filepath.Join(base, "n1.sock")
	// Last resort, run last: a tap left mounted by a failed run.
	t.Cleanup(func() {
		for _, d := range []string{tapDir, cloneDir} {
			if isMounted(d) {
				exec.Command("umount", "-l", d).Run()
				t.Errorf("%s was still mounted at the end", d)
			}
		}
	})

	svc := svcStart(t, repo)
	ok(t, "--repo", repo, "protect", "t1", "--mount", tapDir)
	ok(t, "--repo", repo, "protect", "n1", "--nbd", "unix:"+sock)

	// n1 gets content, then is cloned at that instant.
	n1 := newSvcBlocks(1, size, make([]byte, size), rand.New(rand.NewPCG(seed, 1)))
	c, err := svcDialNBD(sock, "n1")
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 256; i++ {
		off, p := n1.next()
		if err := c.write(off, p); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.flush(); err != nil {
		t.Fatal(err)
	}
	n1.flushed()
	c.Close()
	time.Sleep(50 * time.Millisecond)
	at := time.Now().UTC().Format(time.RFC3339Nano)
	ok(t, "--repo", repo, "clone", "n1", "--at", at, "--name", "c1", "--mount", cloneDir)
	cloneBase := svcExport(t, repo, "c1")
	if msg := n1.check(cloneBase); msg != "" {
		t.Fatalf("the clone is not n1 at %s: %s", at, msg)
	}
	c1 := newSvcBlocks(2, size, cloneBase, rand.New(rand.NewPCG(seed, 2)))

	e := &svcExt4{t: t, img: filepath.Join(tapDir, "t1.img"), mnt: t.TempDir(), acked: make([]int, svcLogs)}
	t.Cleanup(e.detach) // runs before the service's SIGTERM: its tap is busy until then
	e.dev = strings.TrimSpace(run(t, "losetup", "-f", "--show", e.img))
	run(t, "mkfs.ext4", "-q", "-E", "lazy_itable_init=0,lazy_journal_init=0", e.dev)
	run(t, "mount", "-t", "ext4", "-o", "commit=1", e.dev, e.mnt)

	wrng := rand.New(rand.NewPCG(seed, 3))
	for cycle := 1; cycle <= 10; cycle++ {
		what := fmt.Sprintf("cycle %d", cycle)
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		wg.Add(3)
		n1.cycle, c1.cycle = cycle, cycle
		go func() { defer wg.Done(); e.work(ctx, wrng) }()
		go func() { defer wg.Done(); svcNBDBlocks(ctx, sock, "n1", n1) }()
		go func() { defer wg.Done(); svcTapBlocks(ctx, filepath.Join(cloneDir, "c1.img"), c1) }()
		load := 700*time.Millisecond + time.Duration(rng.Int64N(int64(1300*time.Millisecond)))
		time.Sleep(load)
		svc.kill()
		cancel()
		wg.Wait()
		t.Logf("%s: killed after %v of load; acknowledged: %v records, n1 %d blocks, c1 %d blocks", what,
			load.Round(time.Millisecond), e.acked, nonZero(n1.durable), nonZero(c1.durable))

		// As a service manager would: start it again, right away.
		svc = svcStart(t, repo)
		t.Cleanup(e.detach) // before this service's SIGTERM: the tap is busy until then
		svcAllRunning(t, svc, repo, "t1", "n1", "c1")
		if msg := n1.check(svcExport(t, repo, "n1")); msg != "" {
			// Tell a lost write from a stale published view: the service's
			// own (newest) state, read over NBD.
			t.Fatalf("%s: n1's newest instant: %s\nthe same disk read from the service over NBD: %s", what, msg, n1.check(svcReadNBD(t, sock, "n1", size)))
		}
		if msg := c1.check(svcExport(t, repo, "c1")); msg != "" {
			t.Fatalf("%s: c1's newest instant: %s", what, msg)
		}
		e.checkExport(repo, "t1", what+": t1's newest instant")
		if r := hs(t, "--repo", repo, "verify"); r.code != 0 {
			t.Fatalf("%s: verify: exit %d\n%s%s", what, r.code, r.stdout, r.stderr)
		}
		// The user's side: ext4 and the loop device on the dead tap go,
		// and come back on the new one.
		e.detach()
		e.attach()
		e.check(e.mnt, what+": the remounted ext4")
	}
}

// svcReadNBD reads the whole export over NBD.
func svcReadNBD(t *testing.T, sock, export string, size int) []byte {
	t.Helper()
	c, err := svcDialNBD(sock, export)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.nc.SetDeadline(time.Now().Add(30 * time.Second))
	img := make([]byte, size)
	for off := 0; off < size; off += 1 << 20 {
		var h [16]byte
		if err := c.request(nbdCmdRead, uint64(off), 1<<20, nil); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c.br, h[:]); err != nil {
			t.Fatal(err)
		}
		if e := binary.BigEndian.Uint32(h[4:]); e != 0 {
			t.Fatalf("nbd read at %d: error %d", off, e)
		}
		if _, err := io.ReadFull(c.br, img[off:off+1<<20]); err != nil {
			t.Fatal(err)
		}
	}
	return img
}

func allZeroBytes(b []byte) bool { return bytes.Count(b, []byte{0}) == len(b) }

func nonZero(v []uint32) int {
	n := 0
	for _, x := range v {
		if x != 0 {
			n++
		}
	}
	return n
}

// --- isolation ---

// svcDirect writes 4 KiB blocks to a tap file with O_DIRECT|O_DSYNC.
type svcDirect struct {
	fd  *os.File
	buf []byte
	off int64
	max int64
}

func svcOpenDirect(t *testing.T, path string, size int64) *svcDirect {
	t.Helper()
	fd, err := os.OpenFile(path, os.O_RDWR|syscall.O_DIRECT|syscall.O_DSYNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fd.Close() })
	// O_DIRECT wants an aligned buffer.
	raw := make([]byte, 2*svcBlock)
	a := (svcBlock - int(uintptr(unsafe.Pointer(&raw[0]))%svcBlock)) % svcBlock
	buf := raw[a : a+svcBlock]
	for i := range buf {
		buf[i] = byte(i * 7)
	}
	return &svcDirect{fd: fd, buf: buf, max: size}
}

func (d *svcDirect) write() error {
	d.buf[0]++ // new content each time: no write is a duplicate
	_, err := d.fd.WriteAt(d.buf, d.off)
	d.off = (d.off + svcBlock) % d.max
	return err
}

// svcRates runs both steady workloads for d and returns their rates in
// writes per second.
func svcRates(t *testing.T, tapW *svcDirect, nbdW *svcNBD, d time.Duration) (tapRate, nbdRate float64) {
	t.Helper()
	var wg sync.WaitGroup
	var tapN, nbdN int
	var tapErr, nbdErr error
	end := time.Now().Add(d)
	wg.Add(2)
	go func() {
		defer wg.Done()
		for time.Now().Before(end) {
			if tapErr = tapW.write(); tapErr != nil {
				return
			}
			tapN++
		}
	}()
	go func() {
		defer wg.Done()
		p := bytes.Repeat([]byte{1}, svcBlock)
		for off := int64(0); time.Now().Before(end); off = (off + svcBlock) % (64 << 20) {
			p[0]++
			nbdW.nc.SetDeadline(time.Now().Add(10 * time.Second))
			if nbdErr = nbdW.write(off, p); nbdErr != nil {
				return
			}
			if nbdErr = nbdW.flush(); nbdErr != nil {
				return
			}
			nbdN++
		}
	}()
	wg.Wait()
	if err := errors.Join(tapErr, nbdErr); err != nil {
		t.Fatalf("a steady workload stalled or failed (a misbehaving client blocks it?): %v", err)
	}
	return float64(tapN) / d.Seconds(), float64(nbdN) / d.Seconds()
}

// svcMisbehave starts the two misbehaving clients: a dd writing big blocks
// to tap y, stopped with SIGSTOP in the middle, and an NBD client of x that
// sends large READs and never reads the replies. stop ends both.
func svcMisbehave(t *testing.T, tapY, sockX string) (stop func()) {
	t.Helper()
	dd := exec.Command("dd", "if=/dev/zero", "of="+tapY, "bs=1M", "count=256", "oflag=direct", "conv=notrunc", "status=none")
	var ddErr syncBuffer
	dd.Stderr = &ddErr
	if err := dd.Start(); err != nil {
		t.Fatal(err)
	}
	ddDone := make(chan struct{})
	go func() { dd.Wait(); close(ddDone) }()
	time.Sleep(150 * time.Millisecond)
	dd.Process.Signal(syscall.SIGSTOP)
	c, err := svcDialNBD(sockX, "x")
	if err != nil {
		t.Fatal(err)
	}
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		// 4 MiB each, far more than the server takes in at once: it
		// stops reading when its replies block, and so does this Write.
		var reqs []byte
		for i := uint64(0); i < 100000; i++ {
			reqs = binary.BigEndian.AppendUint32(reqs, nbdRequestMagic)
			reqs = binary.BigEndian.AppendUint16(reqs, 0)
			reqs = binary.BigEndian.AppendUint16(reqs, nbdCmdRead)
			reqs = binary.BigEndian.AppendUint64(reqs, i)
			reqs = binary.BigEndian.AppendUint64(reqs, i%16<<22)
			reqs = binary.BigEndian.AppendUint32(reqs, 4<<20)
		}
		c.nc.Write(reqs)
	}()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		c.Close()
		<-sent
		dd.Process.Signal(syscall.SIGKILL)
		<-ddDone
	}
	t.Cleanup(stop)
	// Let the server read what it will and block on its replies.
	time.Sleep(400 * time.Millisecond)
	select {
	case <-ddDone:
		t.Fatalf("dd ended before it was stopped: %v\n%s", dd.ProcessState, ddErr.String())
	default:
	}
	// A dd inside a write (state D) stops once the write returns: on a
	// loaded host that can take longer than the sleep above.
	var st []byte
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		st, _ = os.ReadFile(fmt.Sprintf("/proc/%d/stat", dd.Process.Pid))
		if strings.Contains(string(st), ") T ") || time.Now().After(deadline) {
			break
		}
	}
	if !strings.Contains(string(st), ") T ") {
		t.Fatalf("dd is not stopped: %s", st)
	}
	select {
	case <-sent:
		t.Fatal("the server took every READ: it is not blocked on its replies")
	default:
	}
	return stop
}

// median is the middle of xs (the upper one of an even count).
func median(xs []float64) float64 {
	s := slices.Sorted(slices.Values(xs))
	return s[len(s)/2]
}

// TestServiceIsolation is issue 17's acceptance item 4: with an NBD
// client that stops reading replies and a tap writer stopped with SIGSTOP
// mid-write, two other disks (a tap written with O_DIRECT|O_DSYNC, an NBD
// export written with a FLUSH after each write) keep at least 80% of the
// write rate they had without them, and `protections --json` answers
// promptly. Phases with and without the misbehaving clients alternate
// (ABBA) and the median of the rounds' ratios is judged, so that a passing
// burst of load does not decide the outcome. It does not run in parallel: go test runs it
// before the parallel tests start, when the machine is not also running
// this package's heavy workloads (in CI they took the rates from 10k to 24
// writes/s within one phase).
func TestServiceIsolation(t *testing.T) {
	needRoot(t)
	needTools(t, "dd")
	repo := newRepo(t)
	for _, d := range []string{"a", "b", "x"} {
		ok(t, "--repo", repo, "disk", "create", d, "--size", "64M")
	}
	ok(t, "--repo", repo, "disk", "create", "y", "--size", "512M")
	base := t.TempDir()
	t.Cleanup(func() {
		for _, d := range []string{"a", "y"} {
			if dir := filepath.Join(base, d); isMounted(dir) {
				exec.Command("umount", "-l", dir).Run()
				t.Errorf("%s was still mounted at the end", dir)
			}
		}
	})
	svc := svcStart(t, repo)
	ok(t, "--repo", repo, "protect", "a", "--mount", filepath.Join(base, "a"))
	ok(t, "--repo", repo, "protect", "y", "--mount", filepath.Join(base, "y"))
	ok(t, "--repo", repo, "protect", "b", "--nbd", "unix:"+filepath.Join(base, "b.sock"))
	ok(t, "--repo", repo, "protect", "x", "--nbd", "unix:"+filepath.Join(base, "x.sock"))

	tapW := svcOpenDirect(t, filepath.Join(base, "a", "a.img"), 64<<20)
	nbdW, err := svcDialNBD(filepath.Join(base, "b.sock"), "b")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nbdW.Close() })
	svcRates(t, tapW, nbdW, 300*time.Millisecond) // warm up

	const phase = 600 * time.Millisecond
	var baseTap, baseNBD, badTap, badNBD []float64
	measureBase := func() {
		ta, nb := svcRates(t, tapW, nbdW, phase)
		baseTap, baseNBD = append(baseTap, ta), append(baseNBD, nb)
	}
	measureBad := func(round int) {
		stop := svcMisbehave(t, filepath.Join(base, "y", "y.img"), filepath.Join(base, "x.sock"))
		defer stop()
		ta, nb := svcRates(t, tapW, nbdW, phase)
		badTap, badNBD = append(badTap, ta), append(badNBD, nb)
		ps, took := svcProtections(t, repo)
		if took > 3*time.Second {
			t.Errorf("round %d: protections --json took %v beside the misbehaving clients", round, took)
		}
		for _, n := range []string{"a", "b", "x", "y"} {
			if ps[n].State != "running" {
				t.Errorf("round %d: protection %s is %q (%s)", round, n, ps[n].State, ps[n].Error)
			}
		}
	}
	// Each round measures both, in alternating order (ABBA), and is judged
	// by its own ratio: the machine's load drifts over seconds, and the
	// ratio of two adjacent phases is what isolation decides. Other
	// packages' tests run beside this one in make test and can swing the
	// rates a hundredfold within a round: an attempt whose medians fall
	// short is measured again, up to three times. A client that really
	// stalls the others fails every attempt.
	const rounds = 6
	var failures []string
	for attempt := 1; attempt <= 3; attempt++ {
		baseTap, baseNBD, badTap, badNBD = nil, nil, nil, nil
		for round := range rounds {
			if round%2 == 0 {
				measureBase()
				measureBad(round)
			} else {
				measureBad(round)
				measureBase()
			}
		}
		t.Logf("attempt %d: tap a, writes/s: without %.0f, with the misbehaving clients %.0f", attempt, baseTap, badTap)
		t.Logf("attempt %d: nbd b, writes/s: without %.0f, with the misbehaving clients %.0f", attempt, baseNBD, badNBD)
		failures = nil
		for _, w := range []struct {
			name      string
			base, bad []float64
		}{{"the tap a", baseTap, badTap}, {"the NBD export b", baseNBD, badNBD}} {
			ratios := make([]float64, rounds)
			for i := range ratios {
				ratios[i] = w.bad[i] / max(w.base[i], 1)
			}
			if m := median(ratios); m < 0.8 {
				failures = append(failures, fmt.Sprintf("%s kept a median %.2f of its write rate beside the misbehaving clients (ratios per round %.2f), less than 0.8",
					w.name, m, ratios))
			}
		}
		if len(failures) == 0 {
			break
		}
		t.Logf("attempt %d: %s", attempt, strings.Join(failures, "; "))
	}
	for _, f := range failures {
		t.Error(f)
	}
	if svc.exited() {
		t.Fatalf("the service exited: %v\n%s", svc.err, svc.stderr.String())
	}
}
