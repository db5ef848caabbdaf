package tests

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestRecoverScripts (acceptance 5): every recovery example in scripts/ runs
// against a real disk.
func TestRecoverScripts(t *testing.T) {
	t.Parallel()
	needRoot(t)
	needTools(t, "mkfs.ext4", "jq", "bash")
	repo := newRepo(t)
	td := buildDisk(t, "", partSpec{"ext4", 16 << 20})
	ok(t, "--repo", repo, "disk", "create", "web", "--size", fmt.Sprint(td.size))
	confs := []string{"listen 80\nfeature=on\n", "listen 8080\nfeature=on\n", "listen 8080\n"}
	for i, conf := range confs {
		td.change(t, 0, func(dir string) {
			write(t, dir, map[string]string{"etc/app.conf": conf, "srv/db/data": fmt.Sprintf("rows %d\n", i)})
		})
		ok(t, "--repo", repo, "import", "web", td.img) // points of now: the application bookmark marks the present
		if i == 1 {                                    // application bookmarks mark the present, here point 1
			ok(t, "--repo", repo, "bookmark", "web", "quiesced", "--kind", "application", "--agent", "exec", "--exec-freeze", "sync", "--exec-thaw", "true")
		}
	}
	ok(t, "--repo", repo, "bookmark", "web", "later")
	var points []struct {
		Time time.Time `json:"time"`
	}
	must(t, json.Unmarshal([]byte(ok(t, "--repo", repo, "--json", "points", "web")), &points))

	script := func(name string, args ...string) (string, error) {
		cmd := exec.Command("bash", append([]string{filepath.Join("..", "scripts", name)}, args...)...)
		cmd.Env = append(os.Environ(), "HINDSIGHT="+hsBin, "HINDSIGHT_REPO="+repo)
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			err = fmt.Errorf("%s: %w\n%s", name, err, stderr.String())
		}
		return string(out), err
	}

	live := t.TempDir() // the machine's files as they are now
	write(t, live, map[string]string{"etc/app.conf": "broken today\n"})
	_, err := script("restore-into-place.sh", "web", "/etc/app.conf", points[0].Time.Format(time.RFC3339Nano), live)
	must(t, err)
	if got := readFile(t, filepath.Join(live, "etc/app.conf")); got != confs[0] {
		t.Errorf("restore-into-place: %q, want %q", got, confs[0])
	}
	baks, _ := filepath.Glob(filepath.Join(live, "etc/app.conf.bak-*"))
	if len(baks) != 1 || readFile(t, baks[0]) != "broken today\n" {
		t.Errorf("restore-into-place kept %v", baks)
	}
	if left, _ := filepath.Glob(filepath.Join(live, ".hindsight-restore.*")); len(left) != 0 {
		t.Errorf("scratch left: %v", left)
	}

	out, err := script("last-with-line.sh", "web", "/etc/app.conf", "feature=on")
	must(t, err)
	if got, err := time.Parse(time.RFC3339, strings.TrimSpace(out)); err != nil || !got.Equal(points[1].Time) {
		t.Errorf("last-with-line: %q, want %s", out, points[1].Time)
	}
	if _, err := script("last-with-line.sh", "web", "/etc/app.conf", "never there"); err == nil {
		t.Error("last-with-line found a line that never was")
	}

	to := t.TempDir()
	_, err = script("restore-from-app-bookmark.sh", "web", "/srv/db", to)
	must(t, err)
	if got := readFile(t, filepath.Join(to, "srv/db/data")); got != "rows 1\n" {
		t.Errorf("restore-from-app-bookmark: %q, want the application bookmark's rows 1", got)
	}
	noRecoverLeftovers(t)
}
