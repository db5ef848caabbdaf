package timespec

import (
	"errors"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
	"time"
)

// testNow is in a zone other than UTC and carries a monotonic reading, so
// the tests see that results are plain UTC all the same.
var testNow = time.Date(2026, 11, 25, 11, 15, 30, 0, time.FixedZone("CET", 3600))

func utc(year int, month time.Month, day, hour, min, sec, nsec int) time.Time {
	return time.Date(year, month, day, hour, min, sec, nsec, time.UTC)
}

var goodCases = []struct {
	in   string
	want time.Time
}{
	// ISO 8601 basic
	{"20261125T101530Z", utc(2026, 11, 25, 10, 15, 30, 0)},
	{"20261125T101530.5Z", utc(2026, 11, 25, 10, 15, 30, 500_000_000)},
	{"20261125T101530.500Z", utc(2026, 11, 25, 10, 15, 30, 500_000_000)},
	{"20261125T101530.123456789Z", utc(2026, 11, 25, 10, 15, 30, 123_456_789)},
	{"20261125T101530.000000001Z", utc(2026, 11, 25, 10, 15, 30, 1)},
	{"20261125T101530.000000000Z", utc(2026, 11, 25, 10, 15, 30, 0)},
	{"20240229T235959Z", utc(2024, 2, 29, 23, 59, 59, 0)},
	{"19700101T000000Z", time.Unix(0, 0)},
	{"16770921T001243.145224192Z", time.Unix(0, math.MinInt64)},
	{"22620411T234716.854775807Z", time.Unix(0, math.MaxInt64)},

	// RFC 3339
	{"2026-11-25T10:15:30Z", utc(2026, 11, 25, 10, 15, 30, 0)},
	{"2026-11-25T10:15:30.123+01:00", utc(2026, 11, 25, 9, 15, 30, 123_000_000)},
	{"2026-11-25T10:15:30.123456789-05:30", utc(2026, 11, 25, 15, 45, 30, 123_456_789)},
	{"2026-11-25T10:15:30-00:00", utc(2026, 11, 25, 10, 15, 30, 0)},
	{"2026-11-25T00:00:00+23:59", utc(2026, 11, 24, 0, 1, 0, 0)},
	{"2000-02-29T12:00:00Z", utc(2000, 2, 29, 12, 0, 0, 0)},
	{"2262-04-11T23:47:16.854775807Z", time.Unix(0, math.MaxInt64)},
	{"2262-04-12T00:47:16.854775807+01:00", time.Unix(0, math.MaxInt64)},
	{"1677-09-20T23:12:43.145224192-01:00", time.Unix(0, math.MinInt64)},

	// Unix seconds
	{"@1764065730", time.Unix(1764065730, 0)},
	{"@1764065730.25", time.Unix(1764065730, 250_000_000)},
	{"@1764065730.123456789", time.Unix(1764065730, 123_456_789)},
	{"@0", time.Unix(0, 0)},
	{"@0.000000001", time.Unix(0, 1)},
	{"@0000000001", time.Unix(1, 0)},
	{"@9223372036.854775807", time.Unix(0, math.MaxInt64)},

	// relative
	{"-15m", testNow.Add(-15 * time.Minute)},
	{"-2h30m", testNow.Add(-150 * time.Minute)},
	{"-90s", testNow.Add(-90 * time.Second)},
	{"-1d", testNow.Add(-24 * time.Hour)},
	{"-1w", testNow.Add(-7 * 24 * time.Hour)},
	{"-1d12h", testNow.Add(-36 * time.Hour)},
	{"-500ms", testNow.Add(-500 * time.Millisecond)},
	{"-1w1d1h1m1s1ms1us1ns", testNow.Add(-(8*24*time.Hour + time.Hour + time.Minute + time.Second + time.Millisecond + time.Microsecond + time.Nanosecond))},
	{"-3us", testNow.Add(-3 * time.Microsecond)},
	{"-3µs", testNow.Add(-3 * time.Microsecond)},
	{"-3μs", testNow.Add(-3 * time.Microsecond)},
	{"-7ns", testNow.Add(-7)},
	{"-1.5h", testNow.Add(-90 * time.Minute)},
	{"-0.5d", testNow.Add(-12 * time.Hour)},
	{"-1.000000001s", testNow.Add(-time.Second - 1)},
	{"-0.001us", testNow.Add(-1)},
	{"-1.0ns", testNow.Add(-1)},
	{"-0.333333333h", testNow.Add(-1199999998800 * time.Nanosecond)},
	{"-0s", testNow},
	{"-0w0ns", testNow},
	{"-00015m", testNow.Add(-15 * time.Minute)},
	{"-2562047h47m16.854775807s", testNow.Add(-math.MaxInt64)},
	{"now", testNow},
}

