package service

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/hindsight-cdp/hindsight/cdp/retention"
	"github.com/hindsight-cdp/hindsight/store"
)

// PruneRequest prunes one disk or group by its policy, or all of them.
type PruneRequest struct {
	Target string `json:"target,omitempty"` // a disk or a group
	All    bool   `json:"all,omitempty"`    // every timeline that has a policy
	// Now evaluates the policies as of this instant (zero: now).
	Now    time.Time `json:"now,omitzero"`
	DryRun bool      `json:"dry_run,omitempty"`
}

// GCRequest asks for a garbage collection (store.GCOptions).
type GCRequest struct {
	MaxUnused float64 `json:"max_unused,omitempty"` // 0: the store's default
	DryRun    bool    `json:"dry_run,omitempty"`
}

func (req PruneRequest) check() error {
	if (req.Target == "") == !req.All {
		return fmt.Errorf("%w: a prune names a disk or group, or all of them (all), not both", ErrBadRequest)
	}
	return nil
}

func (req GCRequest) check() error {
	if req.MaxUnused < 0 || req.MaxUnused >= 1 {
		return fmt.Errorf("%w: max_unused %g is not a fraction in [0, 1)", ErrBadRequest, req.MaxUnused)
	}
	return nil
}

// SetPolicy records target's retention policy; nil removes it.
func (l Local) SetPolicy(ctx context.Context, target string, pol *retention.Policy) (retention.Entry, error) {
	t, err := retention.Resolve(l.R, target)
	if err != nil {
		return retention.Entry{}, err
	}
	if pol == nil {
		old, err := retention.PolicyOf(l.R, t)
		if err != nil {
			return retention.Entry{}, err
		}
		return retention.Entry{Target: t, Policy: old}, l.R.SetPolicy(t.Timeline, nil)
	}
	if err := pol.Validate(); err != nil {
		return retention.Entry{}, err
	}
	b, err := json.Marshal(pol)
	if err != nil {
		return retention.Entry{}, err
	}
	return retention.Entry{Target: t, Policy: *pol}, l.R.SetPolicy(t.Timeline, b)
}

// Prune prunes by the recorded policies.
func (l Local) Prune(ctx context.Context, req PruneRequest) ([]retention.Report, error) {
	if err := req.check(); err != nil {
		return nil, err
	}
	now := req.Now
	if now.IsZero() {
		now = time.Now()
	}
	if req.All {
		return retention.RunAll(ctx, l.R, now, req.DryRun)
	}
	rep, err := retention.Run(ctx, l.R, req.Target, now, req.DryRun)
	if err != nil {
		return nil, err
	}
	return []retention.Report{rep}, nil
}

// Collect frees the content nothing references any more.
func (l Local) Collect(ctx context.Context, req GCRequest, progress func(done, total int64)) (store.GCResult, error) {
	if err := req.check(); err != nil {
		return store.GCResult{}, err
	}
	start := time.Now()
	res, err := l.R.Collect(ctx, store.GCOptions{MaxUnused: req.MaxUnused, DryRun: req.DryRun, Progress: progress})
	if res.Duration == 0 {
		res.Duration = time.Since(start)
	}
	return res, err
}

// prune runs a prune requested of the service: one retention job at a
// time, whether asked or scheduled.
func (s *Service) prune(ctx context.Context, req PruneRequest) ([]retention.Report, error) {
	ctx, cancel := s.job(ctx)
	defer cancel()
	if err := s.retentionSlot(ctx); err != nil {
		return nil, err
	}
	defer func() { <-s.retSlot }()
	s.refreshHolds()
	reps, err := Local{R: s.r}.Prune(ctx, req)
	s.metrics.pruned(reps)
	return reps, err
}

// collect runs a garbage collection requested of the service.
func (s *Service) collect(ctx context.Context, req GCRequest) (store.GCResult, error) {
	ctx, cancel := s.job(ctx)
	defer cancel()
	if err := s.retentionSlot(ctx); err != nil {
		return store.GCResult{}, err
	}
	defer func() { <-s.retSlot }()
	res, err := Local{R: s.r}.Collect(ctx, req, nil)
	if err == nil && !req.DryRun {
		s.metrics.collected(res)
	}
	return res, err
}

// job is the context of a retention job asked over the socket: it ends
// with the request or with the service, whichever ends first. (A request
// outlives the control server's shutdown, which waits 5 s for it; a
// prune may run for minutes, and the repository closes after Run.)
func (s *Service) job(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(s.stopped, cancel)
	return ctx, func() { stop(); cancel() }
}

// errStopping: the service stops; it starts no retention job.
var errStopping = errors.New("service: stopping")

// retentionSlot waits for the one retention job slot, or for ctx.
func (s *Service) retentionSlot(ctx context.Context) error {
	// A job's context ends with the service too (job): a stopped service
	// answers errStopping whichever of the two a select would see first.
	if s.stopped.Err() != nil {
		return errStopping
	}
	select {
	case s.retSlot <- struct{}{}:
		if s.stopped.Err() != nil { // got it before Run took it for good
			<-s.retSlot
			return errStopping
		}
		return nil
	case <-s.stopped.Done():
		return errStopping
	case <-ctx.Done():
		if s.stopped.Err() != nil {
			return errStopping
		}
		return ctx.Err()
	}
}

// retentionLoop applies every policy every PruneEvery until ctx ends.
func (s *Service) retentionLoop(ctx context.Context) {
	t := time.NewTicker(s.opt.PruneEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s.retentionRun(ctx)
	}
}

// retentionRun prunes every timeline that has a policy, then collects
// once. A failure is logged and counted, never fatal: the service goes on
// and the next run tries again.
func (s *Service) retentionRun(ctx context.Context) {
	start := time.Now()
	if err := s.retentionSlot(ctx); err != nil {
		return
	}
	defer func() { <-s.retSlot }()
	ok := true
	s.refreshHolds()
	reps, err := retention.RunAll(ctx, s.r, start, false)
	s.metrics.pruned(reps)
	if err != nil {
		ok = false
		s.log.Error("retention: prune", "err", err)
	}
	for _, rep := range reps {
		if rep.Error != "" {
			ok = false
			s.log.Error("retention: prune failed", "target", rep.Name, "err", rep.Error)
			continue
		}
		s.log.Info("retention: pruned", "target", rep.Name, "policy", rep.Policy.String(), "kept", rep.Kept,
			"removed", len(rep.Removed), "bookmarks_removed", len(rep.DroppedBookmarks), "versions_collapsed", rep.Versions, "freed_bytes", rep.FreedBytes)
	}
	if ctx.Err() == nil {
		res, err := Local{R: s.r}.Collect(ctx, GCRequest{}, nil)
		if err != nil {
			ok = false
			s.log.Error("retention: gc", "err", err)
		} else {
			s.metrics.collected(res)
			s.log.Info("retention: gc", "freed", res.Freed, "freed_bytes", res.FreedBytes, "rewritten", res.Rewritten,
				"reclaimed_bytes", res.Reclaimed, "held", res.Held, "duration", res.Duration)
		}
	}
	if ctx.Err() != nil {
		return // stopping: not a run's outcome
	}
	s.metrics.retentionDone(start, time.Since(start), ok)
}
