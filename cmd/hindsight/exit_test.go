package main

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/hindsight-cdp/hindsight/cdp"
	"github.com/hindsight-cdp/hindsight/cdp/retention"
	"github.com/hindsight-cdp/hindsight/cdp/timespec"
	"github.com/hindsight-cdp/hindsight/store"
)

func TestExitCode(t *testing.T) {
	wrap := func(err error) error { return fmt.Errorf("export web: %w", err) }
	for _, c := range []struct {
		name string
		err  error
		want int
	}{
		{"nil", nil, exitOK},
		{"plain failure", errors.New("disk full"), exitFailure},
		{"usage", usagef("--format %q", "x"), exitUsage},
		{"wrapped usage", wrap(usagef("bad")), exitUsage},
		{"not found", wrap(notFound(cdp.ErrFuture)), exitNotFound},
		{"busy", busy(errors.New("3 of 3 paths exist")), exitBusy},
		// cdp.ErrFuture alone has no class: import says bad input, resolveAt no such instant.
		{"future unclassified", cdp.ErrFuture, exitFailure},
		{"outer code wins", usageErr(notFound(store.ErrNoPoint)), exitUsage},
		{"damage beats a class", notFound(fmt.Errorf("%w: %w", store.ErrNoPoint, store.ErrCorrupt)), exitFailure},
		{"garbled marker", damaged(store.ErrNotRepository), exitFailure},
		{"interrupted", wrap(usageErr(context.Canceled)), exitInterrupted},
		{"sentinel not found", wrap(store.ErrUnknownDisk), exitNotFound},
		{"sentinel busy", wrap(store.ErrLocked), exitBusy},
		{"sentinel usage", wrap(timespec.ErrBadTime), exitUsage},
		{"no policy", wrap(retention.ErrNoPolicy), exitNotFound},
		{"bad policy", wrap(retention.ErrBadPolicy), exitUsage},
	} {
		if got := exitCode(c.err); got != c.want {
			t.Errorf("%s: exitCode(%v) = %d; want %d", c.name, c.err, got, c.want)
		}
	}
}
