package cdp

import (
	"os/exec"
	"strings"
	"testing"
)

// TestLayers keeps the engine below the FUSE tree: no package under cdp/ or
// store/, nor their tests, may depend (directly or not) on a package under
// fs/. Code that mounts belongs above fs/ (recovery, vsphere, cmd).
func TestLayers(t *testing.T) {
	const fsPkg = "github.com/hindsight-cdp/hindsight/fs"
	// One go list for all packages: .Deps is the transitive closure.
	cmd := exec.Command("go", "list", "-test", "-f", "{{.ImportPath}}{{range .Deps}} {{.}}{{end}}", "./cdp/...", "./store/...")
	cmd.Dir = ".." // the module root
	out, err := cmd.Output()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			t.Fatalf("go list: %v\n%s", err, ee.Stderr)
		}
		t.Fatalf("go list: %v", err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) < 2 {
		t.Fatalf("go list listed %d packages, want cdp/... and store/...:\n%s", len(lines), out)
	}
	for _, line := range lines {
		f := strings.Fields(line)
		for _, dep := range f[1:] {
			if dep == fsPkg || strings.HasPrefix(dep, fsPkg+"/") {
				t.Errorf("%s depends on %s: cdp/ and store/ must not import fs/ (move the code above fs/, beside recovery and vsphere)", f[0], dep)
			}
		}
	}
}
