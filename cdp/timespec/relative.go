package timespec

import (
	"fmt"
	"math"
	"math/bits"
	"time"
)

const unitList = "ns us µs ms s m h d w"

// units in the order a relative time must give them, largest first.
var units = []struct {
	name string
	d    time.Duration
}{
	{"w", 7 * 24 * time.Hour},
	{"d", 24 * time.Hour},
	{"h", time.Hour},
	{"m", time.Minute},
	{"s", time.Second},
	{"ms", time.Millisecond},
	{"us", time.Microsecond},
	{"µs", time.Microsecond}, // U+00B5 micro sign
	{"μs", time.Microsecond}, // U+03BC Greek mu
	{"ns", time.Nanosecond},
}

var pow10 = [...]uint64{1, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9}

var errTooLong = reason(fmt.Sprintf("a relative time reaches back at most %v (about 292 years)", time.Duration(math.MaxInt64)))

// parseDuration parses the unsigned body of a relative time, such as 2h30m
// or 1.5d: components of a number and a unit, largest unit first, each unit
// at most once, exact to the nanosecond.
func parseDuration(s string) (time.Duration, error) {
	if s == "" {
		return 0, reason("a relative time is '-', a number and a unit: -15m")
	}
	var total uint64
	next := 0 // index in units of the largest unit still allowed
	for s != "" {
		// number
		n := 0
		for n < len(s) && isDigit(s[n]) {
			n++
		}
		if n == 0 {
			return 0, reason("a relative time is '-', a number and a unit: -15m")
		}
		var whole uint64
		for i := 0; i < n; i++ {
			if whole > math.MaxInt64/10 {
				return 0, errTooLong
			}
			whole = whole*10 + uint64(s[i]-'0') // ≤ MaxInt64+9: no wrap
		}
		lit := s[:n]
		var frac, scale uint64 = 0, 1
		if n < len(s) && s[n] == '.' {
			m := n + 1
			for m < len(s) && isDigit(s[m]) {
				m++
			}
			switch {
			case m == n+1:
				return 0, fracEmpty
			case m-n-1 > 9:
				return 0, fracLong
			}
			frac, scale = uint64(num(s[n+1:m])), pow10[m-n-1]
			lit, n = s[:m], m
		}
		s = s[n:]

		// unit: everything up to the next number
		u := 0
		for u < len(s) && !isDigit(s[u]) && s[u] != '.' {
			u++
		}
		unit := s[:u]
		s = s[u:]
		i := unitIndex(unit)
		switch {
		case unit == "":
			return 0, reason(fmt.Sprintf("%s needs a unit (%s)", clip(lit), unitList))
		case i < 0:
			return 0, reason(fmt.Sprintf("unknown unit %q (%s)", clip(unit), unitList))
		case i < next:
			return 0, reason("units go from largest to smallest, each at most once: -1d12h")
		}
		next = i + 1
		for next < len(units) && units[next].d == units[i].d {
			next++ // us, µs, μs are one unit
		}

		// value: whole*unit + frac*unit/scale, exactly
		d := uint64(units[i].d)
		hi, lo := bits.Mul64(whole, d)
		if hi != 0 || lo > math.MaxInt64 {
			return 0, errTooLong
		}
		hi, fl := bits.Mul64(frac, d)
		q, r := bits.Div64(hi, fl, scale) // frac < scale, so hi < scale: no panic
		if r != 0 {
			return 0, reason(fmt.Sprintf("%s%s is not a whole number of nanoseconds", clip(lit), unit))
		}
		for _, v := range [2]uint64{lo, q} { // each ≤ MaxInt64, as is total: no wrap
			if total += v; total > math.MaxInt64 {
				return 0, errTooLong
			}
		}
	}
	return time.Duration(total), nil
}

func unitIndex(name string) int {
	for i, u := range units {
		if u.name == name {
			return i
		}
	}
	return -1
}