func TestParse(t *testing.T) {
	for _, c := range goodCases {
		got, err := Parse(c.in, testNow)
		if err != nil {
			t.Errorf("Parse(%q): %v", c.in, err)
			continue
		}
		if !got.Equal(c.want) || got.Location() != time.UTC {
			t.Errorf("Parse(%q) = %s, want %s in UTC", c.in, got.Format(time.RFC3339Nano), c.want.UTC().Format(time.RFC3339Nano))
		}
		if got != c.want.UTC() {
			t.Errorf("Parse(%q) = %#v, want a plain UTC time without monotonic reading", c.in, got)
		}
	}
}

const longInput = "9999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999"

var badCases = []struct {
	in, why string // why: a part of the message
}{
	{"", "empty"},
	{" 20261125T101530Z", ""},
	{"20261125T101530Z ", "YYYYMMDDTHHMMSS[.fraction]Z"},
	{"20261125T101530", "needs a trailing Z"},
	{"20261125T101530.5", "needs a trailing Z"},
	{"20261125T101530z", "needs a trailing Z"},
	{"20261125T101530+0100", "needs a trailing Z"},
	{"20261125T101530-01:00", "needs a trailing Z"},
	{"20261125T1015Z", "YYYYMMDDTHHMMSS[.fraction]Z"},
	{"20261125T", "YYYYMMDDTHHMMSS[.fraction]Z"},
	{"20261125T10:15:30Z", "YYYYMMDDTHHMMSS[.fraction]Z"},
	{"20261125T101530.Z", "needs digits after the '.'"},
	{"20261125T101530.1234567891Z", "at most 9 digits"},
	{"20261125T101530.5.5Z", "YYYYMMDDTHHMMSS[.fraction]Z"},
	{"20261325T101530Z", "month 13 out of range"},
	{"20260025T101530Z", "month 00 out of range"},
	{"20261100T101530Z", "day 00 out of range"},
	{"20260230T101530Z", "day 30 out of range for February 2026"},
	{"20250229T101530Z", "day 29 out of range for February 2025"},
	{"20261131T101530Z", "day 31 out of range for November 2026"},
	{"20261125T241530Z", "hour 24 out of range"},
	{"20261125T106030Z", "minute 60 out of range"},
	{"20261231T235960Z", "leap seconds"},
	{"20261125T101599Z", "second 99 out of range"},
	{"00010101T000000Z", "out of range: times lie between 1677-09-21T00:12:43.145224192Z and 2262-04-11T23:47:16.854775807Z"},
	{"16770921T001243.145224191Z", "out of range"},
	{"22620411T234716.854775808Z", "out of range"},
	{"99991231T235959Z", "out of range"},
	{"2026-13-01", ""},
	{"2026-11-25", ""},
	{"2026-11-25T", "RFC 3339 time is YYYY-MM-DDTHH:MM:SS"},
	{"2026-11-25 10:15:30Z", "upper-case T"},
	{"2026-11-25t10:15:30Z", "upper-case T"},
	{"2026-11-25_10:15:30Z", "upper-case T"},
	{"2026-11-25X10:15:30Z", "RFC 3339 time is"},
	{"2026-11-25T10:15:30", "needs a zone"},
	{"2026-11-25T10:15:30.5", "needs a zone"},
	{"2026-11-25T10:15:30z", "needs a zone"},
	{"2026-11-25T10:15Z", "RFC 3339 time is"},
	{"2026-11-25T10:15:30+0100", "RFC 3339 time is"},
	{"2026-11-25T10:15:30+01", "RFC 3339 time is"},
	{"2026-11-25T10:15:30 +01:00", "RFC 3339 time is"},
	{"2026-11-25T10:15:30+24:00", "zone offset +24:00 out of range"},
	{"2026-11-25T10:15:30+01:60", "zone offset +01:60 out of range"},
	{"2026-11-25T10:15:30,5Z", "RFC 3339 time is"},
	{"2026-11-25T10:15:30.Z", "needs digits after the '.'"},
	{"2026-11-25T10:15:30.1234567890Z", "at most 9 digits"},
	{"2026-02-29T10:15:30Z", "day 29 out of range for February 2026"},
	{"2026-11-25T24:00:00Z", "hour 24 out of range"},
	{"2026-12-31T23:59:60Z", "leap seconds"},
	{"1677-09-21T00:12:43.145224191Z", "out of range"},
	{"2262-04-11T23:47:16.854775808Z", "out of range"},
	{"2262-04-11T23:47:16.854775807-00:01", "out of range"},
	{"0000-01-01T00:00:00Z", "out of range"},
	{"@", "@ takes Unix seconds"},
	{"@-1", "not negative"},
	{"@-1764065730", "not negative"},
	{"@+1", "@ takes Unix seconds"},
	{"@ 1", "@ takes Unix seconds"},
	{"@1 ", "@ takes Unix seconds"},
	{"@1e9", "@ takes Unix seconds"},
	{"@0x10", "@ takes Unix seconds"},
	{"@.5", "@ takes Unix seconds"},
	{"@1.", "needs digits after the '.'"},
	{"@1.1234567890", "at most 9 digits"},
	{"@1.5.5", "@ takes Unix seconds"},
	{"@9223372036.854775808", "out of range"},
	{"@9223372037", "out of range"},
	{"@99999999999999999999999999", "out of range"},
	{"-", "a number and a unit"},
	{"--5m", "a number and a unit"},
	{"-+5m", "a number and a unit"},
	{"-m", "a number and a unit"},
	{"-.5h", "a number and a unit"},
	{"-5", "5 needs a unit (ns us µs ms s m h d w)"},
	{"-1h30", "30 needs a unit"},
	{"-1.5", "1.5 needs a unit"},
	{"-5y", `unknown unit "y"`},
	{"-1mo", `unknown unit "mo"`},
	{"-5M", `unknown unit "M"`},
	{"-5H", `unknown unit "H"`},
	{"-15 m", `unknown unit " m"`},
	{"-15m ", `unknown unit "m "`},
	{"-1h-1m", `unknown unit "h-"`},
	{"-1m1h", "largest to smallest"},
	{"-1m1m", "largest to smallest"},
	{"-1us1µs", "largest to smallest"},
	{"-1µs1μs", "largest to smallest"},
	{"-1ms1s", "largest to smallest"},
	{"-1.5ns", "1.5ns is not a whole number of nanoseconds"},
	{"-0.0001us", "is not a whole number of nanoseconds"},
	{"-0.0000001ms", "is not a whole number of nanoseconds"},
	{"-1.m", "needs digits after the '.'"},
	{"-1.1234567890h", "at most 9 digits"},
	{"-1.5.5h", "1.5 needs a unit"},
	{"-2562047h47m16.854775808s", "reaches back at most 2562047h47m16.854775807s"},
	{"-106752d", "reaches back at most"},
	{"-15251w", "reaches back at most"},
	{"-9223372036854775807ns1ns", "largest to smallest"},
	{"-9223372036854775808ns", "reaches back at most"},
	{"-99999999999999999999s", "reaches back at most"},
	{"-18446744073709551616ns", "reaches back at most"},
	{"-15250w6d23h47m16.854775808s", "reaches back at most"},
	{"+15m", "a future time is never meant"},
	{"+0s", "a future time is never meant"},
	{"15m", "takes a leading '-'"},
	{"1h30m", "takes a leading '-'"},
	{"0s", "takes a leading '-'"},
	{"Now", ""},
	{"NOW", ""},
	{"now ", ""},
	{" now", ""},
	{"latest", ""},
	{"yesterday", ""},
	{"1764065730", ""},
	{"20261125", ""},
	{"garbage", ""},
	{"T", ""},
	{"Z", ""},
	{"\x00", ""},
	{"\xff\xfe", ""},
	{"２０２６-11-25T10:15:30Z", ""}, // full-width digits
	{longInput, "(100 bytes)"},
	{"-" + strings.Repeat("0", 200) + "5y", `unknown unit "y"`},
	{"-5" + strings.Repeat("y", 200), "unknown unit"},
}

