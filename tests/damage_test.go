package tests

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// damageRepo makes a repository with two points of disk web (16 MiB):
// point 1 (2026-11-25T10:00:00Z) holds 8 MiB of random data (stored raw,
// first in the first segment, so block k's content is at k*4096) then 8
// MiB of text (stored compressed); point 2 (10:05) rewrites every block.
func damageRepo(t *testing.T) (repo string, img1, img2 []byte) {
	t.Helper()
	repo = newRepo(t)
	ok(t, "--repo", repo, "disk", "create", "web", "--size", "16M")
	rng := rand.New(rand.NewPCG(16, 16))
	img1 = make([]byte, 16<<20)
	for i := range 8 << 20 {
		img1[i] = byte(rng.Uint32())
	}
	copy(img1[8<<20:], bytes.Repeat([]byte("the journal keeps every write. "), (8<<20)/31+1))
	img2 = make([]byte, 16<<20)
	for i := range img2 {
		img2[i] = byte(rng.Uint32())
	}
	dir := t.TempDir()
	for i, img := range [][]byte{img1, img2} {
		p := filepath.Join(dir, "img")
		os.WriteFile(p, img, 0o600)
		ok(t, "--repo", repo, "import", "web", p, "--at", []string{"2026-11-25T10:00:00Z", "2026-11-25T10:05:00Z"}[i])
	}
	return repo, img1, img2
}

type verifyJSON struct {
	Problems []struct {
		Kind    string `json:"kind"`
		Detail  string `json:"detail"`
		Disk    string `json:"disk"`
		Segment string `json:"segment"`
		FromSeq uint64 `json:"from_seq"`
		ToSeq   uint64 `json:"to_seq"`
		Blocks  []struct {
			First uint64 `json:"first"`
			Last  uint64 `json:"last"`
		} `json:"blocks"`
	} `json:"problems"`
}

