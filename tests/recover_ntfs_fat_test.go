package tests

import (
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// winFile is a file as the test wrote it.
type winFile struct {
	content string
	mtime   time.Time
}

// winPoints is, per point, what each partition holds: p1 (NTFS) and p2
// (FAT32) → path → file. Times are whole even seconds: FAT keeps 2 s.
func winPoints() []map[string]map[string]winFile {
	t0 := time.Date(2025, 3, 4, 5, 6, 8, 0, time.UTC)
	t1 := time.Date(2026, 12, 31, 22, 58, 30, 0, time.UTC) // December: fusefat shows it a month later
	return []map[string]map[string]winFile{
		{
			"p1": {
				"docs/report.txt":           {"report v0\n", t0},
				"docs/notes/todo.txt":       {"todo\n", t0.Add(2 * time.Hour)},
				"Program Files/App/app.ini": {"[app]\nv=0\n", t0.Add(4 * time.Hour)},
			},
			"p2": {
				"EFI/BOOT/BOOTX64.EFI":    {"MZ boot v0\x00\x01\x02", t0},
				"config/grub.cfg":         {"grub v0\n", t0.Add(2 * time.Hour)},
				"config/readme.txt":       {"lower-case 8.3 name\n", t0.Add(4 * time.Hour)},
				"config/Long Name v2.txt": {"long name\n", t0.Add(6 * time.Hour)},
			},
		},
		{
			"p1": {
				"docs/report.txt":           {"report v1, longer than before\n", t1},
				"docs/new.txt":              {"new\n", t1.Add(2 * time.Second)},
				"Program Files/App/app.ini": {"[app]\nv=1\n", t1.Add(4 * time.Second)},
			},
			"p2": {
				"EFI/BOOT/BOOTX64.EFI":    {"MZ boot v1\x00\x01\x02\x03", t1},
				"config/grub.cfg":         {"grub v1\n", t1.Add(2 * time.Second)},
				"config/extra.cfg":        {"extra\n", t1.Add(4 * time.Second)},
				"config/Long Name v2.txt": {"long name\n", t0.Add(6 * time.Hour)},
			},
		},
	}
}

// buildWinDisk makes an MBR image with an NTFS partition (type 7, 32 MiB)
// and a FAT32 one (type c, 40 MiB).
func buildWinDisk(t *testing.T) *testDisk {
	t.Helper()
	td := &testDisk{img: filepath.Join(t.TempDir(), "win.img"), size: 74 << 20,
		specs: []partSpec{{"ntfs", 32 << 20}, {"vfat", 40 << 20}}}
	must(t, os.WriteFile(td.img, nil, 0o600))
	must(t, os.Truncate(td.img, td.size))
	sf := exec.Command("sfdisk", "-q", td.img)
	sf.Stdin = strings.NewReader("label: dos\nstart=2048, size=65536, type=7\nstart=67584, size=81920, type=c\n")
	if out, err := sf.CombinedOutput(); err != nil {
		t.Fatalf("sfdisk: %v\n%s", err, out)
	}
	td.parts = []struct{ offset, size int64 }{{2048 * 512, 32 << 20}, {67584 * 512, 40 << 20}}
	dev, detach := rwLoop(t, td, 0)
	run(t, "mkntfs", "-F", "-Q", "-q", "-L", "win", dev)
	detach()
	dev, detach = rwLoop(t, td, 1)
	run(t, "mkfs.vfat", "-F", "32", "-n", "EFI", dev)
	detach()
	return td
}

// setNTFS makes the NTFS partition hold exactly files (below its root),
// through ntfs-3g mounted read-write.
func (td *testDisk) setNTFS(t *testing.T, files map[string]winFile) {
	t.Helper()
	td.change(t, 0, func(dir string) {
		for _, top := range []string{"docs", "Program Files"} {
			must(t, os.RemoveAll(filepath.Join(dir, top)))
		}
		for name, f := range files {
			write(t, dir, map[string]string{name: f.content})
			must(t, os.Chtimes(filepath.Join(dir, name), f.mtime, f.mtime))
		}
	})
}

// setFAT makes the FAT partition hold exactly files, with mtools.
func (td *testDisk) setFAT(t *testing.T, files map[string]winFile) {
	t.Helper()
	img := fmt.Sprintf("%s@@%d", td.img, td.parts[1].offset)
	mtools := func(args ...string) {
		t.Helper()
		cmd := exec.Command(args[0], append([]string{"-i", img}, args[1:]...)...)
		cmd.Env = append(os.Environ(), "TZ=UTC", "MTOOLS_SKIP_CHECK=1")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	exec.Command("mdeltree", "-i", img, "::/EFI", "::/config").Run() // absent at first
	mtools("mmd", "::/EFI", "::/EFI/BOOT", "::/config")
	src := t.TempDir()
	for name, f := range files {
		p := filepath.Join(src, filepath.Base(name))
		must(t, os.WriteFile(p, []byte(f.content), 0o644))
		must(t, os.Chtimes(p, f.mtime, f.mtime))
		mtools("mcopy", "-m", "-D", "o", p, "::/"+name)
	}
}

// sameTree reports differences between the regular files below dir and the
// files of want below prefix.
func sameTree(t *testing.T, what string, want map[string]winFile, prefix, dir string) {
	t.Helper()
	var got, names []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			rel, _ := filepath.Rel(dir, p)
			got = append(got, rel)
		}
		return err
	})
	if err != nil {
		t.Errorf("%s: %v", what, err)
	}
	for name, w := range want {
		if rel, ok := strings.CutPrefix(name, prefix); ok {
			names = append(names, rel)
			sameFile(t, what, w, filepath.Join(dir, rel))
		}
	}
	slices.Sort(got)
	slices.Sort(names)
	if !slices.Equal(got, names) {
		t.Errorf("%s: files %q, want %q", what, got, names)
	}
}