func TestParseErrors(t *testing.T) {
	for _, c := range badCases {
		got, err := Parse(c.in, testNow)
		if err == nil {
			t.Errorf("Parse(%q) = %s, want an error", c.in, got.Format(time.RFC3339Nano))
			continue
		}
		if !errors.Is(err, ErrBadTime) {
			t.Errorf("Parse(%q): %v does not wrap ErrBadTime", c.in, err)
		}
		if !got.IsZero() {
			t.Errorf("Parse(%q) = %v with an error, want the zero time", c.in, got)
		}
		msg := err.Error()
		quoted := strconv.Quote(c.in)
		if len(c.in) > maxQuoted {
			quoted = strconv.Quote(c.in[:maxQuoted]) + "..."
		}
		if !strings.HasPrefix(msg, "timespec: invalid time "+quoted) {
			t.Errorf("Parse(%q): message %q does not name the input", c.in, msg)
		}
		if !strings.Contains(msg, c.why) {
			t.Errorf("Parse(%q): message %q does not say %q", c.in, msg, c.why)
		}
		if !strings.HasSuffix(msg, hint) {
			t.Errorf("Parse(%q): message %q does not end with the accepted forms", c.in, msg)
		}
		if c.why == "" && msg != "timespec: invalid time "+quoted+": "+hint {
			t.Errorf("Parse(%q): message %q, want the hint alone", c.in, msg)
		}
	}
}

