package timespec

import (
	"errors"
	"math"
	"strings"
	"testing"
	"time"
)

// FuzzParse: Parse never panics; an error wraps ErrBadTime and quotes the
// input; a result is UTC, in range, formats to a name that parses back to
// it, and moves with now exactly when IsRelative says so.
func FuzzParse(f *testing.F) {
	now := testNow.UnixNano()
	for _, c := range goodCases {
		f.Add(c.in, now)
	}
	for _, c := range badCases {
		f.Add(c.in, now)
	}
	f.Add("-1ns", int64(math.MinInt64))
	f.Add("now", int64(math.MaxInt64))
	f.Add("-15250w6d23h47m16.854775807s", int64(math.MaxInt64))

	f.Fuzz(func(t *testing.T, s string, nowNs int64) {
		now := time.Unix(0, nowNs)
		got, err := Parse(s, now)
		if err != nil {
			if !errors.Is(err, ErrBadTime) {
				t.Fatalf("Parse(%q): %v does not wrap ErrBadTime", s, err)
			}
			if !strings.HasPrefix(err.Error(), "timespec: invalid time \"") || !strings.HasSuffix(err.Error(), hint) {
				t.Fatalf("Parse(%q): message %q", s, err)
			}
			if !got.IsZero() {
				t.Fatalf("Parse(%q) = %v with an error", s, got)
			}
			if IsRelative(s) && !strings.Contains(err.Error(), "out of range") {
				t.Fatalf("IsRelative(%q) but Parse fails other than by range: %v", s, err)
			}
			return
		}
		if got.Location() != time.UTC || got.Before(minTime) || got.After(maxTime) {
			t.Fatalf("Parse(%q) = %v: not UTC or out of range", s, got)
		}
		name := Format(got)
		back, err := Parse(name, now)
		if err != nil || back != got {
			t.Fatalf("Parse(%q) = %v; Format = %q parses to %v, %v", s, got, name, back, err)
		}
		if IsRelative(name) {
			t.Fatalf("IsRelative(Format(%v)) = true", got)
		}

		// Move now by an hour within range: only relative forms follow it.
		other := now.Add(time.Hour)
		if now.After(maxTime.Add(-time.Hour)) {
			other = now.Add(-time.Hour)
		}
		moved, err := Parse(s, other)
		switch {
		case IsRelative(s):
			if err == nil && moved.Sub(got) != other.Sub(now) {
				t.Fatalf("relative %q: now moved %v, result %v", s, other.Sub(now), moved.Sub(got))
			}
		case err != nil || moved != got:
			t.Fatalf("absolute %q: %v at %v, %v, %v at %v", s, got, now, moved, err, other)
		}
	})
}
