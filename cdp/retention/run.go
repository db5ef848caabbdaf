package retention

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/hindsight-cdp/hindsight/store"
)

// Resolver finds disks and groups by name (*store.Repo).
type Resolver interface {
	Disk(name string) (store.Disk, error)
	Group(name string) (store.Group, error)
}

// Reader is what Run reads of a repository (*store.Repo).
type Reader interface {
	Resolver
	PolicyReader
	Disks() ([]store.Disk, error)
	Points(tl uint32, since, until time.Time, limit int) ([]store.Point, error)
	Bookmarks(d store.Disk) ([]store.Bookmark, error)
}

// Pruner is the repository Run prunes (*store.Repo).
type Pruner interface {
	Reader
	Prune(ctx context.Context, tl uint32, opt store.PruneOptions) (store.PruneResult, error)
}

var _ Pruner = (*store.Repo)(nil)

// Target is a timeline by its name: a lone disk or a group.
type Target struct {
	Name     string `json:"name"`
	Timeline uint32 `json:"timeline"`
	Group    bool   `json:"group"`
}

// Resolve finds the timeline of name, a disk or a group. A disk of a group
// names its group: the group's disks share one timeline, one history and
// one policy. An unknown name is store.ErrUnknownDisk.
func Resolve(r Resolver, name string) (Target, error) {
	d, err := r.Disk(name)
	if err == nil {
		if d.Group != "" {
			return Target{Name: d.Group, Timeline: d.Timeline, Group: true}, nil
		}
		return Target{Name: d.Name, Timeline: d.Timeline}, nil
	}
	if !errors.Is(err, store.ErrUnknownDisk) {
		return Target{}, err
	}
	g, gerr := r.Group(name)
	if errors.Is(gerr, store.ErrUnknownGroup) {
		return Target{}, fmt.Errorf("%w: %q is neither a disk nor a group (list them with 'hindsight disk list' and 'hindsight group list')", store.ErrUnknownDisk, name)
	}
	if gerr != nil {
		return Target{}, gerr
	}
	return Target{Name: g.Name, Timeline: g.ID, Group: true}, nil
}

// handle is the disk value the store's timeline calls take for t.
func (t Target) handle() store.Disk {
	d := store.Disk{Name: t.Name, Timeline: t.Timeline}
	if t.Group {
		d.Group = t.Name
	}
	return d
}

// PolicyReader reads a timeline's recorded policy (*store.Repo).
type PolicyReader interface {
	Policy(tl uint32) ([]byte, bool, error)
}

// PolicyOf returns t's policy, or ErrNoPolicy naming 'policy set'.
func PolicyOf(r PolicyReader, t Target) (Policy, error) {
	b, ok, err := r.Policy(t.Timeline)
	if err != nil {
		return Policy{}, err
	}
	if !ok {
		return Policy{}, fmt.Errorf("%w: %q has none (set one with 'hindsight policy set %s --daily 30d ...')", ErrNoPolicy, t.Name, t.Name)
	}
	p, err := Decode(b)
	if err != nil {
		return Policy{}, fmt.Errorf("the policy of %q: %w", t.Name, err)
	}
	return p, nil
}

// Report is what a prune did (with DryRun: would do).
type Report struct {
	Name     string    `json:"name"`
	Timeline uint32    `json:"timeline"`
	Policy   Policy    `json:"policy"`
	Now      time.Time `json:"now"` // the policy was evaluated as of now
	DryRun   bool      `json:"dry_run"`
	// Kept is how many points the timeline keeps.
	Kept int `json:"kept"`
	// Removed are the points that no longer exist (with DryRun: would not).
	Removed []store.Point `json:"removed"`
	// DroppedBookmarks are the bookmarks removed.
	DroppedBookmarks []string `json:"dropped_bookmarks"`
	// Versions is how many block versions were collapsed into kept ones.
	Versions uint64 `json:"versions_collapsed"`
	// FreedBytes is the stored content no version references any more:
	// what the next gc gives back.
	FreedBytes int64 `json:"freed_bytes"`
	// Error is why this timeline was not pruned (RunAll only).
	Error string `json:"error,omitempty"`
}

// PlanFor reads what Select needs for t and plans its prune by pol as of now.
func PlanFor(r Reader, t Target, pol Policy, now time.Time) (Plan, error) {
	ps, err := r.Points(t.Timeline, time.Unix(0, math.MinInt64), time.Unix(0, math.MaxInt64), 0)
	if err != nil {
		return Plan{}, err
	}
	bms, err := r.Bookmarks(t.handle())
	if err != nil {
		return Plan{}, err
	}
	bases, err := basesOn(r, t.Timeline)
	if err != nil {
		return Plan{}, err
	}
	return Select(now, pol, ps, bms, bases), nil
}