// sameFile reports whether the file at p has want's content and mtime.
func sameFile(t *testing.T, what string, want winFile, p string) {
	t.Helper()
	st, err := os.Lstat(p)
	if err != nil {
		t.Errorf("%s: %v", what, err)
		return
	}
	if got := readFile(t, p); got != want.content {
		t.Errorf("%s: %s = %q, want %q", what, p, got, want.content)
	}
	if !st.ModTime().Equal(want.mtime) {
		t.Errorf("%s: %s mtime %v, want %v", what, p, st.ModTime().UTC(), want.mtime)
	}
}

// TestRecoverNTFSFAT: an MBR disk with NTFS (read through ntfs-3g) and FAT32
// (extracted with mtools: fusefat shows times a month off and upper-cases
// lower-case short names), changed over two points. browse --json lists both
// with their method and shows exactly the files of each point; restore of a
// file and a folder from each gives identical content and mtimes; nothing is
// left mounted or attached.
func TestRecoverNTFSFAT(t *testing.T) {
	needRoot(t)
	needTools(t, "sfdisk", "mkntfs", "ntfs-3g", "mkfs.vfat", "mcopy", "mdeltree", "findmnt", "losetup")
	repo := newRepo(t)
	td := buildWinDisk(t)
	ok(t, "--repo", repo, "disk", "create", "win", "--size", fmt.Sprint(td.size))
	points := winPoints()
	start := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	for i, files := range points {
		td.setNTFS(t, files["p1"])
		td.setFAT(t, files["p2"])
		ok(t, "--repo", repo, "import", "win", td.img, "--at", start.Add(time.Duration(i)*time.Minute).Format(time.RFC3339))
	}
	// browse --shell runs this "shell" in the mounted instant: it notes the
	// mount options and copies the tree out, keeping times.
	dump := t.TempDir()
	sh := filepath.Join(t.TempDir(), "dump.sh")
	must(t, os.WriteFile(sh, []byte("#!/bin/sh\nfindmnt -rn -o OPTIONS -M p1 >\"$HS_DUMP.opts\"\n"+
		"findmnt -rn -o OPTIONS -M p2 >>\"$HS_DUMP.opts\"\nexec cp -a . \"$HS_DUMP\"\n"), 0o755))
	t.Setenv("SHELL", sh)
	root := filepath.Join(t.TempDir(), "browse")
	wantMethod := map[string]string{"p1": "fuse-ro", "p2": "mtools-extract"}
	for i, want := range points {
		at := start.Add(time.Duration(i) * time.Minute).Format(time.RFC3339)
		t.Setenv("HS_DUMP", filepath.Join(dump, fmt.Sprint(i)))
		r := hs(t, "--repo", repo, "--json", "browse", "win", "--at", at, "--root", root, "--shell")
		var in struct {
			Parts []struct {
				Name, Status, Method, Error string
				FS                          struct{ Type string }
			} `json:"partitions"`
		}
		if err := json.Unmarshal([]byte(r.stdout), &in); r.code != 0 || err != nil || len(in.Parts) != 2 {
			t.Fatalf("point %d: browse: exit %d, %v\n%s%s", i, r.code, err, r.stdout, r.stderr)
		}
		for k, p := range in.Parts {
			if p.Status != "mounted" || p.FS.Type != td.specs[k].fs || p.Method != wantMethod[p.Name] {
				t.Errorf("point %d: %s is %s %s by %q (%s), want mounted %s by %s", i, p.Name, p.Status, p.FS.Type, p.Method, p.Error, td.specs[k].fs, wantMethod[p.Name])
			}
		}
		opts := strings.Fields(readFile(t, filepath.Join(dump, fmt.Sprint(i)+".opts")))
		if len(opts) != 2 {
			t.Errorf("point %d: mount options %q, want two mounts", i, opts)
		}
		for _, o := range opts {
			for _, need := range []string{"ro", "nosuid", "nodev", "noexec"} {
				if !slices.Contains(strings.Split(o, ","), need) {
					t.Errorf("point %d: mounted with %s: no %s", i, o, need)
				}
			}
		}
		for _, part := range []string{"p1", "p2"} {
			sameTree(t, fmt.Sprintf("point %d browse %s", i, part), want[part], "", filepath.Join(dump, fmt.Sprint(i), part))
		}
		noRecoverLeftovers(t, root)

		out := filepath.Join(t.TempDir(), "out")
		r = hs(t, "--repo", repo, "--json", "restore", "win", "--at", at, "--to", out,
			"p1:/docs", "p1:/Program Files/App/app.ini", "p2:/config", "p2:/EFI/BOOT/BOOTX64.EFI")
		var res struct {
			Results []struct{ Path, Status, Error string }
		}
		if err := json.Unmarshal([]byte(r.stdout), &res); r.code != 0 || err != nil {
			t.Fatalf("point %d: restore: exit %d, %v\n%s%s", i, r.code, err, r.stdout, r.stderr)
		}
		for _, x := range res.Results {
			if x.Status != "restored" {
				t.Errorf("point %d: restore %s: %s %s", i, x.Path, x.Status, x.Error)
			}
		}
		sameTree(t, fmt.Sprintf("point %d restore p1:/docs", i), want["p1"], "docs/", filepath.Join(out, "p1/docs"))
		sameTree(t, fmt.Sprintf("point %d restore p2:/config", i), want["p2"], "config/", filepath.Join(out, "p2/config"))
		sameFile(t, fmt.Sprintf("point %d restore", i), want["p1"]["Program Files/App/app.ini"], filepath.Join(out, "p1/Program Files/App/app.ini"))
		sameFile(t, fmt.Sprintf("point %d restore", i), want["p2"]["EFI/BOOT/BOOTX64.EFI"], filepath.Join(out, "p2/EFI/BOOT/BOOTX64.EFI"))
		if st, err := os.Stat(filepath.Join(out, "p1/docs/report.txt")); err != nil || st.Mode().Perm() != 0o644 {
			t.Errorf("point %d: restored NTFS file mode %v, %v; want 0644 (not ntfs-3g's 0777)", i, st.Mode(), err)
		}
		noRecoverLeftovers(t, root)
	}
}
