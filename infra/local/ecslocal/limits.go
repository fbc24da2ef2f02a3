package ecslocal

import (
	"sync"
	"time"
)

// Limits are the rates at which ECS and Fargate take RunTask calls and launch tasks,
// each a token bucket per account and region as AWS documents them: a bucket of Burst
// tokens refilled at Rate a second. A call that finds its bucket empty is refused with
// ThrottlingException ("Rate exceeded"), before anything starts.
type Limits struct {
	// RunTaskRate and RunTaskBurst bound RunTask calls (whatever their count).
	RunTaskRate, RunTaskBurst float64
	// TaskRate and TaskBurst bound the tasks launched, each call taking its count.
	TaskRate, TaskBurst float64
}

// FargateLimits are AWS's (Fargate throttling quotas): RunTask 20 calls a second,
// burst and sustained, of up to 10 tasks each; and Fargate launches 100 tasks in a
// burst and 20 a second sustained (On-Demand and Spot alike).
var FargateLimits = Limits{RunTaskRate: 20, RunTaskBurst: 20, TaskRate: 20, TaskBurst: 100}

// bucket is one token bucket; the zero bucket (no rate) refuses nothing.
type bucket struct {
	rate, burst float64
	tokens      float64
	at          time.Time
}

func newBucket(rate, burst float64, now time.Time) *bucket {
	if rate <= 0 || burst <= 0 {
		return nil
	}
	return &bucket{rate: rate, burst: burst, tokens: burst, at: now}
}

// take takes n tokens at now if the bucket holds them; a nil bucket always gives.
func (b *bucket) take(n float64, now time.Time) bool {
	if b == nil {
		return true
	}
	if now.After(b.at) {
		b.tokens = min(b.burst, b.tokens+now.Sub(b.at).Seconds()*b.rate)
		b.at = now
	}
	if b.tokens < n {
		return false
	}
	b.tokens -= n
	return true
}

// limiter holds the Server's two buckets.
type limiter struct {
	mu           sync.Mutex
	calls, tasks *bucket
	throttled    int
}

func newLimiter(l *Limits, now time.Time) *limiter {
	if l == nil {
		return &limiter{}
	}
	return &limiter{calls: newBucket(l.RunTaskRate, l.RunTaskBurst, now), tasks: newBucket(l.TaskRate, l.TaskBurst, now)}
}

// call takes a RunTask call's token.
func (l *limiter) call(now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	ok := l.calls.take(1, now)
	if !ok {
		l.throttled++
	}
	return ok
}

// launch takes n task launches' tokens, all or none.
func (l *limiter) launch(n int, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	ok := l.tasks.take(float64(n), now)
	if !ok {
		l.throttled++
	}
	return ok
}

// Throttled reports how many RunTask calls the Server has refused for its Limits.
func (s *Server) Throttled() int {
	s.mu.Lock()
	l := s.limits
	s.mu.Unlock()
	if l == nil {
		return 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.throttled
}

// throttledError is ECS's answer to a call over its rate.
func throttledError() *APIError { return apiErr(ThrottlingException, "Rate exceeded") }
