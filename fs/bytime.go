package fs

import (
	"context"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// Levels of the by-time tree: a directory at level L lists units of level
// L+1 that hold points or bookmarks, and a minute lists its instants.
const (
	levelAll = iota // by-time/ itself: years
	levelYear
	levelMonth
	levelDay
	levelHour
	levelMinute // its entries are instant directories, SS.fraction
)

// maxLeaves bounds a minute's listing: a minute holding more points lists
// the first point of each second instead (every other instant still resolves
// on lookup).
const maxLeaves = 1000

// byTimeDir is by-time/YYYY/MM/DD/HH/MM: each level lists only the units
// that hold writes or bookmarks, found with one seek per unit (Source.Skim),
// so a listing costs at most 60 seeks however long the journal is.
type byTimeDir struct {
	fs.Inode
	t     *tree
	e     entry
	ino   uint64
	level int
	start time.Time // of the unit the directory is (zero for by-time/)
}

var (
	_ fs.NodeLookuper  = (*byTimeDir)(nil)
	_ fs.NodeReaddirer = (*byTimeDir)(nil)
	_ fs.NodeGetattrer = (*byTimeDir)(nil)
)

// truncate returns the start of the level's unit holding t (UTC).
func truncate(level int, t time.Time) time.Time {
	t = t.UTC()
	y, mo, d := t.Date()
	switch level {
	case levelYear:
		return time.Date(y, 1, 1, 0, 0, 0, 0, time.UTC)
	case levelMonth:
		return time.Date(y, mo, 1, 0, 0, 0, 0, time.UTC)
	case levelDay:
		return time.Date(y, mo, d, 0, 0, 0, 0, time.UTC)
	case levelHour:
		return t.Truncate(time.Hour)
	case levelMinute:
		return t.Truncate(time.Minute)
	}
	return t.Truncate(time.Second)
}

// after returns the start of the level's unit following the one at start.
func after(level int, start time.Time) time.Time {
	switch level {
	case levelYear:
		return start.AddDate(1, 0, 0)
	case levelMonth:
		return start.AddDate(0, 1, 0)
	case levelDay:
		return start.AddDate(0, 0, 1)
	case levelHour:
		return start.Add(time.Hour)
	case levelMinute:
		return start.Add(time.Minute)
	}
	return start.Add(time.Second)
}

// span is the time range the directory covers.
func (b *byTimeDir) span() (time.Time, time.Time) {
	if b.level == levelAll {
		return time.Unix(0, 0).UTC(), time.Unix(0, math.MaxInt64).UTC() // the range of point keys
	}
	return b.start, after(b.level, b.start)
}

func unitName(level int, t time.Time) string {
	switch level {
	case levelYear:
		return fmt.Sprintf("%04d", t.Year())
	case levelMonth:
		return fmt.Sprintf("%02d", int(t.Month()))
	case levelDay:
		return fmt.Sprintf("%02d", t.Day())
	case levelHour:
		return fmt.Sprintf("%02d", t.Hour())
	}
	return fmt.Sprintf("%02d", t.Minute())
}

// leafName names an instant within its minute: seconds, then the fraction
// without trailing zeros, so that it parses back to exactly t.
func leafName(t time.Time) string {
	name := fmt.Sprintf("%02d", t.Second())
	if ns := t.Nanosecond(); ns != 0 {
		name += strings.TrimRight(fmt.Sprintf(".%09d", ns), "0")
	}
	return name
}

// parseLeaf reads SS or SS.fraction (1 to 9 digits) within the minute at start.
func parseLeaf(start time.Time, name string) (time.Time, bool) {
	secs, frac, _ := strings.Cut(name, ".")
	if len(secs) != 2 || len(frac) > 9 || (strings.Contains(name, ".") && frac == "") {
		return time.Time{}, false
	}
	s, err := strconv.Atoi(secs)
	if err != nil || s < 0 || s > 59 {
		return time.Time{}, false
	}
	ns := 0
	if frac != "" {
		n, err := strconv.Atoi(frac + strings.Repeat("0", 9-len(frac)))
		if err != nil || n < 0 {
			return time.Time{}, false
		}
		ns = n
	}
	return start.Add(time.Duration(s)*time.Second + time.Duration(ns)), true
}

// parseUnit reads the name of a child unit of b and returns its start.
func (b *byTimeDir) parseUnit(name string) (time.Time, bool) {
	width := 2
	if b.level == levelAll {
		width = 4
	}
	n, err := strconv.Atoi(name)
	if len(name) != width || err != nil || n < 0 {
		return time.Time{}, false
	}
	s := b.start
	var t time.Time
	switch b.level {
	case levelAll:
		t = time.Date(n, 1, 1, 0, 0, 0, 0, time.UTC)
	case levelYear:
		t = time.Date(s.Year(), time.Month(n), 1, 0, 0, 0, 0, time.UTC)
	case levelMonth:
		t = time.Date(s.Year(), s.Month(), n, 0, 0, 0, 0, time.UTC)
	case levelDay:
		t = s.Add(time.Duration(n) * time.Hour)
	case levelHour:
		t = s.Add(time.Duration(n) * time.Minute)
	}
	// Out-of-range numbers normalise into another unit: refuse them.
	if unitName(b.level+1, t) != name || truncate(b.level, t) != truncate(b.level, s) && b.level != levelAll {
		return time.Time{}, false
	}
	return t, true
}

func (b *byTimeDir) Getattr(ctx context.Context, _ fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	b.t.dirAttr(&out.Attr, b.ino, b.e.created)
	out.SetTimeout(listingTimeout)
	return 0
}

// units returns the starts of the child units of [from, to) that hold points
// or bookmarks, in order.
func (b *byTimeDir) units(ctx context.Context, from, to time.Time, level int) ([]time.Time, error) {
	next := func(t time.Time) time.Time { return after(level, truncate(level, t)) }
	points, err := b.t.src.Skim(ctx, b.e.name, from, to, next, 0)
	if err != nil {
		return nil, err
	}
	bookmarks, err := b.t.src.Bookmarks(ctx, b.e.name)
	if err != nil {
		return nil, err
	}
	seen := map[time.Time]bool{}
	var out []time.Time
	add := func(t time.Time) {
		if u := truncate(level, t); !t.Before(from) && t.Before(to) && !seen[u] {
			seen[u] = true
			out = append(out, u)
		}
	}
	for _, p := range points {
		add(p.Time)
	}
	for _, bm := range bookmarks {
		add(bm.Time)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Before(out[j]) })
	return out, nil
}