// basesOn lists the bases of every clone whose base disk is on timeline tl.
func basesOn(r Reader, tl uint32) ([]Base, error) {
	disks, err := r.Disks()
	if err != nil {
		return nil, err
	}
	timeline := map[uint32]uint32{}
	for _, d := range disks {
		timeline[d.ID] = d.Timeline
	}
	var out []Base
	for _, d := range disks {
		if d.Base == nil {
			continue
		}
		btl, ok := timeline[d.Base.ID]
		if !ok {
			return nil, fmt.Errorf("clone %q: its base disk %q (id %d) is not in the repository: %w", d.Name, d.Base.Disk, d.Base.ID, store.ErrCorrupt)
		}
		if btl == tl {
			out = append(out, Base{Clone: d.Name, Seq: d.Base.Seq})
		}
	}
	return out, nil
}

// Run prunes name (a disk or a group) by its policy as of now: the points
// and bookmarks Select does not keep are removed, or with dryRun only
// reported.
func Run(ctx context.Context, r Pruner, name string, now time.Time, dryRun bool) (Report, error) {
	t, err := Resolve(r, name)
	if err != nil {
		return Report{}, err
	}
	return run(ctx, r, t, now, dryRun)
}

func run(ctx context.Context, r Pruner, t Target, now time.Time, dryRun bool) (Report, error) {
	pol, err := PolicyOf(r, t)
	if err != nil {
		return Report{}, err
	}
	pl, err := PlanFor(r, t, pol, now)
	if err != nil {
		return Report{}, fmt.Errorf("prune %q: %w", t.Name, err)
	}
	res, err := r.Prune(ctx, t.Timeline, store.PruneOptions{Keep: pl.Keep, DropBookmarks: pl.DropBookmarks, DryRun: dryRun})
	if err != nil {
		return Report{}, fmt.Errorf("prune %q: %w", t.Name, err)
	}
	rep := Report{Name: t.Name, Timeline: t.Timeline, Policy: pol, Now: now.UTC(), DryRun: dryRun,
		Kept: res.Kept, Removed: res.Points, DroppedBookmarks: res.Bookmarks, Versions: res.Versions, FreedBytes: res.FreedBytes}
	if rep.Removed == nil {
		rep.Removed = []store.Point{}
	}
	if rep.DroppedBookmarks == nil {
		rep.DroppedBookmarks = []string{}
	}
	return rep, nil
}

// Lister lists the recorded policies and what they belong to (*store.Repo).
type Lister interface {
	Policies() (map[uint32][]byte, error)
	Disks() ([]store.Disk, error)
	Groups() ([]store.Group, error)
}

// Entry is a recorded policy and the timeline it belongs to.
type Entry struct {
	Target
	Policy Policy `json:"policy"`
}

// List returns every recorded policy by name. A policy that does not
// decode is an error naming its timeline; one whose timeline no longer
// exists (not left by this version: deleting a disk or group removes its
// policy) is skipped.
func List(r Lister) ([]Entry, error) {
	all, err := r.Policies()
	if err != nil || len(all) == 0 {
		return []Entry{}, err
	}
	names := map[uint32]Target{}
	disks, err := r.Disks()
	if err != nil {
		return nil, err
	}
	for _, d := range disks {
		if d.Group == "" {
			names[d.Timeline] = Target{Name: d.Name, Timeline: d.Timeline}
		}
	}
	groups, err := r.Groups()
	if err != nil {
		return nil, err
	}
	for _, g := range groups {
		names[g.ID] = Target{Name: g.Name, Timeline: g.ID, Group: true}
	}
	out := []Entry{}
	for tl, b := range all {
		t, ok := names[tl]
		if !ok {
			continue
		}
		p, err := Decode(b)
		if err != nil {
			return nil, fmt.Errorf("the policy of %q: %w", t.Name, err)
		}
		out = append(out, Entry{Target: t, Policy: p})
	}
	slices.SortFunc(out, func(a, b Entry) int { return cmp.Compare(a.Name, b.Name) })
	return out, nil
}

// AllPruner is a repository RunAll prunes (*store.Repo).
type AllPruner interface {
	Pruner
	Lister
}

// RunAll prunes every timeline that has a policy, by name, as of now. A
// timeline that fails does not stop the others: its Report says why
// (Error). The error is for what stops them all: the policies cannot be
// listed, or ctx ended (with the reports of the timelines done).
func RunAll(ctx context.Context, r AllPruner, now time.Time, dryRun bool) ([]Report, error) {
	entries, err := List(r)
	if err != nil {
		return nil, err
	}
	reps := []Report{}
	for _, e := range entries {
		if err := ctx.Err(); err != nil {
			return reps, err
		}
		rep, err := run(ctx, r, e.Target, now, dryRun)
		if err != nil {
			rep = Report{Name: e.Name, Timeline: e.Timeline, Policy: e.Policy, Now: now.UTC(), DryRun: dryRun,
				Removed: []store.Point{}, DroppedBookmarks: []string{}, Error: err.Error()}
		}
		reps = append(reps, rep)
	}
	return reps, nil
}
