package tests

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// duReport is the part of `du --json` the test checks.
type duReport struct {
	Disks []struct {
		Name           string `json:"name"`
		Group          string `json:"group"`
		BlockSize      int    `json:"block_size"`
		Versions       uint64 `json:"versions"`
		ZeroVersions   uint64 `json:"zero_versions"`
		LogicalBytes   int64  `json:"logical_bytes"`
		Content        uint64 `json:"content"`
		StoredBytes    int64  `json:"stored_bytes"`
		ExclusiveBytes int64  `json:"exclusive_bytes"`
		Ages           []struct {
			Label        string `json:"label"`
			Versions     uint64 `json:"versions"`
			ZeroVersions uint64 `json:"zero_versions"`
			LogicalBytes int64  `json:"logical_bytes"`
		} `json:"ages"`
	} `json:"disks"`
	Versions     uint64 `json:"versions"`
	ZeroVersions uint64 `json:"zero_versions"`
	LogicalBytes int64  `json:"logical_bytes"`
	Content      struct {
		Count       uint64 `json:"count"`
		PlainBytes  int64  `json:"plain_bytes"`
		StoredBytes int64  `json:"stored_bytes"`
	} `json:"content"`
	Unreferenced struct {
		Count       uint64 `json:"count"`
		StoredBytes int64  `json:"stored_bytes"`
	} `json:"unreferenced"`
	DedupeRatio      float64 `json:"dedupe_ratio"`
	CompressionRatio float64 `json:"compression_ratio"`
	Files            struct {
		Segments, Index, Records, Views, Other, Total int64
	} `json:"files"`
}