func TestParseErrorMessage(t *testing.T) {
	_, err := Parse("2026-13-01", testNow)
	const want = `timespec: invalid time "2026-13-01": use RFC 3339 (2026-11-25T10:15:30Z), ISO basic (20261125T101530Z), @unix seconds, or a relative time (-15m)`
	if err == nil || err.Error() != want {
		t.Errorf("Parse(\"2026-13-01\") error = %v, want %s", err, want)
	}
	_, err = Parse("20261125T101530", testNow)
	const wantZ = `timespec: invalid time "20261125T101530": ISO basic time needs a trailing Z (UTC): 20261125T101530Z; for an offset use RFC 3339; ` + hint
	if err == nil || err.Error() != wantZ {
		t.Errorf("Parse(\"20261125T101530\") error = %v, want %s", err, wantZ)
	}
}

// TestParseRelativeRange: a relative time that reaches back past the oldest
// representable instant is out of range, not wrapped around.
func TestParseRelativeRange(t *testing.T) {
	oldest := time.Unix(0, math.MinInt64)
	if got, err := Parse("-0s", oldest); err != nil || !got.Equal(oldest) {
		t.Errorf("Parse(-0s, oldest) = %v, %v; want %v", got, err, oldest)
	}
	for _, in := range []string{"-1ns", "-2562047h47m16.854775807s"} {
		if _, err := Parse(in, oldest); !errors.Is(err, ErrBadTime) || !strings.Contains(err.Error(), "out of range") {
			t.Errorf("Parse(%q, oldest): %v, want out of range", in, err)
		}
	}
	if got, err := Parse("now", time.Unix(0, math.MaxInt64).Add(1)); err == nil {
		t.Errorf("Parse(now, past the newest instant) = %v, want out of range", got)
	}
	newest := time.Unix(0, math.MaxInt64)
	if got, err := Parse("-2562047h47m16.854775807s", newest); err != nil || got != time.Unix(0, 0).UTC() {
		t.Errorf("Parse(longest, newest) = %v, %v; want the epoch", got, err)
	}
}

