package message

import (
	"sync"
	"time"
)

// Defaults of the frame rate limit this function enforces.
const (
	// DefaultRateLimitCloseAfter is how many frames of one connection a process refuses
	// for the rate, without a pause of RateLimitWindow, before it closes the connection.
	DefaultRateLimitCloseAfter = 100
	// RateLimitWindow: a connection that has had no frame refused for this long starts
	// its count afresh; within it, only the first refused frame of each second is
	// answered with an error frame (each answer is a management API post).
	RateLimitWindow = 10 * time.Second
	// maxLimited bounds the per-user and per-connection tables; past it, they start over.
	maxLimited = 10_000
)

// limiter keeps, in one Message process, a token bucket per user and a count of refused
// frames per connection. API Gateway spreads one connection's frames over however many
// processes run, each with its own limiter, so the bound it gives is the rate times the
// processes; the agent's own limit, one bucket per user, stays the exact one, and every
// refusal it answers empties this process's bucket, so a user it refuses stops costing
// an agent call per frame here.
type limiter struct {
	mu      sync.Mutex
	buckets map[string]*bucket
	strikes map[string]*strike
}

type bucket struct {
	tokens float64
	at     time.Time
}

type strike struct {
	refused  int
	last     time.Time // the last refusal
	answered time.Time // the last refusal answered with an error frame
}

// allow takes a token of userID's bucket (rate per second, burst tokens) at now.
func (l *limiter) allow(userID string, rate float64, burst int, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.buckets == nil || len(l.buckets) >= maxLimited {
		l.buckets = map[string]*bucket{}
	}
	b := l.buckets[userID]
	if b == nil {
		b = &bucket{tokens: float64(burst), at: now}
		l.buckets[userID] = b
	}
	if el := now.Sub(b.at).Seconds(); el > 0 {
		b.tokens = min(float64(burst), b.tokens+el*rate)
		b.at = now
	}
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// drain puts userID's bucket a burst into debt: the agent, which holds the user's exact
// bucket, has refused a frame for the rate, so the user's frames arrive faster than the
// rate over all the processes that handle them. The debt keeps this process from calling
// the agent for the user for burst/rate seconds, so a user over the rate costs each
// process about one agent call per pause rather than the whole rate.
func (l *limiter) drain(userID string, burst int, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if b := l.buckets[userID]; b != nil {
		b.tokens, b.at = -float64(burst), now
	}
}

// refused counts a frame of connectionID refused for the rate at now. It reports
// whether the sender should be answered (the first refusal of each second) and whether
// the connection has been refused closeAfter times without a pause of RateLimitWindow
// (then its count starts over).
func (l *limiter) refused(connectionID string, closeAfter int, now time.Time) (answer, closeIt bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.strikes == nil || len(l.strikes) >= maxLimited {
		l.strikes = map[string]*strike{}
	}
	s := l.strikes[connectionID]
	if s == nil || now.Sub(s.last) >= RateLimitWindow {
		s = &strike{}
		l.strikes[connectionID] = s
	}
	s.refused++
	s.last = now
	if closeAfter > 0 && s.refused >= closeAfter {
		delete(l.strikes, connectionID)
		return false, true
	}
	if now.Sub(s.answered) >= time.Second {
		s.answered = now
		return true, false
	}
	return false, false
}