// TestDu: images of known content imported at known times; `du --json`
// counts exactly what they hold, the stored bytes add up to the segment
// files, and the files' total is what du(1) says. `points --at` says which
// point shows an instant between two points.
func TestDu(t *testing.T) {
	t.Parallel()
	repo := newRepo(t)
	const bs = 4096
	ok(t, "--repo", repo, "disk", "create", "web", "--size", "1M")
	ok(t, "--repo", repo, "disk", "create", "db", "--size", "1M")
	rng := rand.New(rand.NewPCG(18, 18))
	random := func() []byte {
		b := make([]byte, bs)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		return b
	}
	put := func(img []byte, block int, data []byte) { copy(img[block*bs:], data) }
	write := func(name string, img []byte) string {
		p := filepath.Join(t.TempDir(), name)
		if err := os.WriteFile(p, img, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	// web, ten days ago: 64 unique random blocks, 16 copies of block 0,
	// 16 copies of one compressible block; the rest zeros (never written).
	img1 := make([]byte, 1<<20)
	r := make([][]byte, 64)
	for i := range r {
		r[i] = random()
		put(img1, i, r[i])
	}
	for i := 64; i < 80; i++ {
		put(img1, i, r[0])
	}
	text := bytes.Repeat([]byte("hindsight du counts every block once per content. "), bs)[:bs]
	for i := 80; i < 96; i++ {
		put(img1, i, text)
	}
	// web, two hours ago: blocks 0-9 rewritten, block 80 zeroed, block
	// 100 takes block 1's old content.
	img2 := bytes.Clone(img1)
	for i := 0; i < 10; i++ {
		put(img2, i, random())
	}
	put(img2, 80, make([]byte, bs))
	put(img2, 100, r[1])
	// db, forty days ago: web's block 5 and three unique blocks.
	img3 := make([]byte, 1<<20)
	put(img3, 0, r[5])
	for i := 1; i < 4; i++ {
		put(img3, i, random())
	}
	now := time.Now().UTC()
	t1, t2, t3 := now.Add(-10*24*time.Hour), now.Add(-2*time.Hour), now.Add(-40*24*time.Hour)
	ok(t, "--repo", repo, "import", "web", write("1", img1), "--at", t1.Format(time.RFC3339Nano))
	ok(t, "--repo", repo, "import", "web", write("2", img2), "--at", t2.Format(time.RFC3339Nano))
	ok(t, "--repo", repo, "import", "db", write("3", img3), "--at", t3.Format(time.RFC3339Nano))

	var u duReport
	if err := json.Unmarshal([]byte(ok(t, "--repo", repo, "du", "--json")), &u); err != nil {
		t.Fatal(err)
	}
	// Every content but the compressible one is random, stored raw: the
	// segment files (imports append content and nothing else) give it.
	var segs int64
	ents, err := os.ReadDir(filepath.Join(repo, "segments"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		fi, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		segs += fi.Size()
	}
	const unique = 64 + 10 + 3 // random contents
	textStored := segs - unique*bs
	if textStored <= 0 || textStored >= bs/4 {
		t.Fatalf("segments hold %d bytes: %d for the compressible block of %d", segs, textStored, bs)
	}

	type disk struct {
		versions, zeros, content uint64
		stored, exclusive        int64
		ages                     map[string]uint64 // versions by band
	}
	want := map[string]disk{
		"web": {versions: 96 + 10 + 1, zeros: 1, content: 64 + 1 + 10, stored: 74*bs + textStored, exclusive: 73*bs + textStored,
			ages: map[string]uint64{"24h": 11, "30d": 96}},
		"db": {versions: 4, content: 4, stored: 4 * bs, exclusive: 3 * bs, ages: map[string]uint64{"365d": 4}},
	}
	if len(u.Disks) != len(want) {
		t.Fatalf("%d disks, want %d", len(u.Disks), len(want))
	}
	for _, d := range u.Disks {
		w := want[d.Name]
		if d.Versions != w.versions || d.ZeroVersions != w.zeros || d.LogicalBytes != int64(w.versions)*bs ||
			d.Content != w.content || d.StoredBytes != w.stored || d.ExclusiveBytes != w.exclusive || d.BlockSize != bs {
			t.Errorf("%s: %+v, want %+v", d.Name, d, w)
		}
		for _, a := range d.Ages {
			if a.Versions != w.ages[a.Label] || a.LogicalBytes != int64(a.Versions)*bs {
				t.Errorf("%s band %s: %d versions, %d bytes; want %d", d.Name, a.Label, a.Versions, a.LogicalBytes, w.ages[a.Label])
			}
		}
	}
	const versions, content = 107 + 4, unique + 1
	if u.Versions != versions || u.ZeroVersions != 1 || u.LogicalBytes != versions*bs ||
		u.Content.Count != content || u.Content.PlainBytes != content*bs || u.Content.StoredBytes != segs || u.Unreferenced.Count != 0 {
		t.Errorf("repository: %d versions, %d zero, %d bytes, content %+v, unreferenced %+v", u.Versions, u.ZeroVersions, u.LogicalBytes, u.Content, u.Unreferenced)
	}
	if w := float64(versions) / content; strconv.FormatFloat(u.DedupeRatio, 'f', 9, 64) != strconv.FormatFloat(w, 'f', 9, 64) {
		t.Errorf("dedupe ratio %v, want %v", u.DedupeRatio, w)
	}
	if w := float64(content*bs) / float64(segs); strconv.FormatFloat(u.CompressionRatio, 'f', 9, 64) != strconv.FormatFloat(w, 'f', 9, 64) {
		t.Errorf("compression ratio %v, want %v", u.CompressionRatio, w)
	}
	// du(1) sees the same directory, less the view du itself had open.
	f := u.Files
	fields := strings.Fields(run(t, "du", "-sB1", repo))
	duTotal, err := strconv.ParseInt(fields[0], 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	if diff := float64(f.Total-duTotal) / float64(duTotal); diff < -0.02 || diff > 0.02 {
		t.Errorf("files total %d, du -sB1 says %d", f.Total, duTotal)
	}
	if f.Segments+f.Index+f.Records+f.Views+f.Other != f.Total || f.Segments < segs || f.Index == 0 || f.Records == 0 {
		t.Errorf("files %+v", f)
	}

	// A disk limits the per-disk part only.
	var one duReport
	if err := json.Unmarshal([]byte(ok(t, "--repo", repo, "du", "db", "--json")), &one); err != nil {
		t.Fatal(err)
	}
	if len(one.Disks) != 1 || one.Disks[0].Name != "db" || one.Content != u.Content {
		t.Errorf("du db: disks %+v, content %+v", one.Disks, one.Content)
	}
	if r := hs(t, "--repo", repo, "du", "nope"); r.code != 3 {
		t.Errorf("du of an unknown disk: exit %d, want 3", r.code)
	}
	if out := ok(t, "--repo", repo, "du"); !strings.Contains(out, "web") || !strings.Contains(out, "dedupe") {
		t.Errorf("du: %s", out)
	}

	// An instant between the two points of web resolves to the first.
	mid := t1.Add(time.Hour)
	var rows []struct {
		Seq       uint64    `json:"seq"`
		Time      time.Time `json:"time"`
		Requested time.Time `json:"requested"`
		Resolved  struct {
			Time time.Time `json:"time"`
			Seq  uint64    `json:"seq"`
		} `json:"resolved"`
	}
	if err := json.Unmarshal([]byte(ok(t, "--repo", repo, "points", "web", "--at", mid.Format(time.RFC3339Nano), "--at", "latest", "--json")), &rows); err != nil {
		t.Fatal(err)
	}
	if len(rows) != 2 || !rows[0].Requested.Equal(mid) || !rows[0].Resolved.Time.Equal(t1) || rows[0].Resolved.Seq != rows[0].Seq ||
		!rows[0].Time.Equal(t1) || !rows[1].Resolved.Time.Equal(t2) || !rows[1].Requested.Equal(t2) || rows[1].Resolved.Seq <= rows[0].Resolved.Seq {
		t.Errorf("points --at %s --at latest: %+v; want %s and %s resolved", mid, rows, t1, t2)
	}
}