func TestFormat(t *testing.T) {
	for _, c := range []struct {
		in   time.Time
		want string
	}{
		{utc(2026, 11, 25, 10, 15, 30, 0), "20261125T101530Z"},
		{utc(2026, 11, 25, 10, 15, 30, 500_000_000), "20261125T101530.5Z"},
		{utc(2026, 11, 25, 10, 15, 30, 120_000_000), "20261125T101530.12Z"},
		{utc(2026, 11, 25, 10, 15, 30, 123_456_789), "20261125T101530.123456789Z"},
		{utc(2026, 11, 25, 10, 15, 30, 1), "20261125T101530.000000001Z"},
		{utc(2026, 1, 2, 3, 4, 5, 1000), "20260102T030405.000001Z"},
		{time.Date(2026, 11, 25, 11, 15, 30, 0, time.FixedZone("CET", 3600)), "20261125T101530Z"},
		{time.Unix(0, 0), "19700101T000000Z"},
		{time.Unix(0, math.MinInt64), "16770921T001243.145224192Z"},
		{time.Unix(0, math.MaxInt64), "22620411T234716.854775807Z"},
	} {
		if got := Format(c.in); got != c.want {
			t.Errorf("Format(%v) = %s, want %s", c.in, got, c.want)
		}
	}
}

// randomTime is an instant anywhere in range, its fraction cut to a random
// number of digits so that every fraction length is well represented.
func randomTime(r *rand.Rand) time.Time {
	ns := int64(r.Uint64())
	sec, frac := ns/1e9, ns%1e9
	if frac < 0 {
		sec, frac = sec-1, frac+1e9
	}
	p := int64(math.Pow10(r.IntN(10))) // 1 .. 1e9
	t := time.Unix(sec, frac/p*p)
	if t.Before(minTime) || t.After(maxTime) { // the cut took it below the oldest
		return minTime
	}
	return t
}

// TestRoundTrip: every form of an instant that carries nanoseconds parses
// back to that instant exactly.
func TestRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for range 100_000 {
		want := randomTime(r).UTC()
		zone := time.FixedZone("", (r.IntN(2*24*60-1)-(24*60-1))*60) // -23:59 .. +23:59

		forms := []string{
			Format(want),
			want.Format(time.RFC3339Nano),
			want.In(zone).Format(time.RFC3339Nano),
		}
		if want.Nanosecond() == 0 {
			forms = append(forms, want.In(zone).Format(time.RFC3339))
		}
		if want.Unix() >= 0 {
			forms = append(forms, "@"+strconv.FormatInt(want.Unix(), 10)+"."+strconv.Itoa(1e9 + want.Nanosecond())[1:])
		}
		for _, s := range forms {
			got, err := Parse(s, testNow)
			if err != nil || got != want {
				t.Fatalf("Parse(%q) = %v, %v; want %v", s, got, err, want)
			}
			if IsRelative(s) {
				t.Fatalf("IsRelative(%q) = true", s)
			}
		}
		// Relative: counted back from now exactly.
		now := want
		if span := maxTime.Sub(want); span > 0 { // saturated at the longest Duration
			now = want.Add(time.Duration(r.Int64N(int64(span))))
		}
		rel := "-" + strconv.FormatInt(int64(now.Sub(want)), 10) + "ns"
		if got, err := Parse(rel, now); err != nil || got != want {
			t.Fatalf("Parse(%q, %v) = %v, %v; want %v", rel, now, got, err, want)
		}
	}
}

