package tests

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"golang.org/x/sys/unix"
)

// TestServiceFiguresAndMetrics: a known workload through a tap (O_DIRECT,
// so each write is one FUSE write) and through NBD (qemu-io); the figures
// of `protections --json` are that workload, and /metrics, scraped, says
// the same.
func TestServiceFiguresAndMetrics(t *testing.T) {
	t.Parallel()
	needRoot(t)
	needTools(t, "qemu-io")
	repo := newRepo(t)
	ok(t, "--repo", repo, "disk", "create", "web", "--size", "4M")
	ok(t, "--repo", repo, "disk", "create", "db", "--size", "4M")
	tapDir := filepath.Join(t.TempDir(), "tap")
	sock := filepath.Join(t.TempDir(), "db.sock")
	// A long sync interval: only the workload's own flushes make writes
	// durable, so that lag and last_durable_write are theirs.
	svc := start(t, func() {
		if isMounted(tapDir) {
			run(t, "umount", "-l", tapDir)
			t.Errorf("the tap at %s was left mounted", tapDir)
		}
	}, "--repo", repo, "serve", "--metrics", "127.0.0.1:0", "--sync-interval", "1h")
	urlRE := regexp.MustCompile(`msg=metrics url=(http://127\.0\.0\.1:\d+/metrics)`)
	svc.waitUntil(t, "serve ready", func() bool {
		return urlRE.MatchString(svc.stderr.String()) && strings.Contains(svc.stderr.String(), "service ready")
	})
	metricsURL := urlRE.FindStringSubmatch(svc.stderr.String())[1]
	ok(t, "--repo", repo, "protect", "web", "--mount", tapDir)
	ok(t, "--repo", repo, "protect", "db", "--nbd", "unix:"+sock)

	// The tap: writes of known sizes from a page-aligned buffer with
	// O_DIRECT, fsync after the third and the last.
	sizes := []int{4096, 8192, 65536, 12288, 4096}
	f, err := os.OpenFile(filepath.Join(tapDir, "web.img"), os.O_RDWR|unix.O_DIRECT, 0)
	if err != nil {
		t.Fatal(err)
	}
	buf, err := unix.Mmap(-1, 0, 1<<20, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(buf)
	var tapBytes int
	var beforeLast time.Time
	off := int64(0)
	for i, n := range sizes {
		for j := range buf[:n] {
			buf[j] = byte(i + 1)
		}
		beforeLast = time.Now()
		if _, err := f.WriteAt(buf[:n], off); err != nil {
			t.Fatal(err)
		}
		off += int64(n)
		tapBytes += n
		if i == 2 || i == len(sizes)-1 {
			if err := f.Sync(); err != nil {
				t.Fatal(err)
			}
		}
	}
	afterSync := time.Now()
	// Closing sends FUSE FLUSH, which the tap makes a flush too (what a
	// program wrote is durable when its close returns): two fsyncs and the
	// close are three.
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	const tapFlushes = 2 + 1

	// NBD: four writes and two explicit flushes. In writeback mode (its
	// default, writethrough, flushes after every write) qemu-io flushes
	// once more when it closes the image, so the service sees three.
	uri := fmt.Sprintf("nbd+unix:///db?socket=%s", sock)
	run(t, "qemu-io", "-f", "raw", "-t", "writeback", uri,
		"-c", "write -P 1 0 64k", "-c", "write -P 2 1M 4k", "-c", "flush",
		"-c", "write -P 3 2M 128k", "-c", "write -P 4 8k 512", "-c", "flush")
	const nbdWrites, nbdBytes, nbdFlushes = 4, 64<<10 + 4<<10 + 128<<10 + 512, 3

	ps := protections(t, repo)
	now := time.Now()
	if len(ps) != 2 || ps[0].Name != "db" || ps[1].Name != "web" {
		t.Fatalf("protections: %+v", ps)
	}
	want := map[string][3]uint64{"web": {uint64(len(sizes)), uint64(tapBytes), tapFlushes}, "db": {nbdWrites, nbdBytes, nbdFlushes}}
	for _, p := range ps {
		if p.State != "running" || len(p.Disks) != 1 || p.Disks[0].Disk != p.Name {
			t.Fatalf("%s: %+v", p.Name, p)
		}
		d, w := p.Disks[0], want[p.Name]
		if d.Writes != w[0] || d.BytesWritten != w[1] || d.Flushes != w[2] {
			t.Errorf("%s (%s): writes %d, bytes %d, flushes %d; the workload did %d, %d, %d", p.Name, p.FrontEnd, d.Writes, d.BytesWritten, d.Flushes, w[0], w[1], w[2])
		}
		// The newest write was flushed: it is the newest durable write,
		// and nothing lags.
		if d.LagNS != 0 || !d.LastDurable.Equal(d.LastWrite) || d.LastDurable.After(now) {
			t.Errorf("%s: lag %v, last write %v, last durable %v (now %v)", p.Name, time.Duration(d.LagNS), d.LastWrite, d.LastDurable, now)
		}
		if d.WritesPerSec <= 0 || d.BytesPerSec <= 0 {
			t.Errorf("%s: writes/s %v, bytes/s %v right after writing", p.Name, d.WritesPerSec, d.BytesPerSec)
		}
	}
	// last_durable_write is the time of the newest durable write (not of
	// the fsync): after the tap's last write began, before its fsync ended.
	if web := ps[1].Disks[0]; web.LastDurable.Before(beforeLast) || web.LastDurable.After(afterSync) {
		t.Errorf("web: last durable write %v, not between the last write's start %v and its fsync's end %v", web.LastDurable, beforeLast, afterSync)
	}

	// /metrics says the same.
	resp, err := http.Get(metricsURL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse %s: %v", metricsURL, err)
	}
	value := func(name, disk string) (float64, bool) {
		fam := fams[name]
		if fam == nil {
			return 0, false
		}
		for _, m := range fam.Metric {
			if label(m, "disk") != disk {
				continue
			}
			switch {
			case m.Counter != nil:
				return m.Counter.GetValue(), true
			case m.Gauge != nil:
				return m.Gauge.GetValue(), true
			case m.Histogram != nil:
				return float64(m.Histogram.GetSampleCount()), true
			}
		}
		return 0, false
	}
	for _, p := range ps {
		d := p.Disks[0]
		for name, jsonValue := range map[string]float64{
			"hindsight_disk_writes_total":                         float64(d.Writes),
			"hindsight_disk_written_bytes_total":                  float64(d.BytesWritten),
			"hindsight_disk_flushes_total":                        float64(d.Flushes),
			"hindsight_disk_flush_duration_seconds":               float64(d.Flushes), // the histogram's count
			"hindsight_disk_lag_seconds":                          0,
			"hindsight_disk_last_durable_write_timestamp_seconds": float64(d.LastDurable.UnixNano()) / 1e9,
		} {
			got, found := value(name, p.Name)
			if !found || got != jsonValue && !(strings.HasSuffix(name, "timestamp_seconds") && abs(got-jsonValue) < 1e-6) {
				t.Errorf("%s{disk=%q} = %v (found %v); protections --json says %v", name, p.Name, got, found, jsonValue)
			}
		}
		if got, _ := value("hindsight_disk_writes_total", p.Name); got != float64(want[p.Name][0]) {
			t.Errorf("%s: /metrics counts %v writes; the workload did %d", p.Name, got, want[p.Name][0])
		}
	}
	if fam := fams["hindsight_service_protections"]; fam == nil || len(fam.Metric) == 0 {
		t.Error("no hindsight_service_protections")
	} else {
		for _, m := range fam.Metric {
			if label(m, "state") == "running" && m.Gauge.GetValue() != 2 {
				t.Errorf("running protections: %v, want 2", m.Gauge.GetValue())
			}
		}
	}
	if up, _ := value("hindsight_service_up", ""); up != 1 {
		t.Errorf("hindsight_service_up = %v", up)
	}
	ok(t, "--repo", repo, "unprotect", "web")
	ok(t, "--repo", repo, "unprotect", "db")
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.Label {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

func abs(x float64) float64 {
	if x < 0 {
		return -x
	}
	return x
}
