package nbd

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// nbdcopy copies a file into the export and back out, over several
// connections at once (it uses multi-conn when the server offers it).
func TestNbdcopy(t *testing.T) {
	const size = 16 * mib
	d := newMemDisk(t, size)
	copy(d.data, fill(size, 0x77))
	addr := startServer(t, exports(map[string]*memDisk{"disk": d}))
	dir := t.TempDir()
	src := sourceImage(t, filepath.Join(dir, "src.raw"), size)
	copier := needTool(t, "nbdcopy", libnbdPkg)

	runTool(t, true, copier, "--flush", "--connections=4", filepath.Join(dir, "src.raw"), "nbd://"+addr+"/disk")
	data, log := d.snapshot()
	if !bytes.Equal(data, src) {
		t.Fatal("export differs from src.raw after nbdcopy in")
	}
	if log[len(log)-1] != "F" {
		t.Fatalf("nbdcopy --flush: last backend call %q", log[len(log)-1])
	}

	copy(d.data[5*mib:], pattern(mib, 3))
	out := filepath.Join(dir, "out.raw")
	if err := os.WriteFile(out, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	runTool(t, true, copier, "nbd://"+addr+"/disk", out)
	got, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if data, _ := d.snapshot(); !bytes.Equal(got, data) {
		t.Fatal("out.raw differs from the export after nbdcopy out")
	}
}

type nbdinfoJSON struct {
	Protocol   string `json:"protocol"`
	TLS        bool   `json:"TLS"`
	Structured bool   `json:"structured"`
	Exports    []struct {
		Name         string `json:"export-name"`
		Size         int64  `json:"export-size"`
		CanFlush     bool   `json:"can_flush"`
		CanFUA       bool   `json:"can_fua"`
		CanTrim      bool   `json:"can_trim"`
		CanZero      bool   `json:"can_zero"`
		CanMultiConn bool   `json:"can_multi_conn"`
		ReadOnly     bool   `json:"is_read_only"`
		MinBlock     int    `json:"block_size_minimum"`
		MaxBlock     int    `json:"block_size_maximum"`
	} `json:"exports"`
}

func nbdinfo(t *testing.T, args ...string) nbdinfoJSON {
	t.Helper()
	out := runTool(t, true, needTool(t, "nbdinfo", libnbdPkg), args...)
	var info nbdinfoJSON
	if err := json.Unmarshal([]byte(out), &info); err != nil {
		t.Fatalf("nbdinfo %q: %v\n%s", args, err, out)
	}
	return info
}

func TestNbdinfo(t *testing.T) {
	addr := startServer(t, exports(map[string]*memDisk{
		"disk":  newMemDisk(t, 16*mib),
		"other": newMemDisk(t, mib),
	}))
	info := nbdinfo(t, "--json", "nbd://"+addr+"/disk")
	if info.Protocol != "newstyle-fixed" || !info.Structured || len(info.Exports) != 1 {
		t.Fatalf("nbdinfo: %+v", info)
	}
	e := info.Exports[0]
	if e.Name != "disk" || e.Size != 16*mib || e.ReadOnly || !e.CanFlush || !e.CanFUA || !e.CanTrim ||
		!e.CanZero || !e.CanMultiConn || e.MinBlock != 512 || e.MaxBlock != maxBlock {
		t.Fatalf("nbdinfo export: %+v", e)
	}

	info = nbdinfo(t, "--list", "--json", "nbd://"+addr)
	var names []string
	for _, e := range info.Exports {
		names = append(names, e.Name)
	}
	slices.Sort(names)
	if !slices.Equal(names, []string{"disk", "other"}) {
		t.Fatalf("nbdinfo --list: %q", names)
	}
}
