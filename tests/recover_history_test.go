package tests

import (
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/zeebo/blake3"
)

// TestRecoverHistoryAndDiff (acceptances 2 and 3): a file rewritten 20
// times (in place and by rename) and touched without change 10 times among
// heavy unrelated writes: history lists exactly the 20 content changes.
// Then diff between two points matches a find/hash comparison of the two
// images mounted by hand.
func TestRecoverHistoryAndDiff(t *testing.T) {
	t.Parallel()
	needRoot(t)
	needTools(t, "mkfs.ext4", "losetup", "findmnt")
	repo := newRepo(t)
	td := buildDisk(t, "", partSpec{"ext4", 48 << 20})
	ok(t, "--repo", repo, "disk", "create", "db", "--size", fmt.Sprint(td.size))
	start := time.Date(2026, 11, 25, 9, 0, 0, 0, time.UTC)
	var changedAt []time.Time
	const steps = 31 // step 0 creates the file; then 20 rewrites and 10 touches
	for i := 0; i < steps; i++ {
		td.change(t, 0, func(dir string) {
			cfg := filepath.Join(dir, "etc/app/config.ini")
			switch {
			case i == 0:
				write(t, dir, map[string]string{"etc/app/config.ini": "version 0\n"})
			case i%3 == 0: // touched, content unchanged
				must(t, os.Chtimes(cfg, start.Add(time.Duration(i)*time.Hour), start.Add(time.Duration(i)*time.Hour)))
			case i%2 == 0: // rewritten in place
				must(t, os.WriteFile(cfg, []byte(fmt.Sprintf("version %d\n%s", i, make([]byte, 100*i))), 0o644))
			default: // replaced by rename, as editors do: a new inode
				tmp := cfg + ".new"
				must(t, os.WriteFile(tmp, []byte(fmt.Sprintf("version %d\n", i)), 0o644))
				must(t, os.Rename(tmp, cfg))
			}
			// Heavy unrelated writes: 2 MiB of new files, some removed again.
			junk := make([]byte, 1<<20)
			rand.Read(junk)
			write(t, dir, map[string]string{fmt.Sprintf("var/junk/%d-a", i): string(junk), fmt.Sprintf("var/junk/%d-b", i): string(junk[:512<<10])})
			if i > 2 {
				os.Remove(filepath.Join(dir, fmt.Sprintf("var/junk/%d-a", i-2)))
			}
		})
		at := start.Add(time.Duration(i) * time.Minute)
		ok(t, "--repo", repo, "import", "db", td.img, "--at", at.Format(time.RFC3339))
		if i > 0 && i%3 != 0 {
			changedAt = append(changedAt, at)
		}
	}
	if len(changedAt) != 20 {
		t.Fatalf("test bug: %d rewrites", len(changedAt))
	}

	var h struct {
		Method   string `json:"method"`
		Examined int    `json:"instants_examined"`
		Versions []struct {
			Time   time.Time `json:"time"`
			Change string    `json:"change"`
			Size   int64     `json:"size"`
		} `json:"versions"`
	}
	must(t, json.Unmarshal([]byte(ok(t, "--repo", repo, "--json", "history", "db", "/etc/app/config.ini")), &h))
	if h.Method != "block-journal" || len(h.Versions) != 21 || h.Versions[0].Change != "first" {
		t.Fatalf("history: method %s, %d versions (want first + 20): %+v", h.Method, len(h.Versions), h.Versions)
	}
	for k, v := range h.Versions[1:] {
		if v.Change != "changed" || !v.Time.Equal(changedAt[k]) {
			t.Errorf("change %d: %s at %s, want changed at %s", k, v.Change, v.Time, changedAt[k])
		}
	}
	t.Logf("history: %d instants examined of %d points", h.Examined, steps)
	// --since limits the range; the first line is the file as it was then.
	must(t, json.Unmarshal([]byte(ok(t, "--repo", repo, "--json", "history", "db", "/etc/app/config.ini", "--since", changedAt[17].Format(time.RFC3339))), &h))
	if len(h.Versions) != 3 || !h.Versions[0].Time.Equal(changedAt[17]) {
		t.Errorf("--since: %+v", h.Versions)
	}

	// Diff between points 5 and 20 against the two images mounted by hand.
	from, to := start.Add(5*time.Minute), start.Add(20*time.Minute)
	var d struct {
		Changes []struct {
			Path   string `json:"path"`
			Change string `json:"change"`
			Type   string `json:"type"`
		} `json:"changes"`
	}
	must(t, json.Unmarshal([]byte(ok(t, "--repo", repo, "--json", "diff", "db", "--from", from.Format(time.RFC3339), "--to", to.Format(time.RFC3339))), &d))
	got := map[string]string{}
	for _, c := range d.Changes {
		got[c.Path] = c.Change
	}
	mnt := mountRepo(t, repo)
	tree := func(at time.Time) map[string]string {
		dir := mountRO(t, attachLoop(t, filepath.Join(mnt, "db", at.Format("20060102T150405Z"), "db-flat.vmdk"), 0, 0))
		out := map[string]string{}
		filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
			must(t, err)
			rel := "/" + must2(filepath.Rel(dir, p))
			if rel == "/." || rel == "/lost+found" {
				return nil
			}
			switch {
			case e.Type().IsRegular():
				b, _ := os.ReadFile(p)
				out[rel] = fmt.Sprintf("file %x", blake3.Sum256(b))
			case e.IsDir():
				out[rel] = "dir"
			default:
				l, _ := os.Readlink(p)
				out[rel] = "link " + l
			}
			return nil
		})
		return out
	}
	a, b := tree(from), tree(to)
	want := map[string]string{}
	for p, v := range a {
		if w, ok := b[p]; !ok {
			want[p] = "removed"
		} else if w != v && v != "dir" {
			want[p] = "changed"
		}
	}
	for p := range b {
		if _, ok := a[p]; !ok {
			want[p] = "added"
		}
	}
	if fmt.Sprint(sorted(got)) != fmt.Sprint(sorted(want)) {
		t.Errorf("diff:\n got %v\nwant %v", sorted(got), sorted(want))
	}
	noRecoverLeftovers(t)
}

func must2(s string, err error) string {
	if err != nil {
		panic(err)
	}
	return s
}

func sorted(m map[string]string) []string {
	var out []string
	for k, v := range m {
		out = append(out, v+" "+k)
	}
	sort.Strings(out)
	return out
}
