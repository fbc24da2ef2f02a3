package agent

import (
	"sync"
	"time"
)

// limiter is a token bucket: rate frames per second, bursts of twice that. One agent
// serves one user, so one bucket is the per-user limit.
type limiter struct {
	rate, burst float64
	now         func() time.Time

	mu     sync.Mutex
	tokens float64
	last   time.Time
}

func newLimiter(perSecond int, now func() time.Time) *limiter {
	r := float64(perSecond)
	return &limiter{rate: r, burst: 2 * r, tokens: 2 * r, now: now, last: now()}
}

// allow takes one token if there is one.
func (l *limiter) allow() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	if d := now.Sub(l.last); d > 0 {
		l.tokens = min(l.burst, l.tokens+d.Seconds()*l.rate)
		l.last = now
	}
	if l.tokens < 1 {
		return false
	}
	l.tokens--
	return true
}
