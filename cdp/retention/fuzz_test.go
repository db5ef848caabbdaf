package retention

import (
	"testing"
	"time"
)

// FuzzParseSpan: whatever parses writes itself back as a string that
// parses to the same span, and measures back, never forward.
func FuzzParseSpan(f *testing.F) {
	for _, s := range []string{"0", "24h", "90min", "7d", "26w", "24m", "2y", "1y6m", "1d12h", "24", "-1d", "1d1d", "1000000y", "5x", "1m30min"} {
		f.Add(s)
	}
	now := time.Date(2027, 3, 31, 10, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, s string) {
		sp, err := ParseSpan(s)
		if err != nil {
			return
		}
		back, err := ParseSpan(sp.String())
		if err != nil || back != sp {
			t.Fatalf("%q parses to %+v, whose string %q parses to %+v %v", s, sp, sp.String(), back, err)
		}
		b := sp.Before(now)
		if b.After(now) || (sp.IsZero() != b.Equal(now)) {
			t.Fatalf("%q before %s is %s", s, now, b)
		}
	})
}
