package store

import (
	"errors"
	"time"
)

// Retention: a policy names which points of a timeline to keep (cdp/retention
// decides); Prune removes the others and collapses the versions of each
// block between two kept points into the newest of them; Collect (gc.go)
// frees content no version references any more.

// PruneOptions say what Prune keeps.
type PruneOptions struct {
	// Keep are the journal positions whose instants must stay exact:
	// the points the policy keeps, the positions of the bookmarks that
	// stay, and of every clone's base on this timeline. Prune adds the
	// timeline's newest point and the positions of pinned bookmarks and
	// clone bases itself, whatever Keep says.
	Keep []uint64
	// DropBookmarks are bookmarks of the timeline to remove (never a pinned one).
	DropBookmarks []string
	// DryRun reports what would go and changes nothing.
	DryRun bool
}

// PruneResult is what Prune removed (or, with DryRun, would remove).
type PruneResult struct {
	Points    []Point  `json:"points"`    // points that no longer exist
	Bookmarks []string `json:"bookmarks"` // bookmarks removed
	Versions  uint64   `json:"versions"`  // block versions collapsed
	// FreedBytes is the stored content that no version references any
	// more: what the next Collect gives back.
	FreedBytes int64 `json:"freed_bytes"`
	// Kept is how many points the timeline keeps.
	Kept int `json:"kept"`
}

// GCOptions tune Collect.
type GCOptions struct {
	// MaxUnused is the fraction of a segment that may be unreferenced before
	// Collect rewrites it (0: DefaultMaxUnused).
	MaxUnused float64
	// DryRun reports what would be freed and changes nothing.
	DryRun bool
	// Progress is told the bytes of segments processed and the total.
	Progress func(done, total int64)
}

// GCResult is what Collect did.
type GCResult struct {
	Candidates int           `json:"candidates"`  // content pruning left unreferenced, examined
	Freed      int           `json:"freed"`       // content no version references, freed
	FreedBytes int64         `json:"freed_bytes"` // its stored bytes
	Rewritten  int           `json:"rewritten"`   // segments rewritten or dropped
	Copied     int64         `json:"copied_bytes"`
	Moved      int           `json:"moved"`           // live content copied    // live content copied out of them
	Reclaimed  int64         `json:"reclaimed_bytes"` // bytes given back to the filesystem
	Held       int           `json:"held"`            // segments kept for readers of older views
	Duration   time.Duration `json:"-"`
}

var errNotYet = errors.New("store: retention not built yet")