// TestDamageRefusedLoudly: a deleted segment, a truncated one, a flipped
// byte in raw and in compressed content, and a truncated index table. In
// each case a writer refuses to open (exit 1, naming the damage), the
// damaged instant reads as EIO through the mount and export exits 1,
// undamaged instants read exactly, verify names what is affected, and
// nothing panics.
func TestDamageRefusedLoudly(t *testing.T) {
	t.Parallel()
	needRoot(t)
	seg := filepath.Join("segments", "00000001.seg")
	cases := []struct {
		name     string
		damage   func(t *testing.T, repo string)
		full     bool   // verify needs --full to see it
		block    int64  // a damaged block of point 1 (-1: the whole index)
		writer   bool   // a writer refuses to open
		names    string // what the writer's and verify's messages name
		point2OK bool   // point 2 still reads (a reader's view links its own, older tables)
	}{ // a deleted segment: every instant in it is damaged
		{"segment deleted", func(t *testing.T, repo string) { os.Remove(filepath.Join(repo, seg)) }, false, 5, true, "00000001.seg", false},
		{"segment truncated", func(t *testing.T, repo string) { os.Truncate(filepath.Join(repo, seg), 40<<20) }, false, -1, true, "00000001.seg", true},
		{"raw byte flipped", func(t *testing.T, repo string) { flipByte(t, filepath.Join(repo, seg), 5*4096+100) }, true, 5, false, "00000001.seg", true},
		{"compressed byte flipped", func(t *testing.T, repo string) { flipByte(t, filepath.Join(repo, seg), 8<<20+20) }, true, 2048, false, "00000001.seg", true},
		{"index table truncated", func(t *testing.T, repo string) {
			ssts, _ := filepath.Glob(filepath.Join(repo, "db", "*.sst"))
			if len(ssts) == 0 {
				t.Fatal("no index table")
			}
			for _, s := range ssts {
				fi, _ := os.Stat(s)
				os.Truncate(s, fi.Size()/2)
			}
		}, false, -1, true, ".sst", true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			repo, img1, img2 := damageRepo(t)
			if c.name == "segment truncated" {
				// Cut inside point 2's content (it follows point 1's ~8.1 MiB):
				// point 1 is whole, the end of point 2 is not.
				fi, _ := os.Stat(filepath.Join(repo, seg))
				c.damage = func(t *testing.T, repo string) { os.Truncate(filepath.Join(repo, seg), fi.Size()-1<<20) }
				c.point2OK, c.block = false, -1
			}
			c.damage(t, repo)

			all := []result{}
			if c.writer {
				for _, args := range [][]string{{"bookmark", "web", "b"}, {"import", "web", "/dev/null"}} {
					r := hs(t, append([]string{"--repo", repo}, args...)...)
					all = append(all, r)
					if r.code != 1 || !strings.Contains(r.stderr, c.names) || !strings.Contains(r.stderr, "verify") {
						t.Errorf("writer %v over damage: exit %d, stderr %q; want exit 1 naming %s and verify", args, r.code, r.stderr, c.names)
					}
				}
			}
			for _, at := range []string{"2026-11-25T10:00:00Z", "2026-11-25T10:05:00Z"} {
				out := filepath.Join(t.TempDir(), "x")
				r := hs(t, "--repo", repo, "export", "web", "--at", at, "--out", out)
				all = append(all, r)
				want := img1
				// Readers read the published view, which links its own tables:
				// a damaged writer's table damages no instant they show.
				damaged := c.block >= 0
				if at != "2026-11-25T10:00:00Z" {
					want, damaged = img2, !c.point2OK
				}
				if c.name == "segment deleted" {
					damaged = true
				}
				got, _ := os.ReadFile(out)
				switch {
				case damaged && r.code != 1:
					t.Errorf("export of the damaged instant %s: exit %d (stderr %q), want 1", at, r.code, r.stderr)
				case !damaged && (r.code != 0 || !bytes.Equal(got, want)):
					t.Errorf("export of the undamaged instant %s: exit %d %q, same bytes %v", at, r.code, r.stderr, bytes.Equal(got, want))
				}
			}
			args := []string{"--repo", repo, "--json", "verify"}
			if c.full {
				if r := hs(t, args...); r.code != 0 {
					t.Errorf("verify without --full sees flipped bytes? exit %d %s", r.code, r.stdout)
				}
				args = append(args, "--full")
			}
			r := hs(t, args...)
			all = append(all, r)
			var rep verifyJSON
			if r.code != 1 {
				t.Errorf("verify: exit %d, stdout %s stderr %s; want 1", r.code, r.stdout, r.stderr)
			} else if c.name != "index table truncated" {
				if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil || len(rep.Problems) == 0 {
					t.Fatalf("verify --json: %v %q", err, r.stdout)
				}
				found := false
				for _, p := range rep.Problems {
					if p.Disk == "web" && p.FromSeq >= 1 && strings.Contains(p.Segment, "00000001.seg") && len(p.Blocks) > 0 {
						found = found || c.block < 0 || (p.Blocks[0].First <= uint64(c.block) && uint64(c.block) <= p.Blocks[len(p.Blocks)-1].Last)
					}
				}
				if !found {
					t.Errorf("verify does not name block %d of web: %s", c.block, r.stdout)
				}
			} else if !strings.Contains(r.stdout, ".sst") {
				t.Errorf("verify of a truncated index table does not name it: %s", r.stdout)
			}
			for _, r := range all {
				if strings.Contains(r.stderr, "panic") || strings.Contains(r.stderr, "goroutine ") {
					t.Fatalf("a command panicked: %s", r.stderr)
				}
			}
			if c.name == "index table truncated" {
				// The index is rebuilt from the logs; everything is back.
				if r := hs(t, "--repo", repo, "verify", "--repair", "--full"); r.code != 0 || !strings.Contains(r.stderr, "db.damaged-") {
					t.Fatalf("verify --repair: exit %d\n%s%s", r.code, r.stdout, r.stderr)
				}
				ok(t, "--repo", repo, "bookmark", "web", "after-repair")
				for i, at := range []string{"2026-11-25T10:00:00Z", "2026-11-25T10:05:00Z"} {
					out := filepath.Join(t.TempDir(), "x")
					ok(t, "--repo", repo, "export", "web", "--at", at, "--out", out)
					if got, _ := os.ReadFile(out); !bytes.Equal(got, [][]byte{img1, img2}[i]) {
						t.Errorf("after the repair, %s reads back different", at)
					}
				}
			}
			if c.block < 0 || c.name == "index table truncated" {
				return
			}
			// Through the mount: the damaged block is EIO, its neighbour and
			// the whole of point 2 read exactly.
			mnt := mountRepo(t, repo)
			flat := filepath.Join(mnt, "web", "20261125T100000Z", "web-flat.vmdk")
			f, err := os.Open(flat)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			buf := make([]byte, 4096)
			if _, err := f.ReadAt(buf, c.block*4096); !errors.Is(err, syscall.EIO) {
				t.Errorf("mount read of damaged block %d: %v, want EIO", c.block, err)
			}
			if _, err := f.ReadAt(buf, (c.block+1)*4096); c.name != "segment deleted" && (err != nil || !bytes.Equal(buf, img1[(c.block+1)*4096:][:4096])) {
				t.Errorf("mount read of block %d beside the damage: %v", c.block+1, err)
			}
			if c.point2OK {
				got, err := os.ReadFile(filepath.Join(mnt, "web", "20261125T100500Z", "web-flat.vmdk"))
				if err != nil || !bytes.Equal(got, img2) {
					t.Errorf("mount read of the undamaged point: %v", err)
				}
			}
		})
	}
}

func flipByte(t *testing.T, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	f.ReadAt(b, off)
	b[0] ^= 0x10
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// TestVerifyBesideWriter: verify --full runs beside a live writer that is
// journaling, and passes.
func TestVerifyBesideWriter(t *testing.T) {
	t.Parallel()
	needTools(t, "qemu-io")
	repo := newRepo(t)
	ok(t, "--repo", repo, "disk", "create", "web", "--size", "16M")
	url := nbdURL(serveNBD(t, repo, "web"), "web")
	for i := range 4 {
		run(t, "qemu-io", "-f", "raw", url, "-c", fmt.Sprintf("write -P %d %d 1M", i+1, i<<20), "-c", "flush")
		r := hs(t, "--repo", repo, "verify", "--full")
		if r.code != 0 {
			t.Fatalf("verify --full beside serve-nbd: exit %d\n%s%s", r.code, r.stdout, r.stderr)
		}
	}
}
