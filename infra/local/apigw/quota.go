package apigw

import (
	"sync"
	"time"
)

// DefaultNewConnectionRate is API Gateway's quota of new WebSocket connections per
// second per account and region, across all WebSocket APIs
// (https://docs.aws.amazon.com/apigateway/latest/developerguide/apigateway-execution-service-websocket-limits-table.html),
// enforced before any authorizer runs.
const DefaultNewConnectionRate = 500

// connectQuota is a token bucket of new connections: Rate a second, Burst at once.
type connectQuota struct {
	mu        sync.Mutex
	tokens    float64
	at        time.Time
	throttled int64
}

// allow takes one token at now, or counts a throttle.
func (q *connectQuota) allow(rate float64, burst int, now time.Time) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.at.IsZero() {
		q.tokens, q.at = float64(burst), now
	}
	if el := now.Sub(q.at).Seconds(); el > 0 {
		q.tokens = min(float64(burst), q.tokens+el*rate)
		q.at = now
	}
	if q.tokens < 1 {
		q.throttled++
		return false
	}
	q.tokens--
	return true
}

// admitConnection applies the account's new-connection quota to a handshake.
func (s *Server) admitConnection() bool {
	if s.NewConnectionRate <= 0 {
		return true
	}
	burst := s.NewConnectionBurst
	if burst <= 0 {
		burst = max(1, int(s.NewConnectionRate))
	}
	return s.quota.allow(s.NewConnectionRate, burst, time.Now())
}

// ConnectionsThrottled counts the handshakes refused for the new-connection quota.
func (s *Server) ConnectionsThrottled() int64 {
	s.quota.mu.Lock()
	defer s.quota.mu.Unlock()
	return s.quota.throttled
}
