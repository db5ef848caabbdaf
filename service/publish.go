package service

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// publishLoop syncs and publishes the journal SyncInterval after the first
// write since the last time, until ctx ends. An idle service sleeps: the
// devices wake it (Service.wake).
func (s *Service) publishLoop(ctx context.Context) error {
	t := time.NewTimer(0)
	<-t.C
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-s.dirty:
		}
		t.Reset(s.opt.SyncInterval)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		if err := s.publish(true); err != nil {
			// The front ends' own flushes report it to their writers; the
			// loop tries again after the next write.
			s.log.Error("journal sync failed", "err", err)
		}
		s.checkSpace()
	}
}

// publish syncs the journal, publishes it to readers in other processes,
// and records what is durable on every device; it writes each device's
// status for `hindsight status` (running says whether it still serves).
func (s *Service) publish(running bool) error {
	s.pubMu.Lock()
	defer s.pubMu.Unlock()
	devs := s.devices()
	lasts := make([]int64, len(devs))
	for i, d := range devs {
		lasts[i] = d.LastWriteNano()
	}
	head := s.r.Head()
	if err := s.r.Sync(); err != nil {
		return fmt.Errorf("sync the journal: %w", err)
	}
	if err := s.r.Publish(); err != nil {
		return fmt.Errorf("publish the journal: %w", err)
	}
	now := time.Now()
	for i, d := range devs {
		d.Published(head, lasts[i])
		name := d.Disk().Name
		prev, ok := s.statusPrev[name]
		if !ok {
			prev = statusSample{at: now}
		}
		st, at := d.WriteStatus(prev.stats, prev.at, running)
		s.statusPrev[name] = statusSample{stats: st, at: at}
	}
	s.sampleRates(now)
	return nil
}

// sampleRates records each protection's counters for writes_per_sec.
func (s *Service) sampleRates(now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range s.prots {
		if p == nil {
			continue
		}
		for _, d := range p.devs {
			if r := p.rates[d.Disk().Name]; r != nil {
				st := d.Stats()
				r.sample(now, st.Writes, st.BytesWritten)
			}
		}
	}
}

// rateWindow is how far back writes_per_sec looks.
const rateWindow = 10 * time.Second

// rate keeps recent samples of a device's counters.
type rate struct {
	mu      sync.Mutex
	samples []rateSample
}

type rateSample struct {
	at            time.Time
	writes, bytes uint64
}

func (r *rate) sample(at time.Time, writes, bytes uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.samples = append(r.samples, rateSample{at, writes, bytes})
	// Keep one sample older than the window: the start of the span.
	for len(r.samples) > 2 && at.Sub(r.samples[1].at) >= rateWindow {
		r.samples = r.samples[1:]
	}
}

// perSec is the average rate from the newest sample at least rateWindow
// old (or the oldest sample) to now, with the current counters: the
// recent rate while writes go on, decaying to zero once they stop.
func (r *rate) perSec(now time.Time, writes, bytes uint64) (float64, float64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.samples) == 0 {
		return 0, 0
	}
	base := r.samples[0]
	for _, s := range r.samples[1:] {
		if now.Sub(s.at) < rateWindow {
			break
		}
		base = s
	}
	dt := now.Sub(base.at).Seconds()
	if dt <= 0 {
		return 0, 0
	}
	return float64(writes-base.writes) / dt, float64(bytes-base.bytes) / dt
}
