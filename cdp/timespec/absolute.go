package timespec

import (
	"fmt"
	"time"
)

const (
	isoShape  = reason("ISO basic time is YYYYMMDDTHHMMSS[.fraction]Z")
	isoZone   = reason("ISO basic time needs a trailing Z (UTC): 20261125T101530Z; for an offset use RFC 3339")
	rfcShape  = reason("RFC 3339 time is YYYY-MM-DDTHH:MM:SS[.fraction](Z|±hh:mm)")
	rfcZone   = reason("RFC 3339 time needs a zone, Z or ±hh:mm: 2026-11-25T10:15:30Z")
	rfcSepT   = reason("RFC 3339 date and time are separated by an upper-case T: 2026-11-25T10:15:30Z")
	fracEmpty = reason("a fraction needs digits after the '.'")
	fracLong  = reason("a fraction has at most 9 digits (nanoseconds)")
)

// isISOBasic reports whether s starts like ISO basic: eight digits and a T.
func isISOBasic(s string) bool {
	return len(s) >= 9 && digits(s[:8]) && s[8] == 'T'
}

// parseISOBasic parses YYYYMMDDTHHMMSS[.fraction]Z.
func parseISOBasic(s string) (time.Time, error) {
	if len(s) < 15 || !digits(s[9:15]) {
		return time.Time{}, isoShape
	}
	rest := s[15:]
	nsec, n, err := parseFraction(rest)
	if err != nil {
		return time.Time{}, err
	}
	switch rest = rest[n:]; {
	case rest == "Z":
	case rest == "" || rest == "z" || rest[0] == '+' || rest[0] == '-':
		return time.Time{}, isoZone
	default:
		return time.Time{}, isoShape
	}
	return civil(num(s[0:4]), num(s[4:6]), num(s[6:8]), num(s[9:11]), num(s[11:13]), num(s[13:15]), nsec)
}

// isRFC3339 reports whether s starts like RFC 3339 with a time: a
// YYYY-MM-DD date and at least one more byte. A date alone is no form.
func isRFC3339(s string) bool {
	return len(s) > 10 && digits(s[0:4]) && s[4] == '-' && digits(s[5:7]) && s[7] == '-' && digits(s[8:10])
}

// parseRFC3339 parses YYYY-MM-DDTHH:MM:SS[.fraction](Z|±hh:mm).
func parseRFC3339(s string) (time.Time, error) {
	if s[10] != 'T' {
		if s[10] == ' ' || s[10] == 't' || s[10] == '_' {
			return time.Time{}, rfcSepT
		}
		return time.Time{}, rfcShape
	}
	if len(s) < 19 || !digits(s[11:13]) || s[13] != ':' || !digits(s[14:16]) || s[16] != ':' || !digits(s[17:19]) {
		return time.Time{}, rfcShape
	}
	rest := s[19:]
	nsec, n, err := parseFraction(rest)
	if err != nil {
		return time.Time{}, err
	}
	var offset int // seconds east of UTC
	switch rest = rest[n:]; {
	case rest == "Z":
	case rest == "" || rest == "z":
		return time.Time{}, rfcZone
	case len(rest) == 6 && (rest[0] == '+' || rest[0] == '-') && digits(rest[1:3]) && rest[3] == ':' && digits(rest[4:6]):
		h, m := num(rest[1:3]), num(rest[4:6])
		if h > 23 || m > 59 {
			return time.Time{}, reason(fmt.Sprintf("zone offset %s out of range", rest))
		}
		offset = (h*60 + m) * 60
		if rest[0] == '-' {
			offset = -offset
		}
	default:
		return time.Time{}, rfcShape
	}
	t, err := civil(num(s[0:4]), num(s[5:7]), num(s[8:10]), num(s[11:13]), num(s[14:16]), num(s[17:19]), nsec)
	return t.Add(-time.Duration(offset) * time.Second), err
}

// civil checks the fields of a date and time and gives the instant they name
// in UTC. time.Date would quietly normalise 2026-02-30 to March.
func civil(year, month, day, hour, min, sec, nsec int) (time.Time, error) {
	switch {
	case month < 1 || month > 12:
		return time.Time{}, reason(fmt.Sprintf("month %02d out of range", month))
	case day < 1 || day > daysIn(year, time.Month(month)):
		return time.Time{}, reason(fmt.Sprintf("day %02d out of range for %s %04d", day, time.Month(month), year))
	case hour > 23:
		return time.Time{}, reason(fmt.Sprintf("hour %02d out of range", hour))
	case min > 59:
		return time.Time{}, reason(fmt.Sprintf("minute %02d out of range", min))
	case sec == 60:
		return time.Time{}, reason("leap seconds (second 60) are not representable")
	case sec > 59:
		return time.Time{}, reason(fmt.Sprintf("second %02d out of range", sec))
	}
	return time.Date(year, time.Month(month), day, hour, min, sec, nsec, time.UTC), nil
}

func daysIn(year int, m time.Month) int {
	return time.Date(year, m+1, 0, 0, 0, 0, 0, time.UTC).Day()
}

// parseFraction reads an optional .fraction of 1 to 9 digits at the start of
// s, and gives its value in nanoseconds and the bytes it took.
func parseFraction(s string) (nsec, n int, err error) {
	if s == "" || s[0] != '.' {
		return 0, 0, nil
	}
	n = 1
	for n < len(s) && isDigit(s[n]) {
		n++
	}
	switch {
	case n == 1:
		return 0, 0, fracEmpty
	case n-1 > 9:
		return 0, 0, fracLong
	}
	nsec = num(s[1:n])
	for i := n - 1; i < 9; i++ {
		nsec *= 10
	}
	return nsec, n, nil
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// digits reports whether s is all ASCII digits.
func digits(s string) bool {
	for i := 0; i < len(s); i++ {
		if !isDigit(s[i]) {
			return false
		}
	}
	return true
}

// num is the value of s, ASCII digits few enough not to overflow an int.
func num(s string) int {
	v := 0
	for i := 0; i < len(s); i++ {
		v = v*10 + int(s[i]-'0')
	}
	return v
}
