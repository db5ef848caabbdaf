package store

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// usageWrite is one block write of the usage model: nil data is zeros.
type usageWrite struct {
	disk  string
	block uint64
	data  []byte
}

// usageModel is what the test wrote, kept apart from the store: every
// version with its disk and time, and the stored size of every content,
// measured as the growth of the segment files (imports append content raw
// or compressed, nothing else).
type usageModel struct {
	bs       map[string]int
	versions []modelVersion
	stored   map[Hash]int64
	gone     map[string]bool // deleted disks
}

type modelVersion struct {
	disk string
	at   time.Time
	hash Hash // zero: an all-zero block
}

// segmentBytes is the apparent size of every segment file: with the writer
// closed (segments truncated to their content) the stored bytes of all content.
func segmentBytes(t *testing.T, dir string) int64 {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(dir, "segments"))
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, e := range ents {
		fi, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		n += fi.Size()
	}
	return n
}

// phase opens the writer, journals steps (one per time, writes on one
// timeline), closes it, and credits the segments' growth to the content
// the phase added: random blocks are stored raw, so whatever remains is
// the one compressible content the phase may add.
func (m *usageModel) phase(t *testing.T, dir, owner string, steps map[time.Time][]usageWrite, compressible []byte) {
	t.Helper()
	before := segmentBytes(t, dir)
	r, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	tl := mustOwner(t, r, owner)
	var times []time.Time
	for at := range steps {
		times = append(times, at)
	}
	sortTimes(times)
	fresh := map[Hash]int64{} // new content: its block size
	for _, at := range times {
		s, err := r.Begin(tl, at)
		if err != nil {
			t.Fatal(err)
		}
		for _, w := range steps[at] {
			d := mustDisk(t, r, w.disk)
			data := w.data
			if data == nil {
				data = make([]byte, d.BlockSize)
			}
			if err := s.Put(d, w.block, data); err != nil {
				t.Fatal(err)
			}
			var h Hash
			if w.data != nil {
				h = HashBlock(w.data)
				if _, ok := m.stored[h]; !ok {
					fresh[h] = int64(d.BlockSize)
				}
			}
			m.versions = append(m.versions, modelVersion{w.disk, at, h})
		}
		if _, err := s.Commit(); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	grown := segmentBytes(t, dir) - before
	var ch Hash
	if compressible != nil {
		ch = HashBlock(compressible)
	}
	for h, n := range fresh {
		if h != ch {
			m.stored[h] = n // random: raw, one block
			grown -= n
		}
	}
	if compressible == nil {
		if grown != 0 {
			t.Fatalf("phase %s: segments grew by %d bytes beyond its random blocks", owner, grown)
		}
		return
	}
	if fresh[ch] == 0 {
		t.Fatalf("phase %s: its compressible block was not new", owner)
	}
	if grown <= 0 || grown >= int64(len(compressible))/2 {
		t.Fatalf("phase %s: the compressible block takes %d stored bytes of %d: not compressed", owner, grown, len(compressible))
	}
	m.stored[ch] = grown
}

func mustOwner(t *testing.T, r *Repo, name string) uint32 {
	t.Helper()
	tl, _, err := r.Members(name)
	if err != nil {
		t.Fatal(err)
	}
	return tl
}

func sortTimes(ts []time.Time) {
	for i := range ts {
		for j := i + 1; j < len(ts); j++ {
			if ts[j].Before(ts[i]) {
				ts[i], ts[j] = ts[j], ts[i]
			}
		}
	}
}

// want computes every figure of Usage from the model.
func (m *usageModel) want(now time.Time, bands []time.Duration) *Usage {
	u := &Usage{}
	disks := map[string]*DiskUsage{}
	refs := map[Hash]map[string]bool{}
	plain := map[Hash]int64{}
	for _, v := range m.versions {
		if m.gone[v.disk] {
			continue
		}
		d := disks[v.disk]
		if d == nil {
			d = &DiskUsage{Name: v.disk, BlockSize: m.bs[v.disk], Ages: make([]AgeBand, len(bands)+1)}
			disks[v.disk] = d
		}
		band := len(bands)
		for i, b := range bands {
			if now.Sub(v.at) <= b {
				band = i
				break
			}
		}
		if v.hash == (Hash{}) {
			u.ZeroVersions++
			d.ZeroVersions++
			d.Ages[band].ZeroVersions++
			continue
		}
		bs := int64(m.bs[v.disk])
		u.Versions++
		u.LogicalBytes += bs
		d.Versions++
		d.LogicalBytes += bs
		d.Ages[band].Versions++
		d.Ages[band].LogicalBytes += bs
		if refs[v.hash] == nil {
			refs[v.hash] = map[string]bool{}
		}
		if !refs[v.hash][v.disk] {
			refs[v.hash][v.disk] = true
			d.Content++
			d.StoredBytes += m.stored[v.hash]
		}
		plain[v.hash] = bs
	}
	for h, ds := range m.stored {
		if refs[h] == nil {
			u.Unreferenced.Count++
			u.Unreferenced.StoredBytes += ds
			continue
		}
		u.Content.Count++
		u.Content.PlainBytes += plain[h]
		u.Content.StoredBytes += ds
		if len(refs[h]) == 1 {
			for name := range refs[h] {
				disks[name].ExclusiveBytes += ds
			}
		}
	}
	for _, d := range disks {
		u.Disks = append(u.Disks, *d)
	}
	return u
}

// compressibleBlock is text-like: a short random phrase repeated.
func compressibleBlock(rng *rand.Rand, bs int) []byte {
	phrase := make([]byte, 48)
	for i := range phrase {
		phrase[i] = 'a' + byte(rng.IntN(26))
	}
	return bytes.Repeat(phrase, bs/len(phrase)+1)[:bs]
}

func randomBlock(rng *rand.Rand, bs int) []byte {
	b := make([]byte, bs)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

// TestUsage writes a known mix through the store (unique random blocks,
// one block on several disks, repeats within a disk, zero blocks,
// compressible blocks, a group, a deleted disk) at known times, and checks
// every figure of Usage, read from a view beside the writer, against the
// model; the files' figures against du.
func TestUsage(t *testing.T) {
	dir := t.TempDir()
	if err := Init(dir); err != nil {
		t.Fatal(err)
	}
	r, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	const bs, gbs = 4096, 8192
	m := &usageModel{bs: map[string]int{"a": bs, "b": bs, "gone": bs, "c": gbs, "e": gbs}, stored: map[Hash]int64{}, gone: map[string]bool{}}
	for name, size := range m.bs {
		if _, err := r.CreateDisk(name, int64(size)*64, size); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := r.CreateGroup("g", []string{"c", "e"}); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}

	rng := rand.New(rand.NewPCG(18, 5))
	R := make([][]byte, 10)
	for i := range R {
		R[i] = randomBlock(rng, bs)
	}
	G := randomBlock(rng, gbs)
	C := [][]byte{compressibleBlock(rng, bs), compressibleBlock(rng, bs), compressibleBlock(rng, gbs), compressibleBlock(rng, bs)}
	now := time.Date(2026, 12, 20, 12, 0, 0, 0, time.UTC)
	ago := func(d time.Duration) time.Time { return now.Add(-d) }
	const day = 24 * time.Hour

	m.phase(t, dir, "a", map[time.Time][]usageWrite{
		ago(400 * day): {{"a", 0, R[0]}, {"a", 1, R[1]}, {"a", 2, R[2]}, {"a", 3, R[3]},
			{"a", 4, R[0]}, {"a", 5, nil}, {"a", 6, C[0]}, {"a", 7, C[0]}}, // repeats, a zero, compressible twice
		ago(40 * day):         {{"a", 0, R[0]}, {"a", 1, nil}, {"a", 8, R[4]}}, // the same content again, a block zeroed
		ago(30 * day):         {{"a", 9, R[5]}},                                // exactly on a band's edge: in 30d
		ago(30 * time.Minute): {{"a", 10, R[6]}, {"a", 0, nil}},
	}, C[0])
	m.phase(t, dir, "b", map[time.Time][]usageWrite{
		ago(10 * day): {{"b", 0, R[1]}, {"b", 1, C[0]}, {"b", 2, C[1]}, {"b", 3, nil}}, // shared with a
		ago(day):      {{"b", 4, R[7]}},                                                // exactly 24h
	}, C[1])
	m.phase(t, dir, "g", map[time.Time][]usageWrite{
		ago(5 * day): {{"c", 0, G}, {"e", 0, G}, {"e", 1, C[2]}, {"c", 1, nil}}, // one timeline, shared within the group
	}, C[2])
	m.phase(t, dir, "gone", map[time.Time][]usageWrite{
		ago(3 * day): {{"gone", 0, R[8]}, {"gone", 1, R[2]}, {"gone", 2, C[3]}},
	}, C[3])
	// Deleting a disk leaves its own content unreferenced, not what it shared.
	r, err = Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.DeleteDisk("gone"); err != nil {
		t.Fatal(err)
	}
	m.gone["gone"] = true

	// Read beside the writer, from its newest view.
	v, err := Open(dir, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	got, err := v.Usage(context.Background(), now, nil)
	v.Close()
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	want := m.want(now, DefaultAgeBands)
	checkUsage(t, got, want)
	if got.At != now || got.Head == 0 {
		t.Errorf("at %s head %d, want %s and a head", got.At, got.Head, now)
	}
	if want := []string{"1h", "24h", "7d", "30d", "365d", "older"}; len(got.Disks) > 0 {
		for i, b := range got.Disks[0].Ages {
			if b.Label != want[i] {
				t.Errorf("band %d: label %q, want %q", i, b.Label, want[i])
			}
		}
	}
	// The model's content sizes add up to the segment files: each measured once.
	var total int64
	for _, n := range m.stored {
		total += n
	}
	if all := got.Content.StoredBytes + got.Unreferenced.StoredBytes; all != total || total != segmentBytes(t, dir) {
		t.Errorf("stored bytes: usage %d, model %d, segment files %d", all, total, segmentBytes(t, dir))
	}

	// Files, measured with a view open (as du would see them), against du.
	v, err = Open(dir, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	got, err = v.Usage(context.Background(), now, []time.Duration{time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	f := got.Files
	for _, c := range []struct {
		path string
		n    int64
	}{{"segments", f.Segments}, {"records.log", f.Records}, {"", f.Total}} {
		if du := duBytes(t, filepath.Join(dir, c.path)); du != c.n {
			t.Errorf("%s: %d bytes, du says %d", c.path, c.n, du)
		}
	}
	// du counts a file linked twice once, in the first argument that names it.
	if du := duBytes(t, filepath.Join(dir, "db"), filepath.Join(dir, "views")); du != f.Index+f.Views {
		t.Errorf("db and views: %d + %d bytes, du says %d", f.Index, f.Views, du)
	}
	if sum := f.Segments + f.Index + f.Records + f.Views + f.Other; sum != f.Total || f.Index == 0 || f.Segments == 0 {
		t.Errorf("files %+v: parts add up to %d", f, sum)
	}
	if n := len(got.Disks[0].Ages); n != 2 {
		t.Errorf("one band asked: %d bands, want 2", n)
	}
}

// duBytes is what du -scB1 says the paths take together.
func duBytes(t *testing.T, paths ...string) int64 {
	t.Helper()
	out, err := exec.Command("du", append([]string{"-scB1"}, paths...)...).Output()
	if err != nil {
		t.Fatalf("du %v: %v", paths, err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	n, err := strconv.ParseInt(strings.Fields(lines[len(lines)-1])[0], 10, 64)
	if err != nil {
		t.Fatalf("du %v: %q", paths, out)
	}
	return n
}

func checkUsage(t *testing.T, got, want *Usage) {
	t.Helper()
	if got.Versions != want.Versions || got.ZeroVersions != want.ZeroVersions || got.LogicalBytes != want.LogicalBytes {
		t.Errorf("totals: %d versions, %d zero, %d bytes; want %d, %d, %d",
			got.Versions, got.ZeroVersions, got.LogicalBytes, want.Versions, want.ZeroVersions, want.LogicalBytes)
	}
	if got.Content != want.Content {
		t.Errorf("content %+v, want %+v", got.Content, want.Content)
	}
	if got.Unreferenced.Count != want.Unreferenced.Count || got.Unreferenced.StoredBytes != want.Unreferenced.StoredBytes {
		t.Errorf("unreferenced %+v, want %+v", got.Unreferenced, want.Unreferenced)
	}
	if w := float64(want.LogicalBytes) / float64(want.Content.PlainBytes); fmt.Sprint(got.DedupeRatio) != fmt.Sprint(w) {
		t.Errorf("dedupe ratio %v, want %v", got.DedupeRatio, w)
	}
	if w := float64(want.Content.PlainBytes) / float64(want.Content.StoredBytes); fmt.Sprint(got.CompressionRatio) != fmt.Sprint(w) {
		t.Errorf("compression ratio %v, want %v", got.CompressionRatio, w)
	}
	if len(got.Disks) != len(want.Disks) {
		t.Fatalf("%d disks, want %d", len(got.Disks), len(want.Disks))
	}
	for _, g := range got.Disks {
		var w *DiskUsage
		for i := range want.Disks {
			if want.Disks[i].Name == g.Name {
				w = &want.Disks[i]
			}
		}
		if w == nil {
			t.Errorf("disk %q: not in the model", g.Name)
			continue
		}
		if g.BlockSize != w.BlockSize || g.Versions != w.Versions || g.ZeroVersions != w.ZeroVersions || g.LogicalBytes != w.LogicalBytes ||
			g.Content != w.Content || g.StoredBytes != w.StoredBytes || g.ExclusiveBytes != w.ExclusiveBytes {
			t.Errorf("disk %q:\n got %+v\nwant %+v", g.Name, fmtDiskUsage(g), fmtDiskUsage(*w))
		}
		for i := range w.Ages {
			gb, wb := g.Ages[i], w.Ages[i]
			if gb.Versions != wb.Versions || gb.ZeroVersions != wb.ZeroVersions || gb.LogicalBytes != wb.LogicalBytes {
				t.Errorf("disk %q band %s: %d versions, %d zero, %d bytes; want %d, %d, %d", g.Name, gb.Label,
					gb.Versions, gb.ZeroVersions, gb.LogicalBytes, wb.Versions, wb.ZeroVersions, wb.LogicalBytes)
			}
		}
	}
}

func fmtDiskUsage(d DiskUsage) string {
	d.Ages = nil
	return fmt.Sprintf("%+v", d)
}

// Captured content counts before it reaches the content index (it does at
// the next Sync), and once after.
func TestUsageCapturedContent(t *testing.T) {
	_, r := newRepo(t)
	d, err := r.CreateDisk("d", 4096*16, 4096)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(7, 7))
	x, y := randomBlock(rng, 4096), randomBlock(rng, 4096)
	now := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	if _, err := r.CaptureAt(d.Timeline, now.Add(-2*time.Hour), []BlockWrite{{d, 0, x}, {d, 1, x}, {d, 2, make([]byte, 4096)}}); err != nil {
		t.Fatal(err)
	}
	check := func(stage string, versions, content uint64, band0 uint64) {
		t.Helper()
		u, err := r.Usage(context.Background(), now, nil)
		if err != nil {
			t.Fatal(err)
		}
		du := u.Disks[0]
		if du.Versions != versions || du.ZeroVersions != 1 || du.Content != content || du.StoredBytes != int64(content)*4096 ||
			u.Content.Count != content || u.Content.PlainBytes != int64(content)*4096 || u.Unreferenced.Count != 0 ||
			du.Ages[0].Versions != band0 || du.Ages[1].Versions+du.Ages[0].Versions != versions {
			t.Errorf("%s: %+v, content %+v, unreferenced %+v", stage, du, u.Content, u.Unreferenced)
		}
	}
	check("before sync", 2, 1, 0)
	if err := r.Sync(); err != nil {
		t.Fatal(err)
	}
	check("after sync", 2, 1, 0)
	if _, err := r.CaptureAt(d.Timeline, now.Add(-time.Minute), []BlockWrite{{d, 3, y}, {d, 4, x}}); err != nil {
		t.Fatal(err)
	}
	check("second capture", 4, 2, 2)
}

// A step's batches committed before its last (a large import) are not
// counted until the step commits: they are above the head.
func TestUsageSkipsUncommittedStep(t *testing.T) {
	_, r := newRepo(t)
	d, err := r.CreateDisk("d", 4096*16, 4096)
	if err != nil {
		t.Fatal(err)
	}
	s, err := r.Begin(d.Timeline, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Put(d, 0, randomBlock(rand.New(rand.NewPCG(1, 1)), 4096)); err != nil {
		t.Fatal(err)
	}
	if err := s.flush(r.Head()); err != nil { // as Put does past stepBatchBytes
		t.Fatal(err)
	}
	u, err := r.Usage(context.Background(), time.Now(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if u.Versions != 0 || u.Disks[0].Versions != 0 || u.Content.Count != 0 {
		t.Errorf("during the step: %d versions, content %+v", u.Versions, u.Content)
	}
	if _, err := s.Commit(); err != nil {
		t.Fatal(err)
	}
	if u, err = r.Usage(context.Background(), time.Now(), nil); err != nil {
		t.Fatal(err)
	}
	if u.Versions != 1 || u.Disks[0].Ages[0].Versions != 1 || u.Content.Count != 1 {
		t.Errorf("after the step: %d versions, bands %+v, content %+v", u.Versions, u.Disks[0].Ages, u.Content)
	}
}
