package export

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hindsight-cdp/hindsight/fs/image"
	"github.com/zeebo/blake3"
)

func testImage(size int) []byte {
	rng := rand.New(rand.NewPCG(7, 8))
	img := make([]byte, size)
	for i := 0; i < size/4; i++ { // a quarter data, the rest zeros (holes)
		img[size/2+i] = byte(rng.Uint32())
	}
	return img
}

func qemuCompare(t *testing.T, format, path, raw string) {
	t.Helper()
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Fatal("qemu-img is not installed: install qemu-utils (make deps)")
	}
	out, err := exec.Command("qemu-img", "compare", "-f", format, "-F", "raw", path, raw).CombinedOutput()
	if err != nil {
		t.Fatalf("qemu-img compare %s: %v\n%s", path, err, out)
	}
}

func TestExportFormats(t *testing.T) {
	const size = 8 << 20
	img := testImage(size)
	dir := t.TempDir()
	model := filepath.Join(dir, "model.raw")
	os.WriteFile(model, img, 0o600)
	m := image.Meta{Name: "web", Size: size, Created: time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)}
	want := blake3.Sum256(img)

	var done int64
	res, err := Export(context.Background(), m, bytes.NewReader(img), Options{Format: "raw", Out: filepath.Join(dir, "a.raw"), Progress: func(n int64) { done = n }})
	if err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(filepath.Join(dir, "a.raw"))
	if !bytes.Equal(got, img) || res.BLAKE3 != fmt.Sprintf("%x", want) || res.Bytes != size || done != size {
		t.Fatalf("raw export: equal=%v %+v progress %d", bytes.Equal(got, img), res, done)
	}
	var st syscall.Stat_t
	syscall.Stat(filepath.Join(dir, "a.raw"), &st)
	if allocated := st.Blocks * 512; allocated > size/2 {
		t.Errorf("raw export allocates %d bytes for %d bytes of data: not sparse", allocated, size/4)
	}

	if _, err := Export(context.Background(), m, bytes.NewReader(img), Options{Format: "vhd", Out: filepath.Join(dir, "a.vhd")}); err != nil {
		t.Fatal(err)
	}
	qemuCompare(t, "vpc", filepath.Join(dir, "a.vhd"), model)

	res, err = Export(context.Background(), m, bytes.NewReader(img), Options{Format: "vmdk", Out: filepath.Join(dir, "copy.vmdk")})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Files) != 2 || res.Files[1] != filepath.Join(dir, "copy-flat.vmdk") || res.BLAKE3 != fmt.Sprintf("%x", want) {
		t.Fatalf("vmdk export: %+v", res)
	}
	qemuCompare(t, "vmdk", filepath.Join(dir, "copy.vmdk"), model)

	if _, err := Export(context.Background(), m, bytes.NewReader(img), Options{Format: "vmdk-stream", Out: filepath.Join(dir, "s.vmdk")}); err != nil {
		t.Fatal(err)
	}
	qemuCompare(t, "vmdk", filepath.Join(dir, "s.vmdk"), model)

	var stdout bytes.Buffer
	if _, err := Export(context.Background(), m, bytes.NewReader(img), Options{Format: "raw", Out: "-", Stdout: &stdout}); err != nil || !bytes.Equal(stdout.Bytes(), img) {
		t.Fatalf("raw to stdout: %v, equal=%v", err, bytes.Equal(stdout.Bytes(), img))
	}
}

func TestExportRefusals(t *testing.T) {
	dir := t.TempDir()
	img := testImage(1 << 20)
	m := image.Meta{Name: "web", Size: 1 << 20}
	existing := filepath.Join(dir, "x.raw")
	os.WriteFile(existing, []byte("keep me"), 0o600)
	if _, err := Export(context.Background(), m, bytes.NewReader(img), Options{Format: "raw", Out: existing}); !errors.Is(err, ErrExists) {
		t.Fatalf("existing target: %v", err)
	}
	if b, _ := os.ReadFile(existing); string(b) != "keep me" {
		t.Fatal("a refused export changed the target")
	}
	if _, err := Export(context.Background(), m, bytes.NewReader(img), Options{Format: "raw", Out: existing, Force: true}); err != nil {
		t.Fatalf("--force: %v", err)
	}
	if _, err := Export(context.Background(), m, bytes.NewReader(img), Options{Format: "vmdk", Out: "-"}); !errors.Is(err, ErrBadTarget) {
		t.Fatalf("vmdk to stdout: %v", err)
	}
	if _, err := Export(context.Background(), m, bytes.NewReader(img), Options{Format: "qcow9", Out: filepath.Join(dir, "q")}); !errors.Is(err, ErrBadTarget) {
		t.Fatalf("unknown format: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	out := filepath.Join(dir, "cancelled.raw")
	if _, err := Export(ctx, m, bytes.NewReader(img), Options{Format: "raw", Out: out}); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled: %v", err)
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Fatal("a cancelled export left a partial file")
	}
}

// failingReader serves an image, fails the read that covers failAt, and
// records reads under way and reads begun after the caller said it closed
// the image, as a repository closed under a running reader would see them.
type failingReader struct {
	img      []byte
	failAt   int64
	inflight atomic.Int32
	closed   atomic.Bool
	late     atomic.Int32 // reads begun after close
}

var errDamaged = errors.New("segment 1 is damaged")

func (r *failingReader) ReadAt(p []byte, off int64) (int, error) {
	if r.closed.Load() {
		r.late.Add(1)
	}
	r.inflight.Add(1)
	defer r.inflight.Add(-1)
	if off <= r.failAt && r.failAt < off+int64(len(p)) {
		return 0, errDamaged // at once: reads after it are still under way
	}
	if off > r.failAt {
		time.Sleep(time.Second) // still under way when the failure is seen
	}
	return copy(p, r.img[off:]), nil
}

// TestExportReadErrorWaits: an export whose reader fails mid-way returns the
// read error, and only once no read is under way or starts afterwards, in
// every format: the caller closes the repository right after it returns.
func TestExportReadErrorWaits(t *testing.T) {
	const size = 32 << 20
	img := testImage(size)
	m := image.Meta{Name: "web", Size: size}
	for _, c := range []struct{ format, out string }{
		{"raw", "a.raw"}, {"raw", "-"}, {"vhd", "a.vhd"}, {"vmdk", "a.vmdk"}, {"vmdk-stream", "s.vmdk"}, {"vmdk-stream", "-"},
	} {
		t.Run(c.format+" "+c.out, func(t *testing.T) {
			before := runtime.NumGoroutine()
			r := &failingReader{img: img, failAt: 9 << 20}
			out := c.out
			if out != "-" {
				out = filepath.Join(t.TempDir(), out)
			}
			_, err := Export(context.Background(), m, r, Options{Format: c.format, Out: out, Stdout: io.Discard})
			r.closed.Store(true)
			if n := r.inflight.Load(); n != 0 {
				t.Errorf("%d reads still under way when Export returned", n)
			}
			if !errors.Is(err, errDamaged) {
				t.Fatalf("Export: %v; want the read error", err)
			}
			time.Sleep(50 * time.Millisecond)
			if n := r.late.Load(); n != 0 {
				t.Errorf("%d reads began after Export returned", n)
			}
			deadline := time.Now().Add(time.Second)
			for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			if after := runtime.NumGoroutine(); after > before {
				t.Errorf("%d goroutines before Export, %d after", before, after)
			}
			if out != "-" {
				if _, err := os.Stat(out); !os.IsNotExist(err) {
					t.Errorf("a failed export left %s", out)
				}
			}
		})
	}
}