// TestFormatSorts: names of the same length sort as their instants do.
func TestFormatSorts(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	byLen := map[int][]time.Time{}
	for range 20_000 {
		tm := randomTime(r)
		n := len(Format(tm))
		byLen[n] = append(byLen[n], tm)
	}
	for n, ts := range byLen {
		for i := 1; i < len(ts); i++ {
			a, b := ts[i-1], ts[i]
			if (Format(a) < Format(b)) != a.Before(b) {
				t.Fatalf("length %d: %s < %s is %v, but %v before %v is %v",
					n, Format(a), Format(b), Format(a) < Format(b), a, b, a.Before(b))
			}
		}
	}
	if len(byLen) != 10 {
		t.Errorf("names of %d lengths, want 10 (no fraction, 1 to 9 digits)", len(byLen))
	}
}

func TestIsRelative(t *testing.T) {
	for _, c := range []struct {
		in   string
		want bool
	}{
		{"now", true},
		{"-15m", true},
		{"-0s", true},
		{"-1d12h", true},
		{"-1.5h", true},
		{"-2562047h47m16.854775807s", true},
		{"-3µs", true},
		{"", false},
		{"-", false},
		{"-15", false},
		{"-5y", false},
		{"-1m1h", false},
		{"-1.5ns", false},
		{"-2562047h47m16.854775808s", false},
		{"+15m", false},
		{"15m", false},
		{"Now", false},
		{"now ", false},
		{"latest", false},
		{"20261125T101530Z", false},
		{"2026-11-25T10:15:30Z", false},
		{"@1764065730", false},
	} {
		if got := IsRelative(c.in); got != c.want {
			t.Errorf("IsRelative(%q) = %v, want %v", c.in, got, c.want)
		}
	}
}

// TestNotRelativeIgnoresNow: what IsRelative does not flag parses the same
// whatever now is, and what it flags parses (if at all) relative to now.
func TestNotRelativeIgnoresNow(t *testing.T) {
	later := testNow.Add(time.Hour)
	check := func(in string) {
		a, errA := Parse(in, testNow)
		b, errB := Parse(in, later)
		if (errA == nil) != (errB == nil) {
			t.Errorf("Parse(%q) fails with one now and not the other: %v, %v", in, errA, errB)
			return
		}
		if errA != nil {
			if IsRelative(in) {
				t.Errorf("IsRelative(%q) = true, but Parse fails: %v", in, errA)
			}
			return
		}
		if d := b.Sub(a); IsRelative(in) && d != time.Hour || !IsRelative(in) && d != 0 {
			t.Errorf("Parse(%q) moved %v when now moved 1h; IsRelative = %v", in, d, IsRelative(in))
		}
	}
	for _, c := range goodCases {
		check(c.in)
	}
	for _, c := range badCases {
		check(c.in)
	}
}

func TestParseNeverPanicsOnPrefixes(t *testing.T) {
	// Every prefix and every one-byte change of the good inputs: the
	// parsers index by position, so short and altered inputs are the risk.
	for _, c := range goodCases {
		for i := 0; i <= len(c.in); i++ {
			_, _ = Parse(c.in[:i], testNow)
			_, _ = Parse(c.in[i:], testNow)
			for _, b := range []byte("0Z9T-:.+@ \xff") {
				if i < len(c.in) {
					_, _ = Parse(c.in[:i]+string(b)+c.in[i+1:], testNow)
				}
			}
		}
	}
}
