package retention

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestParseSpan(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Span
		str  string
	}{
		{"0", Span{}, "0"},
		{"0d", Span{}, "0"},
		{"24h", Span{Hours: 24}, "24h"},
		{"90min", Span{Minutes: 90}, "90min"},
		{"7d", Span{Days: 7}, "7d"},
		{"26w", Span{Weeks: 26}, "26w"},
		{"24m", Span{Months: 24}, "24m"},
		{"2y", Span{Years: 2}, "2y"},
		{"1y6m", Span{Years: 1, Months: 6}, "1y6m"},
		{"6m1y", Span{Years: 1, Months: 6}, "1y6m"},
		{"1d12h", Span{Days: 1, Hours: 12}, "1d12h"},
		{"1h30min", Span{Hours: 1, Minutes: 30}, "1h30min"},
		{"1m30min", Span{Months: 1, Minutes: 30}, "1m30min"},
		{"007d", Span{Days: 7}, "7d"},
		{"1000000h", Span{Hours: 1000000}, "1000000h"},
	} {
		got, err := ParseSpan(tc.in)
		if err != nil || got != tc.want || got.String() != tc.str {
			t.Errorf("ParseSpan(%q) = %+v (%q) %v, want %+v (%q)", tc.in, got, got.String(), err, tc.want, tc.str)
		}
	}
	for _, tc := range []struct{ in, msg string }{
		{"", "empty"},
		{"24", "a bare number has no unit: say 24h, 24d"},
		{"1d24", `"24" has no unit`},
		{"5x", `unknown unit "x"`},
		{"1M", `unknown unit "M"`},
		{"3mo", `unknown unit "mo"`},
		{"1.5h", `unknown unit "."`},
		{"-1d", "cannot be negative"},
		{"1d-2h", `unknown unit "d-"`},
		{"1d1d", `unit "d" given twice`},
		{"h", `"h" is not a number`},
		{" 1d", `" 1d" is not a number`},
		{"1000001h", "too large"},
		{"99999999999999999999999d", "too large"},
	} {
		_, err := ParseSpan(tc.in)
		if !errors.Is(err, ErrBadPolicy) || !strings.Contains(err.Error(), tc.msg) || !strings.Contains(err.Error(), "m (months)") {
			t.Errorf("ParseSpan(%q): %v, want ErrBadPolicy with %q and the units", tc.in, err, tc.msg)
		}
	}
}

func TestSpanBefore(t *testing.T) {
	at := func(s string) time.Time {
		t.Helper()
		v, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	for _, tc := range []struct{ span, now, want string }{
		{"0", "2027-03-31T10:00:00Z", "2027-03-31T10:00:00Z"},
		{"24h", "2027-03-31T10:00:00Z", "2027-03-30T10:00:00Z"},
		{"90min", "2027-03-31T10:00:00Z", "2027-03-31T08:30:00Z"},
		{"1w1d", "2027-03-31T10:00:00Z", "2027-03-23T10:00:00Z"},
		// Months go by the calendar, clamped to the month's end.
		{"1m", "2027-03-31T10:00:00Z", "2027-02-28T10:00:00Z"},
		{"1m", "2028-03-31T10:00:00Z", "2028-02-29T10:00:00Z"},
		{"1y1m", "2028-03-31T10:00:00Z", "2027-02-28T10:00:00Z"},
		{"1m", "2027-05-31T00:00:00Z", "2027-04-30T00:00:00Z"},
		{"1m", "2027-03-15T10:00:00Z", "2027-02-15T10:00:00Z"},
		{"3m", "2027-01-15T10:00:00Z", "2026-10-15T10:00:00Z"},
		{"24m", "2027-01-15T10:00:00Z", "2025-01-15T10:00:00Z"},
		{"1y", "2028-02-29T12:00:00Z", "2027-02-28T12:00:00Z"},
		{"13m", "2027-01-31T00:00:00Z", "2025-12-31T00:00:00Z"},
		// Then days, then hours and minutes.
		{"1m1d", "2027-03-31T10:00:00Z", "2027-02-27T10:00:00Z"},
		{"1d1h1min", "2027-01-01T00:00:00Z", "2026-12-30T22:59:00Z"},
		// Any zone in, UTC out: a day is 24 hours.
		{"1d", "2027-03-28T12:00:00+05:30", "2027-03-27T06:30:00Z"},
	} {
		got := MustSpan(tc.span).Before(at(tc.now))
		if !got.Equal(at(tc.want)) || got.Location() != time.UTC {
			t.Errorf("%s before %s = %s, want %s", tc.span, tc.now, got, tc.want)
		}
	}
}

func TestPolicyJSON(t *testing.T) {
	p := Policy{KeepAll: MustSpan("24h"), Hourly: MustSpan("7d"), Daily: MustSpan("30d"), Weekly: MustSpan("26w"), Monthly: MustSpan("24m")}
	b, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	const want = `{"keep_all":"24h","hourly":"7d","daily":"30d","weekly":"26w","monthly":"24m","bookmarks":"0"}`
	if string(b) != want {
		t.Errorf("JSON %s, want %s", b, want)
	}
	back, err := Decode(b)
	if err != nil || back != p {
		t.Errorf("decoded %+v %v, want %+v", back, err, p)
	}
	if got := p.String(); got != "--keep-all 24h --hourly 7d --daily 30d --weekly 26w --monthly 24m" {
		t.Errorf("String %q", got)
	}
	// Missing fields are zero; what decodes must still keep something.
	if back, err := Decode([]byte(`{"daily":"1y6m"}`)); err != nil || back != (Policy{Daily: Span{Years: 1, Months: 6}}) {
		t.Errorf("partial: %+v %v", back, err)
	}
	for _, bad := range []string{`{"daily":"30"}`, `{"daily":30}`, `{"bookmarks":"1y"}`, `{}`, `[`} {
		if _, err := Decode([]byte(bad)); !errors.Is(err, ErrBadPolicy) {
			t.Errorf("Decode(%s): %v, want ErrBadPolicy", bad, err)
		}
	}
	if err := (Policy{Bookmarks: MustSpan("1y")}).Validate(); !errors.Is(err, ErrBadPolicy) || !strings.Contains(err.Error(), "keeps nothing") {
		t.Errorf("Validate of a policy that keeps nothing: %v", err)
	}
}
