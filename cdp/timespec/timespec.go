package timespec

import (
	"errors"
	"fmt"
	"math"
	"time"
)

// ErrBadTime is wrapped by every parse error; check with errors.Is.
var ErrBadTime = errors.New("timespec: invalid time")

// hint ends every parse error: the forms Parse accepts.
const hint = "use RFC 3339 (2026-11-25T10:15:30Z), ISO basic (20261125T101530Z), @unix seconds, or a relative time (-15m)"

// maxQuoted is how much of a long input an error message quotes.
const maxQuoted = 80

var (
	minTime = time.Unix(0, math.MinInt64).UTC()
	maxTime = time.Unix(0, math.MaxInt64).UTC()

	errRange = reason(fmt.Sprintf("out of range: times lie between %s and %s",
		minTime.Format(time.RFC3339Nano), maxTime.Format(time.RFC3339Nano)))
)

// reason is why an input does not parse, for the error message. The empty
// reason is an input of no recognisable form: the hint alone says it.
type reason string

func (r reason) Error() string { return string(r) }

// Parse reads s as an instant, relative forms counted back from now. Results
// are UTC and t.UnixNano() is exact. The accepted forms are in the package
// documentation; every error wraps ErrBadTime.
func Parse(s string, now time.Time) (time.Time, error) {
	t, err := parse(s, now)
	if err == nil && (t.Before(minTime) || t.After(maxTime)) {
		err = errRange
	}
	if err != nil {
		return time.Time{}, badTime(s, err)
	}
	return t.UTC(), nil
}

func parse(s string, now time.Time) (time.Time, error) {
	switch {
	case s == "":
		return time.Time{}, reason("empty")
	case s == "now":
		return now, nil
	case s[0] == '-':
		d, err := parseDuration(s[1:])
		return now.Add(-d), err
	case s[0] == '+':
		return time.Time{}, reason("a future time is never meant: relative times count back from now and take a '-' (-15m)")
	case s[0] == '@':
		return parseUnix(s[1:])
	case isISOBasic(s):
		return parseISOBasic(s)
	case isRFC3339(s):
		return parseRFC3339(s)
	}
	if _, err := parseDuration(s); err == nil {
		return time.Time{}, reason("a relative time takes a leading '-' (-15m)")
	}
	return time.Time{}, reason("")
}

// IsRelative reports whether s is a relative form whose meaning changes with
// now: "now" or a well-formed relative time such as -15m. The FUSE tree must
// not cache such names. For any other s, Parse gives the same result (or
// error) whatever now is.
func IsRelative(s string) bool {
	if s == "now" {
		return true
	}
	if s == "" || s[0] != '-' {
		return false
	}
	_, err := parseDuration(s[1:])
	return err == nil
}

// Format gives the canonical listed name of t: ISO 8601 basic in UTC, with
// the fraction's trailing zeros trimmed and no fraction on a whole second,
// e.g. 20261125T101530Z, 20261125T101530.5Z, 20261125T101530.123456789Z.
//
// Names sort by time as strings only among names of the same length (the
// same fraction length): sort listings by time, not by name. For t outside
// the range Parse accepts (years 1677 to 2262), the name does not parse.
func Format(t time.Time) string {
	return t.UTC().Format("20060102T150405.999999999Z")
}

func badTime(s string, why error) error {
	q := fmt.Sprintf("%q", clip(s))
	if len(s) > maxQuoted {
		q += fmt.Sprintf("... (%d bytes)", len(s))
	}
	if msg := why.Error(); msg != "" {
		return fmt.Errorf("%w %s: %s; %s", ErrBadTime, q, msg, hint)
	}
	return fmt.Errorf("%w %s: %s", ErrBadTime, q, hint)
}

// clip is s cut to maxQuoted bytes, for messages.
func clip(s string) string {
	if len(s) > maxQuoted {
		return s[:maxQuoted]
	}
	return s
}
