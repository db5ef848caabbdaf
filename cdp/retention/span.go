package retention

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Span is a calendar span: years, months, weeks, days, hours and minutes,
// written as "24h", "90min", "7d", "26w", "24m", "2y", their combinations
// ("1y6m", "1d12h") or "0". As in restic's --keep-within, m is months and
// min is minutes. Its JSON is its string.
type Span struct {
	Years, Months, Weeks, Days, Hours, Minutes int
}

// units in the order String writes them; each may appear once.
var units = []struct {
	name string
	get  func(*Span) *int
}{
	{"y", func(s *Span) *int { return &s.Years }},
	{"m", func(s *Span) *int { return &s.Months }},
	{"w", func(s *Span) *int { return &s.Weeks }},
	{"d", func(s *Span) *int { return &s.Days }},
	{"h", func(s *Span) *int { return &s.Hours }},
	{"min", func(s *Span) *int { return &s.Minutes }},
}

// maxCount bounds each number: a span of more than a million hours (114
// years) is a typo, and the bound keeps every sum far from overflow.
const maxCount = 1_000_000

const spanHelp = "a span is a number and a unit, y (years), m (months), w, d, h or min (minutes), " +
	`combined as in "1y6m"; "0" is none`

// ParseSpan parses a span. Errors wrap ErrBadPolicy.
func ParseSpan(s string) (Span, error) {
	var sp Span
	if s == "0" {
		return sp, nil
	}
	if s == "" {
		return sp, spanErr(s, errors.New("empty"))
	}
	if s[0] == '-' {
		return sp, spanErr(s, errors.New("a span cannot be negative"))
	}
	seen := map[string]bool{}
	for rest := s; rest != ""; {
		i := strings.IndexFunc(rest, func(r rune) bool { return r < '0' || r > '9' })
		if i == 0 {
			return sp, spanErr(s, fmt.Errorf("%q is not a number", rest))
		}
		if i < 0 {
			if rest == s {
				return sp, spanErr(s, fmt.Errorf("a bare number has no unit: say %sh, %sd, %sw, %sm (months) or %sy", s, s, s, s, s))
			}
			return sp, spanErr(s, fmt.Errorf("%q has no unit", rest))
		}
		num := rest[:i]
		rest = rest[i:]
		j := strings.IndexFunc(rest, func(r rune) bool { return r >= '0' && r <= '9' })
		if j < 0 {
			j = len(rest)
		}
		unit := rest[:j]
		rest = rest[j:]
		n, err := strconv.Atoi(num)
		if err != nil || n > maxCount {
			return sp, spanErr(s, fmt.Errorf("%s is too large (at most %d of a unit)", num, maxCount))
		}
		field := unitField(&sp, unit)
		if field == nil {
			return sp, spanErr(s, fmt.Errorf("unknown unit %q", unit))
		}
		if seen[unit] {
			return sp, spanErr(s, fmt.Errorf("unit %q given twice", unit))
		}
		seen[unit] = true
		*field = n
	}
	return sp, nil
}

func unitField(sp *Span, unit string) *int {
	for _, u := range units {
		if u.name == unit {
			return u.get(sp)
		}
	}
	return nil
}

func spanErr(s string, why error) error {
	if len(s) > 40 {
		s = s[:40] + "…"
	}
	return fmt.Errorf("%w: span %q: %v (%s)", ErrBadPolicy, s, why, spanHelp)
}

// MustSpan is ParseSpan for constants: it panics on an invalid span.
func MustSpan(s string) Span {
	sp, err := ParseSpan(s)
	if err != nil {
		panic(err)
	}
	return sp
}

// IsZero says whether the span is empty ("0").
func (s Span) IsZero() bool { return s == Span{} }

// String is the span as ParseSpan reads it: units in the order y m w d h
// min, "0" for none.
func (s Span) String() string {
	var b strings.Builder
	for _, u := range units {
		if n := *u.get(&s); n != 0 {
			b.WriteString(strconv.Itoa(n))
			b.WriteString(u.name)
		}
	}
	if b.Len() == 0 {
		return "0"
	}
	return b.String()
}

// Before is the instant the span ends at when it is measured back from
// now: years and months on the calendar (a month back from March 31 is the
// last day of February, not March 3 as time.AddDate would have it: a
// window is never shorter than its months), then weeks and days as
// calendar days, then hours and minutes. Times are taken in UTC, which
// has no daylight saving.
func (s Span) Before(now time.Time) time.Time {
	t := now.UTC()
	if s.Years != 0 || s.Months != 0 {
		months := t.Year()*12 + int(t.Month()) - 1 - s.Years*12 - s.Months
		y, m := months/12, time.Month(months%12+1)
		if months < 0 { // before year 0: floor, not truncation
			y, m = (months-11)/12, time.Month((months%12+12)%12+1)
		}
		day := min(t.Day(), daysIn(y, m))
		t = time.Date(y, m, day, t.Hour(), t.Minute(), t.Second(), t.Nanosecond(), time.UTC)
	}
	t = t.AddDate(0, 0, -(s.Weeks*7 + s.Days))
	return t.Add(-time.Duration(s.Hours)*time.Hour - time.Duration(s.Minutes)*time.Minute)
}

// daysIn is the number of days of month m of year y.
func daysIn(y int, m time.Month) int {
	return time.Date(y, m+1, 0, 0, 0, 0, 0, time.UTC).Day()
}

// MarshalText writes the span's string (its JSON).
func (s Span) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText parses a span's string.
func (s *Span) UnmarshalText(b []byte) error {
	sp, err := ParseSpan(string(b))
	if err != nil {
		return err
	}
	*s = sp
	return nil
}