func (b *byTimeDir) Readdir(ctx context.Context) (fs.DirStream, syscall.Errno) {
	from, to := b.span()
	var entries []fuse.DirEntry
	if b.level < levelMinute {
		units, err := b.units(ctx, from, to, b.level+1)
		if err != nil {
			return nil, b.t.errno(b.op(), err)
		}
		for _, u := range units {
			name := unitName(b.level+1, u)
			entries = append(entries, fuse.DirEntry{Name: name, Mode: syscall.S_IFDIR, Ino: inode(kindByTime, b.ino, name)})
		}
		return fs.NewListDirStream(entries), 0
	}
	leaves, err := b.leaves(ctx, from, to)
	if err != nil {
		return nil, b.t.errno(b.op(), err)
	}
	now := b.t.now()
	for _, l := range leaves {
		if !l.at.After(now) {
			name := leafName(l.at)
			entries = append(entries, fuse.DirEntry{Name: name, Mode: syscall.S_IFDIR, Ino: instantIno(b.ino, name, l.at, l.seq)})
		}
	}
	return fs.NewListDirStream(entries), 0
}

type leaf struct {
	at  time.Time
	seq uint64
}

// leaves lists a minute's points and bookmarks; past maxLeaves points, the
// first point of each second.
func (b *byTimeDir) leaves(ctx context.Context, from, to time.Time) ([]leaf, error) {
	points, err := b.t.src.Skim(ctx, b.e.name, from, to, func(t time.Time) time.Time { return t.Add(1) }, maxLeaves+1)
	if err != nil {
		return nil, err
	}
	if len(points) > maxLeaves {
		next := func(t time.Time) time.Time { return t.Truncate(time.Second).Add(time.Second) }
		if points, err = b.t.src.Skim(ctx, b.e.name, from, to, next, 0); err != nil {
			return nil, err
		}
	}
	bookmarks, err := b.t.src.Bookmarks(ctx, b.e.name)
	if err != nil {
		return nil, err
	}
	seen := map[time.Time]bool{}
	var out []leaf
	for _, p := range points {
		seen[p.Time] = true
		out = append(out, leaf{p.Time, p.Seq})
	}
	for _, bm := range bookmarks {
		if !bm.Time.Before(from) && bm.Time.Before(to) && !seen[bm.Time] {
			seen[bm.Time] = true
			out = append(out, leaf{bm.Time, bm.Seq})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].at.Before(out[j].at) })
	return out, nil
}

func (b *byTimeDir) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if b.level == levelMinute {
		at, ok := parseLeaf(b.start, name)
		if !ok || at.After(b.t.now()) {
			return nil, syscall.ENOENT
		}
		p, err := b.t.src.Resolve(ctx, b.e.name, at)
		if err != nil {
			return nil, b.t.errno(fmt.Sprintf("%s: %q", b.op(), name), err)
		}
		return b.t.newInstant(ctx, &b.Inode, b.ino, b.e, name, p, at, nil, listingTimeout, out), 0
	}
	start, ok := b.parseUnit(name)
	if !ok {
		return nil, syscall.ENOENT
	}
	units, err := b.units(ctx, start, after(b.level+1, start), b.level+1)
	if err != nil {
		return nil, b.t.errno(fmt.Sprintf("%s: %q", b.op(), name), err)
	}
	if len(units) == 0 {
		return nil, syscall.ENOENT // no write and no bookmark in that unit
	}
	n := &byTimeDir{t: b.t, e: b.e, ino: inode(kindByTime, b.ino, name), level: b.level + 1, start: start}
	return b.t.listingDir(ctx, &b.Inode, n, n.ino, b.e.created, out), 0
}

func (b *byTimeDir) op() string {
	if b.level == levelAll {
		return fmt.Sprintf("%q: by-time", b.e.name)
	}
	return fmt.Sprintf("%q: by-time at %s", b.e.name, b.start.Format(time.RFC3339))
}
