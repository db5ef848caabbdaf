package fuseuring

import (
	"bytes"
	"fmt"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// Scheduling of queue threads.
//
// A synchronous client (pwrite, then wait for the reply) is woken by the
// queue thread's reply while that thread still runs on the client's CPU;
// the kernel then moves the client to an idle CPU, and every request after
// pays a cross-CPU wakeup (an IPI, very costly in a VM). A CPU that runs
// only SCHED_IDLE threads counts as idle for that choice, so queue threads
// run at SCHED_IDLE and the client stays where it is.
//
// SCHED_IDLE threads get almost no CPU while a normal thread wants the same
// CPU, so the guard watches each queue thread's run-queue delay
// (/proc/self/task/TID/schedstat) and gives a thread that waits for the CPU
// its normal priority back for a while.
const (
	schedOther = 0
	schedIdle  = 5

	guardTickBusy = 5 * time.Millisecond   // while requests flow
	guardTickIdle = 100 * time.Millisecond // while none do
	boostShare    = 4                      // boost when delayed for 1/boostShare of a tick
	boostHold     = 500 * time.Millisecond
)

// guard is the scheduling state of one queue thread, owned by the guard
// goroutine.
type guard struct {
	q       *queue
	stat    int // /proc/self/task/TID/schedstat
	delay   uint64
	served  uint64
	boosted bool
	until   time.Time
}

func setPolicy(tid int, policy uint32) error {
	return unix.SchedSetAttr(tid, &unix.SchedAttr{Policy: policy}, 0)
}

// guardQueues runs until stop is closed, boosting starved queue threads.
func (s *Server) guardQueues(stop <-chan struct{}) {
	var gs []*guard
	for _, q := range s.queues {
		if q.tid == 0 {
			continue
		}
		fd, err := unix.Open(fmt.Sprintf("/proc/self/task/%d/schedstat", q.tid), unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			s.logf("fuseuring: queue %d stays at normal priority: %v", q.qid, err)
			_ = setPolicy(q.tid, schedOther)
			continue
		}
		g := &guard{q: q, stat: fd}
		g.delay, _ = g.runDelay()
		gs = append(gs, g)
	}
	defer func() {
		for _, g := range gs {
			unix.Close(g.stat)
		}
	}()
	tick := guardTickIdle
	last := time.Now()
	for {
		select {
		case <-stop:
			return
		case <-time.After(tick):
		}
		now := time.Now()
		elapsed := now.Sub(last)
		last = now
		busy := false
		for _, g := range gs {
			if g.check(now, elapsed) {
				busy = true
			}
		}
		tick = guardTickIdle
		if busy {
			tick = guardTickBusy
			continue
		}
		// Idle, nothing boosted: sleep until a request comes, so that an
		// idle mount costs no CPU at all.
		if !s.park(gs, stop) {
			return
		}
		last = time.Now()
		for _, g := range gs {
			g.delay, _ = g.runDelay()
			g.served = g.q.served.Load()
		}
	}
}

// park waits until a queue serves a request (true) or stop closes (false).
func (s *Server) park(gs []*guard, stop <-chan struct{}) bool {
	s.guardParked.Store(true)
	// A request served between the last check and the flag was not told
	// to wake us: look once more.
	for _, g := range gs {
		if g.q.served.Load() != g.served {
			s.guardParked.Store(false)
			return true
		}
	}
	select {
	case <-stop:
		return false
	case <-s.guardWake:
		return true
	}
}

// wakeGuard wakes a parked guard; called by a queue thread for each request.
func (s *Server) wakeGuard() {
	if s.guardParked.Load() && s.guardParked.CompareAndSwap(true, false) {
		s.guardWakes.Add(1)
		select {
		case s.guardWake <- struct{}{}:
		default:
		}
	}
}

// check looks at one queue thread after elapsed and reports whether it is
// busy (served requests, or boosted).
func (g *guard) check(now time.Time, elapsed time.Duration) bool {
	delay, err := g.runDelay()
	if err != nil {
		return false // the thread is gone
	}
	d := time.Duration(delay - g.delay)
	g.delay = delay
	served := g.q.served.Load()
	busy := served != g.served
	g.served = served
	if d*boostShare >= elapsed {
		if !g.boosted {
			if setPolicy(g.q.tid, schedOther) == nil {
				g.boosted = true
			}
		}
		g.until = now.Add(boostHold)
	} else if g.boosted && now.After(g.until) {
		if setPolicy(g.q.tid, schedIdle) == nil {
			g.boosted = false
		}
	}
	return busy || g.boosted
}

// runDelay is the time the thread has spent waiting on a run queue, the
// second field of schedstat, in nanoseconds.
func (g *guard) runDelay() (uint64, error) {
	var buf [96]byte
	n, err := unix.Pread(g.stat, buf[:], 0)
	if err != nil {
		return 0, err
	}
	f := bytes.Fields(buf[:n])
	if len(f) < 2 {
		return 0, fmt.Errorf("schedstat: %q", buf[:n])
	}
	return strconv.ParseUint(string(f[1]), 10, 64)
}
