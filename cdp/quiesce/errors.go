package quiesce

import "errors"

// Sentinel errors; test for them with errors.Is. A refused bookmark's error
// also wraps its cause: ErrTimeout, context.Canceled or the agent's error.
var (
	// ErrRefused: a freeze or the mark failed, so no bookmark was taken.
	// Every agent that was frozen, or whose freeze was attempted, was thawed.
	ErrRefused = errors.New("quiesce: bookmark refused")
	// ErrTimeout: the freezes and the mark did not finish within the timeout.
	ErrTimeout = errors.New("quiesce: timed out")
	// ErrThaw: at least one thaw failed; the bookmark, if taken, stands,
	// but an application may still be frozen.
	ErrThaw = errors.New("quiesce: thaw failed")
	// ErrNoAgents: the options name nothing to quiesce.
	ErrNoAgents = errors.New("quiesce: no agent to run")
	// ErrOptions: the options are unusable (a missing hooks directory, an
	// unknown agent, an agent without what it needs).
	ErrOptions = errors.New("quiesce: bad options")
)
