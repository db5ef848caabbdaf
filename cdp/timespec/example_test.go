package timespec_test

import (
	"errors"
	"fmt"
	"time"

	"github.com/hindsight-cdp/hindsight/cdp/timespec"
)

func ExampleParse() {
	now := time.Date(2026, 11, 25, 10, 15, 30, 0, time.UTC)
	for _, s := range []string{
		"20261125T101530.5Z",
		"2026-11-25T11:15:30+01:00",
		"@1764065730.25",
		"-1d12h",
		"now",
	} {
		t, err := timespec.Parse(s, now)
		fmt.Println(t.Format(time.RFC3339Nano), err, timespec.IsRelative(s))
	}
	_, err := timespec.Parse("+15m", now)
	fmt.Println(errors.Is(err, timespec.ErrBadTime))
	// Output:
	// 2026-11-25T10:15:30.5Z <nil> false
	// 2026-11-25T10:15:30Z <nil> false
	// 2025-11-25T10:15:30.25Z <nil> false
	// 2026-11-23T22:15:30Z <nil> true
	// 2026-11-25T10:15:30Z <nil> true
	// true
}

func ExampleFormat() {
	fmt.Println(timespec.Format(time.Date(2026, 11, 25, 10, 15, 30, 0, time.UTC)))
	fmt.Println(timespec.Format(time.Date(2026, 11, 25, 10, 15, 30, 500_000_000, time.UTC)))
	fmt.Println(timespec.Format(time.Date(2026, 11, 25, 11, 15, 30, 123_456_789, time.FixedZone("CET", 3600))))
	// Output:
	// 20261125T101530Z
	// 20261125T101530.5Z
	// 20261125T101530.123456789Z
}
