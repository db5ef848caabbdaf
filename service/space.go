package service

import (
	"context"
	"time"
)

// The store refuses writes once its filesystem is down to its reserve
// (store.Options.MinFree); the service warns well before, once each time
// the free space crosses a level, not per write: below twice the reserve
// ("low"), at the reserve ("full": the newest write was refused), and back.

// spaceCheckEvery is how often an idle service looks at the free space;
// while there are writes it also looks after each publish.
const spaceCheckEvery = 2 * time.Second

// Levels of free space.
const (
	spaceOK = iota
	spaceLow
	spaceFull
)

// spaceLoop checks the free space every spaceCheckEvery until ctx ends.
func (s *Service) spaceLoop(ctx context.Context) {
	t := time.NewTicker(spaceCheckEvery)
	defer t.Stop()
	for {
		s.checkSpace()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// checkSpace logs a change of the free space's level.
func (s *Service) checkSpace() {
	free, total, low := s.r.Space()
	if total == 0 {
		return // unreadable: nothing to say
	}
	reserve := s.r.MinFree()
	_, refusing := s.r.Refused()
	level := spaceOK
	switch {
	case refusing:
		level = spaceFull
	case low:
		level = spaceLow
	}
	s.spaceMu.Lock()
	prev := s.spaceLevel
	s.spaceLevel = level
	s.spaceMu.Unlock()
	if level == prev {
		return
	}
	attrs := []any{"repo", s.r.Dir(), "free_bytes", free, "size_bytes", total, "min_free_bytes", reserve}
	switch level {
	case spaceFull:
		s.log.Error("the repository's filesystem is full: new writes are refused (ENOSPC) to keep the journal whole; prune and gc old history, or add space", attrs...)
	case spaceLow:
		s.log.Warn("the repository's filesystem is low on space: writes will be refused below min_free_bytes; prune and gc old history, or add space", attrs...)
	default:
		if prev != spaceOK {
			s.log.Info("the repository's filesystem has space again", attrs...)
		}
	}
}
