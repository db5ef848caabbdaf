package recovery

import (
	"bufio"
	"fmt"
	"os"
	"path"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// fstabEntry is one line of a guest's /etc/fstab.
type fstabEntry struct{ spec, mountpoint string }

// parseFstab reads the entries that mount something at an absolute path.
func parseFstab(b []byte) []fstabEntry {
	var out []fstabEntry
	sc := bufio.NewScanner(strings.NewReader(string(b)))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 || strings.HasPrefix(f[0], "#") || !strings.HasPrefix(f[1], "/") {
			continue
		}
		mp := path.Clean(unescapeFstab(f[1]))
		if len(f) > 2 && (f[2] == "swap" || f[2] == "proc" || f[2] == "tmpfs" || f[2] == "sysfs") {
			continue
		}
		out = append(out, fstabEntry{spec: unescapeFstab(f[0]), mountpoint: mp})
	}
	return out
}

// unescapeFstab undoes fstab's octal escapes (\040 for a space).
func unescapeFstab(s string) string {
	return regexp.MustCompile(`\\[0-7]{3}`).ReplaceAllStringFunc(s, func(e string) string {
		n, _ := strconv.ParseUint(e[1:], 8, 8)
		return string([]byte{byte(n)}) // a byte: \303\251 is "é"
	})
}

// devIndex finds the partition number in a device name: /dev/sda2, /dev/vdb1,
// /dev/xvda3, /dev/nvme0n1p2, /dev/mmcblk0p1.
var devIndex = regexp.MustCompile(`^/dev/(?:[shvx]+d[a-z]+|(?:nvme\d+n\d+|mmcblk\d+|loop\d+)p)(\d+)$`)

// matches reports whether an fstab spec names partition p.
func (p *Part) matches(spec string) bool {
	eq := func(a, b string) bool { return a != "" && strings.EqualFold(a, b) }
	key, val, ok := strings.Cut(spec, "=")
	if !ok {
		for prefix, k := range map[string]string{"/dev/disk/by-uuid/": "UUID", "/dev/disk/by-label/": "LABEL",
			"/dev/disk/by-partuuid/": "PARTUUID", "/dev/disk/by-partlabel/": "PARTLABEL"} {
			if strings.HasPrefix(spec, prefix) {
				key, val = k, strings.TrimPrefix(spec, prefix)
			}
		}
	}
	if len(val) >= 2 && (val[0] == '"' || val[0] == '\'') && val[len(val)-1] == val[0] {
		val = val[1 : len(val)-1] // UUID="…", as libmount and systemd read it
	}
	switch key {
	case "UUID":
		return eq(p.FS.UUID, val)
	case "LABEL":
		return p.FS.Label != "" && p.FS.Label == val
	case "PARTUUID":
		return eq(p.UUID, val)
	case "PARTLABEL":
		return p.Partition.Name != "" && p.Partition.Name == val
	}
	if m := devIndex.FindStringSubmatch(spec); m != nil {
		n, _ := strconv.Atoi(m[1])
		return n == p.Index
	}
	return false
}

// mapMountpoints sets each mounted part's Mountpoint from the first
// /etc/fstab found on a mounted filesystem (read inside that filesystem's
// root); without one, a lone filesystem is "/".
func (in *Instant) mapMountpoints() {
	assignMountpoints(in.Parts, func(p *Part) []byte {
		real, err := resolveIn(p.Dir, "/etc/fstab")
		if err != nil {
			return nil
		}
		st, err := os.Lstat(real)
		if err != nil || !st.Mode().IsRegular() || st.Size() > 1<<20 {
			return nil
		}
		b, _ := os.ReadFile(real)
		return b
	})
}

// assignMountpoints sets the Mountpoint of the ready parts from the first
// fstab that read finds on one of them; without one, a lone ready part is "/".
func assignMountpoints(parts []*Part, read func(*Part) []byte) {
	ready := readyParts(parts)
	for _, p := range ready {
		b := read(p)
		if b == nil {
			continue
		}
		for _, e := range parseFstab(b) {
			for _, q := range ready {
				if q.Mountpoint == "" && q.matches(e.spec) {
					q.Mountpoint = e.mountpoint
				}
			}
		}
		if p.Mountpoint == "" { // fstab names its own filesystem in a way we cannot match
			p.Mountpoint = "/"
		}
		return
	}
	if len(ready) == 1 {
		ready[0].Mountpoint = "/"
	}
}

func readyParts(parts []*Part) []*Part {
	var out []*Part
	for _, p := range parts {
		if p.ready {
			out = append(out, p)
		}
	}
	return out
}

// Locate finds the mounted part that holds the image path p; see locate.
func (in *Instant) Locate(p string) (*Part, string, error) { return locate(in.Parts, p) }

// locate finds the ready part that holds the image path p and the path
// inside that filesystem. p may name a part explicitly, "p2:/etc/hosts"
// (or "disk:/..."); otherwise the part with the longest Mountpoint that
// contains p. The result is ErrNoFilesystem if no mounted part holds p.
func locate(parts []*Part, p string) (*Part, string, error) {
	if name, rest, ok := strings.Cut(p, ":"); ok && !strings.Contains(name, "/") {
		for _, q := range parts {
			if q.Name == name {
				if !q.ready {
					return nil, "", &LocateError{Path: p, Why: q.Name + " is not mounted (" + q.Status + ")"}
				}
				return q, cleanPath(rest), nil
			}
		}
		return nil, "", &LocateError{Path: p, Why: "the disk has no partition " + name}
	}
	clean := cleanPath(p)
	var best *Part
	for _, q := range readyParts(parts) {
		mp := q.Mountpoint
		if mp == "" || !(clean == mp || mp == "/" || strings.HasPrefix(clean, mp+"/")) {
			continue
		}
		if best == nil || len(mp) > len(best.Mountpoint) {
			best = q
		}
	}
	if len(readyParts(parts)) == 0 { // not a missing path: nothing could be read
		var why []string
		for _, q := range parts {
			why = append(why, q.Name+" "+q.Status+": "+q.Error)
		}
		return nil, "", fmt.Errorf("path %s: no filesystem of the disk is mounted (%s)", p, strings.Join(why, "; "))
	}
	if best == nil {
		var names []string
		for _, q := range readyParts(parts) {
			names = append(names, q.Name)
		}
		sort.Strings(names)
		why := "no mounted filesystem"
		if len(names) > 0 {
			why = "no /etc/fstab says which filesystem is /: name one, as " + names[0] + ":" + clean
		}
		return nil, "", &LocateError{Path: p, Why: why}
	}
	rel := strings.TrimPrefix(clean, best.Mountpoint)
	if best.Mountpoint == "/" {
		rel = clean
	}
	return best, cleanPath(rel), nil
}

// LocateError: no mounted filesystem holds a path.
type LocateError struct{ Path, Why string }

func (e *LocateError) Error() string { return "path " + e.Path + ": " + e.Why }

// Is makes errors.Is(err, ErrNoFilesystem) true.
func (e *LocateError) Is(target error) bool { return target == ErrNoFilesystem }
