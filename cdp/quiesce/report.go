package quiesce

import (
	"encoding/json"
	"time"
)

// Phases of a Step.
const (
	PhaseFreeze = "freeze"
	PhaseMark   = "mark"
	PhaseThaw   = "thaw"
)

// Statuses of a Step.
const (
	StatusOK       = "ok"
	StatusFailed   = "failed"   // the agent reported an error (a hook exited non-zero)
	StatusTimeout  = "timeout"  // the timeout ran out: a hook's process group was killed
	StatusCanceled = "canceled" // the caller's context was canceled (SIGTERM, Ctrl-C)
)

// Report is what one quiesced bookmark did, ready for json.Marshal and for
// keeping with the bookmark (info.json).
type Report struct {
	Group    string   `json:"group,omitempty"`
	Bookmark string   `json:"bookmark,omitempty"`
	Disks    []string `json:"disks,omitempty"`

	// Consistent is true when every agent froze and the mark succeeded: only
	// then may the bookmark be called application-consistent.
	Consistent bool `json:"consistent"`
	// Error is the reason the bookmark was refused or a thaw failed.
	Error string `json:"error,omitempty"`

	Start time.Time `json:"start"`
	End   time.Time `json:"end"`
	// FreezeToThaw runs from the start of the first freeze to the end of the
	// last thaw: how long the applications were held.
	FreezeToThaw Duration `json:"freeze_to_thaw"`
	// Held runs from the end of the last freeze to the start of the first
	// thaw: what the mark added while everything stayed frozen.
	Held Duration `json:"held,omitempty"`

	Steps []Step `json:"steps"`
	// Skipped lists hook directory entries that were not run, and why.
	Skipped []Skip `json:"skipped,omitempty"`
	// Files are small files to keep with the bookmark, by name: PostgreSQL's
	// backup_label and tablespace_map.
	Files map[string]string `json:"files,omitempty"`
}

// Step is one phase of one agent, or the mark.
type Step struct {
	Agent    string    `json:"agent"`
	Phase    string    `json:"phase"`
	Status   string    `json:"status"`
	Start    time.Time `json:"start"`
	End      time.Time `json:"end"`
	Duration Duration  `json:"duration"`
	Error    string    `json:"error,omitempty"`

	// Set by the agent.
	ExitStatus *int   `json:"exit_status,omitempty"` // a command's exit code; -1 when killed by a signal
	Signal     string `json:"signal,omitempty"`      // the signal that ended a command
	Output     string `json:"output,omitempty"`      // combined stdout and stderr, at most MaxOutput bytes (the tail)
	// Files are merged into Report.Files.
	Files map[string]string `json:"-"`
}

// Skip is a hooks directory entry that was not run.
type Skip struct {
	Path   string `json:"path"`
	Reason string `json:"reason"`
}

// Duration is a time.Duration that marshals as both nanoseconds, for
// scripts, and text, for people: {"ns": 12500000, "text": "12.5ms"}.
type Duration time.Duration

// MarshalJSON writes {"ns": 12500000, "text": "12.5ms"}.
func (d Duration) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		NS   int64  `json:"ns"`
		Text string `json:"text"`
	}{int64(d), time.Duration(d).String()})
}

// UnmarshalJSON reads what MarshalJSON writes.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var v struct {
		NS int64 `json:"ns"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	*d = Duration(v.NS)
	return nil
}
