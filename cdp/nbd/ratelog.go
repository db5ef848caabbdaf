package nbd

import (
	"fmt"
	"sync"
	"time"
)

// refusalLogInterval is the least time between two log lines of one kind
// of refusal: a flood of refused connections must not flood the log or
// slow the accept loop.
const refusalLogInterval = time.Second

// rateLog writes at most one line per reason per interval, and says on
// the next line written for that reason how many were suppressed since.
type rateLog struct {
	logf     func(format string, args ...any)
	interval time.Duration
	now      func() time.Time

	mu      sync.Mutex
	reasons map[string]*reasonLog
}

type reasonLog struct {
	last       time.Time
	suppressed int
}

func newRateLog(logf func(string, ...any), interval time.Duration) *rateLog {
	return &rateLog{logf: logf, interval: interval, now: time.Now, reasons: map[string]*reasonLog{}}
}

// log logs format under reason unless a line of that reason was logged
// less than the interval ago.
func (r *rateLog) log(reason, format string, args ...any) {
	r.mu.Lock()
	rl := r.reasons[reason]
	if rl == nil {
		rl = &reasonLog{}
		r.reasons[reason] = rl
	}
	now := r.now()
	if !rl.last.IsZero() && now.Sub(rl.last) < r.interval {
		rl.suppressed++
		r.mu.Unlock()
		return
	}
	n := rl.suppressed
	rl.last, rl.suppressed = now, 0
	r.mu.Unlock()
	msg := fmt.Sprintf(format, args...)
	if n > 0 {
		msg = fmt.Sprintf("%s (and %d more %q since the last such line)", msg, n, reason)
	}
	r.logf("%s", msg)
}
