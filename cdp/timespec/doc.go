// Package timespec parses the instants users type and formats the instants
// the FUSE tree lists.
//
// # Accepted forms
//
// Parse accepts exactly these forms; nothing else, and no surrounding space.
//
//	20261125T101530Z                    ISO 8601 basic, UTC (the listed form)
//	20261125T101530.123456789Z          ... with a fraction of 1 to 9 digits
//	2026-11-25T10:15:30Z                RFC 3339
//	2026-11-25T10:15:30.123+01:00       ... with a fraction of 1 to 9 digits and an offset
//	@1764065730                         Unix seconds
//	@1764065730.25                      ... with a fraction of 1 to 9 digits
//	-15m  -2h30m  -1d12h  -1.5h  -500ms relative: that long before now
//	now                                 now
//
// ISO basic needs all six fields (seconds too) and the trailing Z: it names
// UTC only. RFC 3339 needs the upper-case T and a zone, Z or ±hh:mm. Leap
// seconds (second 60) are not representable and are rejected. Absolute forms
// carry nanoseconds exactly: a fraction is never rounded or truncated.
//
// A relative time is a '-' followed by one or more components, each a decimal
// number (with an optional fraction of 1 to 9 digits) and a unit:
//
//	ns  nanosecond
//	us  microsecond (also µs, μs)
//	ms  millisecond
//	s   second
//	m   minute
//	h   hour
//	d   day, 24 hours exactly
//	w   week, 7 days exactly
//
// Units go from largest to smallest, each at most once (-1d12h, not -12h1d).
// A component must come to a whole number of nanoseconds (-1.5ns is
// rejected). The sign is required: a time in the future is never meant, so
// +15m is rejected, and so is 15m. -0s means now. Durations reach back at
// most about 292 years (the largest time.Duration).
//
// IsRelative reports the forms whose meaning changes with now: relative
// times and "now". Their results must not be cached.
//
// # Range
//
// Every result is in UTC, and between 1677-09-21T00:12:43.145224192Z and
// 2262-04-11T23:47:16.854775807Z: the instants whose Unix nanoseconds fit an
// int64, as the journal stores them, so t.UnixNano() is always exact. Parse
// rejects instants outside that range, and negative Unix seconds (@-1).
// Parse does not reject the future: an absolute time after now is a valid
// instant that has not happened yet, for the caller to judge.
//
// # Listed names
//
// Format writes ISO 8601 basic in UTC with the fraction's trailing zeros
// trimmed and no fraction at all on a whole second:
//
//	20261125T101530Z
//	20261125T101530.5Z
//	20261125T101530.123456789Z
//
// Parse(Format(t), now) == t for every t in range. The names have no colons,
// so they are valid file names everywhere.
//
// Names sort by time as strings only among names of the same length, that is
// with fractions of the same length: 20261125T101530.5Z sorts before
// 20261125T101530Z ('.' < 'Z') and 20261125T101530.55Z before
// 20261125T101530.5Z, although both are later. Listing code sorts by time,
// not by name.
//
// # Errors
//
// Every parse error wraps ErrBadTime (check with errors.Is), quotes the
// input, says what is wrong when the form is recognisable, and lists the
// accepted forms:
//
//	timespec: invalid time "2026-13-01": use RFC 3339 (2026-11-25T10:15:30Z), ISO basic (20261125T101530Z), @unix seconds, or a relative time (-15m)
package timespec
