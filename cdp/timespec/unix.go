package timespec

import (
	"math"
	"time"
)

// parseUnix parses the s of @s: decimal Unix seconds, not negative, with an
// optional fraction of 1 to 9 digits.
func parseUnix(s string) (time.Time, error) {
	n := 0
	for n < len(s) && isDigit(s[n]) {
		n++
	}
	switch {
	case s != "" && s[0] == '-':
		return time.Time{}, reason("Unix seconds are not negative")
	case n == 0:
		return time.Time{}, reason("@ takes Unix seconds: @1764065730 or @1764065730.25")
	}
	var sec uint64
	for i := 0; i < n; i++ {
		sec = sec*10 + uint64(s[i]-'0')
		if sec > math.MaxInt64/1_000_000_000 {
			return time.Time{}, errRange
		}
	}
	nsec, m, err := parseFraction(s[n:])
	if err != nil {
		return time.Time{}, err
	}
	if n+m != len(s) {
		return time.Time{}, reason("@ takes Unix seconds: @1764065730 or @1764065730.25")
	}
	ns := sec*1e9 + uint64(nsec)
	if ns > math.MaxInt64 {
		return time.Time{}, errRange
	}
	return time.Unix(0, int64(ns)), nil
}
