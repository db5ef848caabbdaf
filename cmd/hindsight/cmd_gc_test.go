package main

import "testing"

func TestParseFraction(t *testing.T) {
	for in, want := range map[string]float64{"10%": 0.1, "0.25": 0.25, "50%": 0.5, "0.5%": 0.005} {
		if got, err := parseFraction(in); err != nil || got != want {
			t.Errorf("parseFraction(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "0", "0%", "100%", "1", "-5%", "ten", "NaN", "%"} {
		if f, err := parseFraction(bad); err == nil {
			t.Errorf("parseFraction(%q) accepted: %v", bad, f)
		}
	}
}
