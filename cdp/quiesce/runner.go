package quiesce

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Agent quiesces one application or filesystem. Freeze brings it to a state
// a restore can start from and holds it there; Thaw releases it. Thaw is
// called after every Freeze that was attempted, whatever its outcome, so it
// must undo a partial freeze and be harmless after a failed one. Both record
// what they ran in st (exit status, output, files to keep); the runner fills
// in the name, phase, times and status.
type Agent interface {
	Name() string
	Freeze(ctx context.Context, st *Step) error
	Thaw(ctx context.Context, st *Step) error
}

// DefaultTimeout bounds the freezes and the mark of one bookmark, and each
// thaw, when Runner.Timeout is zero.
const DefaultTimeout = 30 * time.Second

// Runner freezes its agents, marks, and thaws them.
type Runner struct {
	Agents []Agent
	// Timeout bounds all freezes plus the mark: a hook still running when it
	// runs out is killed with its process group. Zero means DefaultTimeout.
	Timeout time.Duration
	// ThawTimeout bounds each thaw, which always gets a fresh context (not
	// the caller's, which may be canceled). Zero means Timeout.
	ThawTimeout time.Duration
	// Group, Bookmark, Disks and Skipped are copied into the report.
	Group, Bookmark string
	Disks           []string
	Skipped         []Skip
	// Logf, if set, receives one line per step.
	Logf func(format string, args ...any)
}

// Run freezes every agent in order, calls mark once all are frozen, then
// thaws in reverse order every agent whose freeze was attempted. mark must
// record the bookmark at one journal position, and nothing if it fails.
//
// When a freeze fails, times out or ctx is canceled, mark is not called, the
// attempted agents are thawed and Run returns an error wrapping ErrRefused
// and the cause. A thaw failure is recorded and returned wrapping ErrThaw,
// but the bookmark stands (Report.Consistent says whether there is one).
// The report is complete in every case.
func (r *Runner) Run(ctx context.Context, mark func(context.Context) error) (*Report, error) {
	timeout := r.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	thawTimeout := r.ThawTimeout
	if thawTimeout <= 0 {
		thawTimeout = timeout
	}
	rep := &Report{Group: r.Group, Bookmark: r.Bookmark, Disks: r.Disks, Skipped: r.Skipped, Start: time.Now(), Steps: []Step{}}

	fctx, cancel := context.WithTimeoutCause(ctx, timeout, fmt.Errorf("%w after %v", ErrTimeout, timeout))
	defer cancel()
	attempted := 0
	var refused error
	for _, a := range r.Agents {
		if refused = stopped(ctx, fctx); refused != nil {
			break
		}
		attempted++
		if err := r.step(rep, fctx, ctx, a.Name(), PhaseFreeze, a.Freeze); err != nil {
			refused = fmt.Errorf("freeze %s: %w", a.Name(), err)
			break
		}
	}
	if refused == nil {
		refused = stopped(ctx, fctx)
	}
	frozen := time.Now()
	if refused == nil {
		markStep := func(ctx context.Context, _ *Step) error { return mark(ctx) }
		if err := r.step(rep, fctx, ctx, "hindsight", PhaseMark, markStep); err != nil {
			refused = fmt.Errorf("mark: %w", err)
		} else {
			rep.Consistent = true
		}
	}
	cancel()

	thawStart := time.Now()
	var thawErr error
	for i := attempted - 1; i >= 0; i-- {
		a := r.Agents[i]
		tctx, tcancel := context.WithTimeoutCause(context.WithoutCancel(ctx), thawTimeout,
			fmt.Errorf("%w after %v", ErrTimeout, thawTimeout))
		err := r.step(rep, tctx, nil, a.Name(), PhaseThaw, a.Thaw)
		tcancel()
		if err != nil && thawErr == nil {
			thawErr = fmt.Errorf("%w: %s: %w", ErrThaw, a.Name(), err)
		}
	}
	rep.End = time.Now()
	if attempted > 0 {
		rep.FreezeToThaw = Duration(rep.End.Sub(rep.Start))
	}
	if rep.Consistent {
		rep.Held = Duration(thawStart.Sub(frozen))
	}

	var err error
	if refused != nil {
		err = fmt.Errorf("%w: %w", ErrRefused, refused)
		if thawErr != nil {
			err = errors.Join(err, thawErr)
		}
	} else {
		err = thawErr
	}
	if err != nil {
		rep.Error = err.Error()
	}
	return rep, err
}

// stopped says why the freeze phase must stop, if it must: the caller's
// context ended, or the timeout ran out.
func stopped(parent, fctx context.Context) error {
	if err := parent.Err(); err != nil {
		return err
	}
	if fctx.Err() != nil {
		return context.Cause(fctx)
	}
	return nil
}

// step runs one phase, records it in rep and logs it. parent, if not nil,
// is the caller's context, used to tell a cancellation from a timeout.
func (r *Runner) step(rep *Report, ctx, parent context.Context, agent, phase string, fn func(context.Context, *Step) error) error {
	st := Step{Agent: agent, Phase: phase, Start: time.Now()}
	err := fn(ctx, &st)
	st.End = time.Now()
	st.Duration = Duration(st.End.Sub(st.Start))
	switch {
	case err == nil:
		st.Status = StatusOK
	case parent != nil && parent.Err() != nil:
		st.Status = StatusCanceled
		err = withCause(parent.Err(), err)
	case ctx.Err() != nil:
		st.Status = StatusTimeout
		err = withCause(context.Cause(ctx), err)
	default:
		st.Status = StatusFailed
	}
	if err != nil {
		st.Error = err.Error()
	}
	for name, content := range st.Files {
		if rep.Files == nil {
			rep.Files = map[string]string{}
		}
		rep.Files[name] = content
	}
	rep.Steps = append(rep.Steps, st)
	if r.Logf != nil {
		if err != nil {
			r.Logf("quiesce: %s %s: %s after %v: %v", phase, agent, st.Status, time.Duration(st.Duration).Round(time.Microsecond), err)
		} else {
			r.Logf("quiesce: %s %s: ok in %v", phase, agent, time.Duration(st.Duration).Round(time.Microsecond))
		}
	}
	return err
}

// withCause returns cause, with the agent's own error in parentheses when it
// says more than the cause.
func withCause(cause, err error) error {
	if errors.Is(err, cause) {
		return err
	}
	return fmt.Errorf("%w (%w)", cause, err)
}
