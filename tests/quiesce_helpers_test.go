package tests

import (
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/hindsight-cdp/hindsight/cdp/quiesce"
)

// appBookmark is what `hindsight bookmark --json` prints of a bookmark.
type appBookmark struct {
	Name    string            `json:"name"`
	Seq     uint64            `json:"seq"`
	Time    time.Time         `json:"time"`
	Kind    string            `json:"kind"`
	Files   map[string]string `json:"files"`
	Quiesce *quiesce.Report   `json:"quiesce"`
}

// quiescedBookmark takes bookmark name of disk with --consistency
// application and the given agent flags, and returns it; it fails the test
// unless the bookmark was taken.
func quiescedBookmark(t *testing.T, repo, disk, name string, flags ...string) appBookmark {
	t.Helper()
	out := ok(t, append([]string{"--repo", repo, "--json", "bookmark", disk, name, "--consistency", "application"}, flags...)...)
	var bm appBookmark
	if err := json.Unmarshal([]byte(out), &bm); err != nil {
		t.Fatalf("bookmark %s: %v\n%s", name, err, out)
	}
	if bm.Kind != "application" || bm.Quiesce == nil || !bm.Quiesce.Consistent {
		t.Fatalf("bookmark %s is not application-consistent:\n%s", name, out)
	}
	return bm
}

// bookmarkNames lists the names of disk's bookmarks.
func bookmarkNames(t *testing.T, repo, disk string) []string {
	t.Helper()
	var bms []appBookmark
	if err := json.Unmarshal([]byte(ok(t, "--repo", repo, "--json", "bookmarks", disk)), &bms); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, b := range bms {
		names = append(names, b.Name)
	}
	return names
}

// stepOf returns the report's step of agent in phase.
func stepOf(t *testing.T, rep *quiesce.Report, agent, phase string) quiesce.Step {
	t.Helper()
	for _, s := range rep.Steps {
		if s.Agent == agent && s.Phase == phase {
			return s
		}
	}
	t.Fatalf("no %s step of %s in the report", phase, agent)
	return quiesce.Step{}
}

// mountRWNow mounts the ext4 in image read-write through a loop device
// that the kernel detaches at unmount (replaying the journal, as a restore
// does); unmount is also run at cleanup.
func mountRWNow(t *testing.T, image string) (dir string, unmount func()) {
	t.Helper()
	dir = t.TempDir()
	run(t, "mount", "-t", "ext4", "-o", "loop", image, dir)
	done := false
	unmount = func() {
		if !done {
			done = true
			if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
				t.Errorf("umount %s: %v\n%s", dir, err, out)
			}
		}
	}
	t.Cleanup(unmount)
	return dir, unmount
}

// exportInstant writes disk's image at instant (a time or bookmark:NAME) to
// a new raw file and returns its path.
func exportInstant(t *testing.T, repo, disk, instant, dir string) string {
	t.Helper()
	out := dir + "/" + strings.NewReplacer(":", "_", "/", "_").Replace(instant) + ".raw"
	os.Remove(out)
	ok(t, "--repo", repo, "export", disk, "--at", instant, "--out", out)
	return out
}
