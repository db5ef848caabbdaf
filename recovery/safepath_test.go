package recovery

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// imageTree makes a directory tree that stands for a mounted image, with
// symlinks that point out of it, in loops and in chains, and returns its
// root and a directory outside it.
func imageTree(t testing.TB) (root, outside string) {
	t.Helper()
	base := t.TempDir()
	root, outside = filepath.Join(base, "root"), filepath.Join(base, "outside")
	for _, d := range []string{"etc", "a/b/c", "tmp", outside} {
		if !filepath.IsAbs(d) {
			d = filepath.Join(root, d)
		}
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for name, content := range map[string]string{"etc/hosts": "image hosts", "a/b/c/file": "c file"} {
		if err := os.WriteFile(filepath.Join(root, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(outside, "secret"), []byte("host secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	links := map[string]string{
		"etc/abs":     "/etc/hosts",
		"a/b/up":      "../../../../..",
		"a/rel":       "b/c",
		"a/absdir":    "/a/b",
		"dotdot":      "/../../..",
		"escape":      outside, // absolute, out of the image: means root+outside
		"escaperel":   "../outside",
		"loop1":       "loop2",
		"loop2":       "loop1",
		"self":        "self",
		"a/b/c/cyc":   "../../b",
		"tmp/hostdir": "/tmp",
		"chain45":     "a",
	}
	for i := 0; i < 45; i++ { // chainN → … → chain45 → a: 46 links from chain0
		links[fmt.Sprintf("chain%d", i)] = fmt.Sprintf("chain%d", i+1)
	}
	for name, target := range links {
		if err := os.Symlink(target, filepath.Join(root, name)); err != nil {
			t.Fatal(err)
		}
	}
	return root, outside
}

func TestResolveIn(t *testing.T) {
	root, _ := imageTree(t)
	for _, c := range []struct{ p, want string }{
		{"/", ""},
		{"", ""},
		{"etc/hosts", "etc/hosts"},
		{"/etc/hosts", "etc/hosts"},
		{"/../../etc/hosts", "etc/hosts"},
		{"/etc/../../../etc/hosts", "etc/hosts"},
		{"/etc/abs", "etc/abs"},            // the last component is not followed
		{"/a/rel/file", "a/b/c/file"},      // relative symlink on the way
		{"/a/absdir/c/file", "a/b/c/file"}, // absolute symlink: from the image's root
		{"/a/b/up/etc/hosts", "etc/hosts"}, // .. stops at the root
		{"/dotdot/etc/hosts", "etc/hosts"}, // so does /..
		{"/a/b/c/cyc/c/cyc/c/file", "a/b/c/file"},
		{"/loop1", "loop1"}, // a loop as the last component is itself
		{"/escape", "escape"},
	} {
		got, err := resolveIn(root, c.p)
		if err != nil {
			t.Errorf("resolveIn %q: %v", c.p, err)
			continue
		}
		if want := filepath.Join(root, c.want); got != want {
			t.Errorf("resolveIn %q = %q, want %q", c.p, got, want)
		}
	}
	for _, p := range []string{
		"/chain0/b/c/file", // 46 links
		"/chain5/b/c/file", // 41 links: one more than the kernel follows
		"/loop1/x", "/self/x",
		"/escape/secret", "/escaperel/secret", // out of the image: not there
		"/tmp/hostdir/x",
		"/etc/hosts/x", // a file on the way
		"/nothing", "/a/nothing/file",
	} {
		got, err := resolveIn(root, p)
		if !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("resolveIn %q = %q, %v; want not exist", p, got, err)
		}
	}
	// 40 links on the way are followed (chain6 … chain45).
	if got, err := resolveIn(root, "/chain6/b/c/file"); err != nil || got != filepath.Join(root, "a/b/c/file") {
		t.Errorf("resolveIn through 40 links = %q, %v", got, err)
	}
}

// The root as given may itself go through a symlink, or be relative, or
// end in a slash: what it names is the root all the same.
func TestResolveInRootSpelling(t *testing.T) {
	root, _ := imageTree(t)
	link := filepath.Join(filepath.Dir(root), "rootlink")
	if err := os.Symlink(root, link); err != nil {
		t.Fatal(err)
	}
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	rel, err := filepath.Rel(wd, root)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []string{link, rel, root + "/", link + "/"} {
		got, err := resolveIn(r, "/a/absdir/c/file")
		if err != nil {
			t.Errorf("root %q: %v", r, err)
			continue
		}
		if b, err := os.ReadFile(got); err != nil || string(b) != "c file" {
			t.Errorf("root %q: %q holds %q, %v", r, got, b, err)
		}
	}
}

// FuzzResolveIn: whatever the path, the result is inside the root.
func FuzzResolveIn(f *testing.F) {
	root, _ := imageTree(f)
	for _, s := range []string{"/", "../../etc/hosts", "/escape/secret", "/a/b/up/../../x", "/chain0/b",
		"/loop1/x", "a/rel/../../etc", "/tmp/hostdir", "\x00", strings.Repeat("../", 100) + "etc"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		got, err := resolveIn(root, p)
		if err != nil {
			if errors.Is(err, ErrEscape) {
				t.Fatalf("resolveIn %q: %v", p, err)
			}
			return
		}
		rel, err := filepath.Rel(root, got)
		if err != nil || rel == ".." || strings.HasPrefix(rel, "../") || filepath.IsAbs(rel) {
			t.Fatalf("resolveIn %q = %q: outside the root %q", p, got, root)
		}
		// What it names, followed to the end, is inside the root too,
		// unless the last component is a symlink (which is not followed).
		if st, err := os.Lstat(got); err == nil && st.Mode()&os.ModeSymlink == 0 {
			real, err := filepath.EvalSymlinks(got)
			if err != nil {
				t.Fatal(err)
			}
			realRoot, _ := filepath.EvalSymlinks(root)
			if r, err := filepath.Rel(realRoot, real); err != nil || strings.HasPrefix(r, "..") {
				t.Fatalf("resolveIn %q = %q, really %q: outside the root", p, got, real)
			}
		}
	})
}
