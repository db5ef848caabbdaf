package nbd

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
)

const (
	qemuPkg   = "qemu-utils"
	libnbdPkg = "libnbd-bin"
	kib       = 1 << 10
	mib       = 1 << 20
)

func qemuIO(t *testing.T, wantOK bool, args ...string) string {
	t.Helper()
	out := runTool(t, wantOK, needTool(t, "qemu-io", qemuPkg), args...)
	if wantOK && strings.Contains(out, "failed") {
		t.Fatalf("qemu-io %q:\n%s", args, out)
	}
	return out
}

// Patterns written by qemu-io land in the model and read back; write -z
// and discard become Backend.Zero; flush and FUA reach Backend.Flush.
func TestQemuIO(t *testing.T) {
	d := newMemDisk(t, 8*mib)
	addr := startServer(t, exports(map[string]*memDisk{"disk": d}))
	url := "nbd://" + addr + "/disk"

	qemuIO(t, true, "-f", "raw", url, "-c", "write -P 0xab 0 1M", "-c", "read -P 0xab 0 1M", "-c", "flush")
	if data, _ := d.snapshot(); !bytes.Equal(data[:mib], fill(mib, 0xab)) {
		t.Fatal("pattern 0xab not in the model")
	}
	if d.count("F") == 0 {
		t.Fatal("flush did not reach Backend.Flush")
	}

	qemuIO(t, true, "-f", "raw", "-d", "unmap", url,
		"-c", "write -P 0xcd 1M 1M",
		"-c", "write -z 1M 64k",
		"-c", "discard 1536k 64k",
		"-c", "read -P 0 1M 64k", "-c", "read -P 0xcd 1088k 448k", "-c", "read -P 0 1536k 64k")
	data, _ := d.snapshot()
	want := fill(mib, 0xcd)
	clear(want[:64*kib])
	clear(want[512*kib : 576*kib])
	if !bytes.Equal(data[mib:2*mib], want) {
		t.Fatal("write -z / discard did not zero the model")
	}
	if n := d.count("Z "); n < 2 {
		t.Fatalf("%d Backend.Zero calls, want 2", n)
	}

	// qemu-io's default cache mode (writethrough) sets FUA on every
	// write; in writeback mode only write -f does, which adds one flush
	// before the ones qemu sends when it closes the image.
	plain := countAfterWrite(t, d, url, "write -P 0x11 2M 4k")
	fua := countAfterWrite(t, d, url, "write -f -P 0x12 2M 4k")
	if fua != plain+1 {
		t.Fatalf("flushes after a write: %d without FUA, %d with", plain, fua)
	}
	if data, _ := d.snapshot(); !bytes.Equal(data[2*mib:2*mib+4*kib], fill(4*kib, 0x12)) {
		t.Fatal("FUA write not in the model")
	}
}

// countAfterWrite runs one qemu-io write in writeback mode and counts the
// Backend.Flush calls that followed it.
func countAfterWrite(t *testing.T, d *memDisk, url, cmd string) int {
	t.Helper()
	_, before := d.snapshot()
	qemuIO(t, true, "-f", "raw", "-t", "writeback", url, "-c", cmd)
	_, after := d.snapshot()
	log := after[len(before):]
	if len(log) == 0 || !strings.HasPrefix(log[0], "W ") || slices.ContainsFunc(log[1:], func(e string) bool { return e != "F" }) {
		t.Fatalf("%s: backend calls %q", cmd, log)
	}
	return len(log) - 1
}

func TestQemuUnknownExport(t *testing.T) {
	d := newMemDisk(t, mib)
	addr := startServer(t, exports(map[string]*memDisk{"disk": d}))
	out := qemuIO(t, false, "-f", "raw", "nbd://"+addr+"/nope", "-c", "write 0 4k")
	if !strings.Contains(out, "not available") {
		t.Fatalf("qemu-io output:\n%s", out)
	}
	// The default export "" is refused too when the engine has none.
	qemuIO(t, false, "-f", "raw", "nbd://"+addr, "-c", "write 0 4k")
	if _, log := d.snapshot(); len(log) != 0 {
		t.Fatalf("backend calls %q", log)
	}
}

// sourceImage writes a raw image with data, zero runs and an unaligned
// tail pattern, and returns its content.
func sourceImage(t *testing.T, path string, size int) []byte {
	t.Helper()
	src := pattern(size, 42)
	clear(src[size/4 : size/2]) // a long zero run (a hole for the copier)
	clear(src[size-64*kib:])
	if err := os.WriteFile(path, src, 0o600); err != nil {
		t.Fatal(err)
	}
	return src
}

func TestQemuImgConvert(t *testing.T) {
	const size = 16 * mib
	d := newMemDisk(t, size)
	copy(d.data, fill(size, 0x99)) // stale content the copy must overwrite
	addr := startServer(t, exports(map[string]*memDisk{"disk": d}))
	dir := t.TempDir()
	src := sourceImage(t, filepath.Join(dir, "src.raw"), size)
	img := needTool(t, "qemu-img", qemuPkg)

	runTool(t, true, img, "convert", "-n", "-f", "raw", "-O", "raw", filepath.Join(dir, "src.raw"), "nbd://"+addr+"/disk")
	if data, _ := d.snapshot(); !bytes.Equal(data, src) {
		t.Fatal("export differs from src.raw after qemu-img convert in")
	}
	copy(d.data[3*mib:], fill(mib, 0x5c)) // change it, then copy out
	runTool(t, true, img, "convert", "-O", "raw", "nbd://"+addr+"/disk", filepath.Join(dir, "out.raw"))
	out, err := os.ReadFile(filepath.Join(dir, "out.raw"))
	if err != nil {
		t.Fatal(err)
	}
	if data, _ := d.snapshot(); !bytes.Equal(out, data) {
		t.Fatal("out.raw differs from the export after qemu-img convert out")
	}
}

// Several qemu-io processes, each on its own connection, write disjoint
// ranges at once; all land.
func TestQemuParallelConnections(t *testing.T) {
	const n = 4
	d := newMemDisk(t, n*2*mib)
	addr := startServer(t, exports(map[string]*memDisk{"disk": d}))
	qio := needTool(t, "qemu-io", qemuPkg)
	var wg sync.WaitGroup
	outs := make([]string, n)
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			var cmds []string
			for j := range 8 {
				off := i*2*mib + j*256*kib
				cmds = append(cmds, "-c", fmt.Sprintf("aio_write -P %#x %d 256k", 0x10+i, off))
			}
			cmds = append(cmds, "-c", "aio_flush", "-c", "flush")
			out, err := runToolErr(qio, append([]string{"-f", "raw", "nbd://" + addr + "/disk"}, cmds...)...)
			outs[i], errs[i] = out, err
		})
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil || strings.Contains(outs[i], "failed") {
			t.Fatalf("client %d: %v\n%s", i, errs[i], outs[i])
		}
	}
	data, _ := d.snapshot()
	for i := range n {
		if !bytes.Equal(data[i*2*mib:(i+1)*2*mib], fill(2*mib, byte(0x10+i))) {
			t.Fatalf("range of client %d did not land", i)
		}
	}
}
