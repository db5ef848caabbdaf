package retention

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Errors of retention. Check them with errors.Is.
var (
	// ErrBadPolicy: a policy, or a span of it, is not acceptable.
	ErrBadPolicy = errors.New("retention: invalid policy")
	// ErrNoPolicy: the disk or group has no retention policy.
	ErrNoPolicy = errors.New("retention: no policy")
)

// Policy says which points of a timeline to keep; see the package doc.
// A zero window keeps nothing by itself.
type Policy struct {
	// KeepAll keeps every point this young.
	KeepAll Span `json:"keep_all"`
	// Hourly, Daily, Weekly and Monthly keep, within that span back from
	// now, the newest point of each UTC hour, UTC day, ISO week and
	// calendar month.
	Hourly  Span `json:"hourly"`
	Daily   Span `json:"daily"`
	Weekly  Span `json:"weekly"`
	Monthly Span `json:"monthly"`
	// Bookmarks keeps the points of bookmarks this young, and removes
	// older bookmarks; zero: as long as the longest window. Pinned
	// bookmarks are always kept.
	Bookmarks Span `json:"bookmarks"`
}

// windows are the policy's windows with their reasons, finest first.
func (p Policy) windows() []window {
	return []window{
		{"hourly", p.Hourly, hourOf},
		{"daily", p.Daily, dayOf},
		{"weekly", p.Weekly, weekOf},
		{"monthly", p.Monthly, monthOf},
	}
}

// Validate refuses a policy that keeps nothing but the newest point.
func (p Policy) Validate() error {
	if p.KeepAll.IsZero() && p.Hourly.IsZero() && p.Daily.IsZero() && p.Weekly.IsZero() && p.Monthly.IsZero() {
		return fmt.Errorf("%w: it keeps nothing but the newest point: give at least one of keep-all, hourly, daily, weekly, monthly", ErrBadPolicy)
	}
	return nil
}

// BookmarksBefore is when non-pinned bookmarks start being removed, as of
// now: Bookmarks back from now, or the oldest start of the other windows.
func (p Policy) BookmarksBefore(now time.Time) time.Time {
	if !p.Bookmarks.IsZero() {
		return p.Bookmarks.Before(now)
	}
	oldest := now
	for _, s := range []Span{p.KeepAll, p.Hourly, p.Daily, p.Weekly, p.Monthly} {
		if b := s.Before(now); b.Before(oldest) {
			oldest = b
		}
	}
	return oldest
}

// String is the policy as the command line takes it.
func (p Policy) String() string {
	var b bytes.Buffer
	for _, f := range []struct {
		name string
		s    Span
	}{{"keep-all", p.KeepAll}, {"hourly", p.Hourly}, {"daily", p.Daily}, {"weekly", p.Weekly}, {"monthly", p.Monthly}, {"bookmarks", p.Bookmarks}} {
		if !f.s.IsZero() {
			if b.Len() > 0 {
				b.WriteByte(' ')
			}
			fmt.Fprintf(&b, "--%s %s", f.name, f.s)
		}
	}
	return b.String()
}

// Decode reads a policy as the store keeps it (its JSON) and validates it.
func Decode(b []byte) (Policy, error) {
	var p Policy
	if err := json.Unmarshal(b, &p); err != nil {
		return Policy{}, fmt.Errorf("%w: %v", ErrBadPolicy, err)
	}
	return p, p.Validate()
}
