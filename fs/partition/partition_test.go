package partition

import (
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func need(t testing.TB, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is not installed: run 'make deps'", tool)
		}
	}
}

func sh(t testing.TB, name string, stdin string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func sparse(t testing.TB, size int64) string {
	t.Helper()
	name := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(name, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(name, size); err != nil {
		t.Fatal(err)
	}
	return name
}

func readTable(t testing.TB, img string) (Table, error) {
	t.Helper()
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, _ := f.Stat()
	return Read(f, st.Size())
}

// sfdiskTable is what sfdisk --json says of a disk.
type sfdiskTable struct {
	PartitionTable struct {
		Label      string `json:"label"`
		ID         string `json:"id"`
		Partitions []struct {
			Node  string `json:"node"`
			Start int64  `json:"start"`
			Size  int64  `json:"size"`
			Type  string `json:"type"`
			UUID  string `json:"uuid"`
			Name  string `json:"name"`
		} `json:"partitions"`
	} `json:"partitiontable"`
}

// TestTablesMatchSfdisk: tables written by sfdisk read back as sfdisk reads
// them: MBR with extended and logical partitions, and GPT.
func TestTablesMatchSfdisk(t *testing.T) {
	need(t, "sfdisk")
	cases := map[string]string{
		"mbr": "label: dos\nlabel-id: 0x1a2b3c4d\n,4MiB,83\n,4MiB,7\n,20MiB,5\n,3MiB,83\n,3MiB,b\n,3MiB,83\n",
		"gpt": "label: gpt\nsize=4MiB, type=L, name=root\nsize=6MiB, type=linux\nsize=2MiB, type=U\n",
	}
	for name, script := range cases {
		t.Run(name, func(t *testing.T) {
			img := sparse(t, 40<<20)
			sh(t, "sfdisk", script, "-q", img)
			var want sfdiskTable
			if err := json.Unmarshal([]byte(sh(t, "sfdisk", "", "--json", img)), &want); err != nil {
				t.Fatal(err)
			}
			got, err := readTable(t, img)
			if err != nil {
				t.Fatal(err)
			}
			if got.Scheme != map[string]string{"dos": SchemeMBR, "gpt": SchemeGPT}[want.PartitionTable.Label] {
				t.Fatalf("scheme %q, sfdisk says %q", got.Scheme, want.PartitionTable.Label)
			}
			var wantParts []Partition
			for _, p := range want.PartitionTable.Partitions {
				if p.Type == "5" || p.Type == "f" { // the extended container itself
					continue
				}
				idx := p.Node[strings.LastIndexAny(p.Node, "abcdefghijklmnopqrstuvwxyz.")+1:]
				wantParts = append(wantParts, Partition{Offset: p.Start * 512, Size: p.Size * 512, UUID: strings.ToLower(p.UUID), Name: p.Name, Type: idx})
			}
			if len(got.Partitions) != len(wantParts) {
				t.Fatalf("%d partitions, sfdisk lists %d: %+v", len(got.Partitions), len(wantParts), got.Partitions)
			}
			for i, w := range wantParts {
				g := got.Partitions[i]
				if g.Offset != w.Offset || g.Size != w.Size || strings.TrimLeft(w.Type, "img") != itoa(g.Index) {
					t.Errorf("partition %d: %d+%d index %d; sfdisk: %d+%d %s", i, g.Offset, g.Size, g.Index, w.Offset, w.Size, w.Type)
				}
				if got.Scheme == SchemeGPT && (g.UUID != w.UUID || g.Name != w.Name) {
					t.Errorf("partition %d: uuid %s name %q; sfdisk: %s %q", i, g.UUID, g.Name, w.UUID, w.Name)
				}
			}
			if got.Scheme == SchemeMBR && got.Partitions[3].Index != 5 {
				t.Errorf("first logical partition numbered %d, want 5", got.Partitions[3].Index)
			}
			if got.Scheme == SchemeMBR && got.DiskID != "1a2b3c4d" {
				t.Errorf("disk id %s", got.DiskID)
			}
		})
	}
}

func itoa(i int) string { b, _ := json.Marshal(i); return string(b) }

// TestGPTBackup: a damaged primary GPT falls back to the backup with a
// warning; both damaged is ErrCorrupt, never a guess.
func TestGPTBackup(t *testing.T) {
	need(t, "sfdisk")
	img := sparse(t, 16<<20)
	sh(t, "sfdisk", "label: gpt\n,4MiB,L\n,4MiB,L\n", "-q", img)
	flip := func(off int64) {
		f, err := os.OpenFile(img, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		b := make([]byte, 1)
		f.ReadAt(b, off)
		b[0] ^= 0xff
		f.WriteAt(b, off)
	}
	flip(512 + 40) // first usable LBA of the primary header
	tb, err := readTable(t, img)
	if err != nil || len(tb.Partitions) != 2 || len(tb.Warnings) != 1 {
		t.Fatalf("primary damaged: %+v, %v; want 2 partitions from the backup and a warning", tb, err)
	}
	flip(16<<20 - 512 + 40)
	if _, err := readTable(t, img); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("both headers damaged: %v, want ErrCorrupt", err)
	}
}

func TestCorruptMBR(t *testing.T) {
	for name, mutate := range map[string]func(b []byte){
		"outside the disk": func(b []byte) { b[446+4] = 0x83; b[446+8] = 1; b[446+12] = 0xff; b[446+13] = 0xff; b[446+14] = 0xff },
		"bad status":       func(b []byte) { b[446] = 0x12; b[446+4] = 0x83; b[446+8] = 1; b[446+12] = 8 },
		"overlap": func(b []byte) {
			for i := 0; i < 2; i++ {
				b[446+16*i+4] = 0x83
				b[446+16*i+8] = byte(1 + i)
				b[446+16*i+12] = 8
			}
		},
		"looping EBR": func(b []byte) {
			b[446+4], b[446+8], b[446+12] = 0x05, 1, 16 // extended: sectors 1-16
			for _, ebr := range []int{1, 5} {           // each EBR links to sector 5
				e := b[ebr*512 : (ebr+1)*512]
				e[510], e[511] = 0x55, 0xaa
				e[446+4], e[446+8], e[446+12] = 0x83, 1, 1
				e[446+16+4], e[446+16+8], e[446+16+12] = 0x05, 4, 2
			}
		},
	} {
		b := make([]byte, 64<<10)
		b[510], b[511] = 0x55, 0xaa
		mutate(b)
		_, err := Read(bytesReader(b), int64(len(b)))
		if !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: %v, want ErrCorrupt", name, err)
		}
	}
}

func TestEmpty(t *testing.T) {
	b := make([]byte, 1<<20)
	if _, err := Read(bytesReader(b), int64(len(b))); !errors.Is(err, ErrEmpty) {
		t.Fatalf("zero disk: %v, want ErrEmpty", err)
	}
}
