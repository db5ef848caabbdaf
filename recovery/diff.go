package recovery

import (
	"context"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"syscall"

	"github.com/zeebo/blake3"
)

// Change kinds.
const (
	Added   = "added"
	Removed = "removed"
	Changed = "changed"
)

// Change is one entry that differs between two instants.
type Change struct {
	Path   string `json:"path"`
	Change string `json:"change"`
	Type   string `json:"type"` // file, dir, symlink or other (the newer side's, if present)
	// Sizes on each side; absent where the entry is.
	SizeFrom *int64 `json:"size_from,omitempty"`
	SizeTo   *int64 `json:"size_to,omitempty"`
}

// Diff lists the entries added, removed and changed from instant a to
// instant b, partition by partition (by name, p1 with p1), in path order.
// A regular file has changed when its size or its content (BLAKE3) differs:
// files of equal size are always read, since timestamps of one second's
// granularity (or a filesystem rebuilt from files) can hide a change. A symlink has
// changed when its target differs, any entry when its type does. Paths are
// guest paths where the disk's fstab says where a partition is mounted, and
// "pN:/..." otherwise.
func Diff(ctx context.Context, a, b *Instant) ([]Change, error) {
	var out []Change
	for _, pb := range b.Mounted() {
		var pa *Part
		for _, q := range a.Mounted() {
			if q.Name == pb.Name {
				pa = q
			}
		}
		prefix := func(rel string) string {
			if pb.Mountpoint != "" {
				return path.Join(pb.Mountpoint, rel)
			}
			return pb.Name + ":" + rel
		}
		d := differ{ctx: ctx, name: prefix}
		if pa == nil { // a partition that was not there (or not mounted) before
			if err := d.side(pb.Dir, "/", Added); err != nil {
				return nil, err
			}
		} else if err := d.dir(pa.Dir, pb.Dir, "/"); err != nil {
			return nil, err
		}
		out = append(out, d.out...)
	}
	for _, pa := range a.Mounted() {
		found := false
		for _, q := range b.Mounted() {
			found = found || q.Name == pa.Name
		}
		if !found {
			d := differ{ctx: ctx, name: func(rel string) string { return pa.Name + ":" + rel }}
			if err := d.side(pa.Dir, "/", Removed); err != nil {
				return nil, err
			}
			out = append(out, d.out...)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out, nil
}

type differ struct {
	ctx  context.Context
	name func(rel string) string
	out  []Change
}

func kind(m fs.FileMode) string {
	switch {
	case m.IsRegular():
		return "file"
	case m.IsDir():
		return "dir"
	case m&fs.ModeSymlink != 0:
		return "symlink"
	}
	return "other"
}

func sizeOf(st fs.FileInfo) *int64 {
	n := st.Size()
	if !st.Mode().IsRegular() {
		n = 0
	}
	return &n
}

// dir compares the directories ra and rb (real paths) at rel.
func (d *differ) dir(ra, rb, rel string) error {
	if err := d.ctx.Err(); err != nil {
		return err
	}
	na, err := names(ra)
	if err != nil {
		return err
	}
	nb, err := names(rb)
	if err != nil {
		return err
	}
	all := map[string]bool{}
	for n := range na {
		all[n] = true
	}
	for n := range nb {
		all[n] = true
	}
	sorted := make([]string, 0, len(all))
	for n := range all {
		sorted = append(sorted, n)
	}
	sort.Strings(sorted)
	for _, n := range sorted {
		pa, pb, r := filepath.Join(ra, n), filepath.Join(rb, n), path.Join(rel, n)
		switch {
		case !nb[n]:
			if err := d.side(pa, r, Removed); err != nil {
				return err
			}
		case !na[n]:
			if err := d.side(pb, r, Added); err != nil {
				return err
			}
		default:
			if err := d.entry(pa, pb, r); err != nil {
				return err
			}
		}
	}
	return nil
}

func (d *differ) entry(pa, pb, rel string) error {
	sa, err := os.Lstat(pa)
	if err != nil {
		return err
	}
	sb, err := os.Lstat(pb)
	if err != nil {
		return err
	}
	ka, kb := kind(sa.Mode()), kind(sb.Mode())
	if ka != kb {
		if ka == "dir" {
			if err := d.side(pa, rel, Removed); err != nil {
				return err
			}
			d.out = append(d.out, Change{Path: d.name(rel), Change: Added, Type: kb, SizeTo: sizeOf(sb)})
			return nil
		}
		if kb == "dir" {
			d.out = append(d.out, Change{Path: d.name(rel), Change: Removed, Type: ka, SizeFrom: sizeOf(sa)})
			return d.side(pb, rel, Added)
		}
		d.out = append(d.out, Change{Path: d.name(rel), Change: Changed, Type: kb, SizeFrom: sizeOf(sa), SizeTo: sizeOf(sb)})
		return nil
	}
	changed := false
	switch ka {
	case "dir":
		return d.dir(pa, pb, rel)
	case "symlink":
		ta, _ := os.Readlink(pa)
		tb, _ := os.Readlink(pb)
		changed = ta != tb
	case "file":
		changed, err = contentDiffers(sa, sb, pa, pb)
		if err != nil {
			return err
		}
	}
	if changed {
		d.out = append(d.out, Change{Path: d.name(rel), Change: Changed, Type: kb, SizeFrom: sizeOf(sa), SizeTo: sizeOf(sb)})
	}
	return nil
}

// side reports p (real path) at rel and everything below it as added or removed.
func (d *differ) side(p, rel, change string) error {
	if err := d.ctx.Err(); err != nil {
		return err
	}
	st, err := os.Lstat(p)
	if err != nil {
		return err
	}
	c := Change{Path: d.name(rel), Change: change, Type: kind(st.Mode())}
	if change == Added {
		c.SizeTo = sizeOf(st)
	} else {
		c.SizeFrom = sizeOf(st)
	}
	if rel != "/" {
		d.out = append(d.out, c)
	}
	if !st.IsDir() {
		return nil
	}
	ns, err := names(p)
	if err != nil {
		return err
	}
	sorted := make([]string, 0, len(ns))
	for n := range ns {
		sorted = append(sorted, n)
	}
	sort.Strings(sorted)
	for _, n := range sorted {
		if err := d.side(filepath.Join(p, n), path.Join(rel, n), change); err != nil {
			return err
		}
	}
	return nil
}

func names(dir string) (map[string]bool, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	m := make(map[string]bool, len(ents))
	for _, e := range ents {
		m[e.Name()] = true
	}
	return m, nil
}

func contentDiffers(sa, sb fs.FileInfo, pa, pb string) (bool, error) {
	if sa.Size() != sb.Size() {
		return true, nil
	}
	ha, err := hashFile(pa)
	if err != nil {
		return false, err
	}
	hb, err := hashFile(pb)
	if err != nil {
		return false, err
	}
	return ha != hb, nil
}

func hashFile(p string) ([32]byte, error) {
	f, err := os.OpenFile(p, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return [32]byte{}, err
	}
	defer f.Close()
	h := blake3.New()
	if _, err := io.Copy(h, f); err != nil {
		return [32]byte{}, err
	}
	var out [32]byte
	h.Sum(out[:0])
	return out, nil
}
