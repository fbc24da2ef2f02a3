package s3local

import (
	"encoding/xml"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"sync"
	"time"
)

// maxDrain bounds how much of a failed request's body is read before answering, so
// the client sees the error rather than a reset connection.
const maxDrain = 64 << 20

// Fault is one kind of trouble to inject.
type Fault struct {
	// Method limits the fault to one HTTP method ("PUT", "GET", "POST" for
	// DeleteObjects, ...); empty matches every request.
	Method string
	// Status, when non-zero, answers matching requests with this HTTP status and an S3
	// XML error instead of serving them (500 InternalError, 503 SlowDown, ...).
	Status int
	// Latency delays matching requests before they are served or failed.
	Latency time.Duration
	// Count is how many requests the fault applies to before it expires; zero means
	// every matching request until Clear.
	Count int
	// Fraction, when in (0, 1), applies the fault to that share of matching requests,
	// chosen by a seeded generator so runs repeat; zero means all of them.
	Fraction float64
}

type rule struct {
	Fault
	left int // -1: unlimited
}

// Faults is an http.Handler that injects faults in front of another. Faults are
// checked in the order they were added; the first that applies to a request is used.
type Faults struct {
	next http.Handler
	stop chan struct{} // closed by Stop: delays end at once
	once sync.Once

	mu       sync.Mutex
	rules    []*rule
	rng      *rand.Rand
	requests map[string]int
	injected int
}

// NewFaults wraps next; seed fixes which requests fractional faults hit.
func NewFaults(next http.Handler, seed uint64) *Faults {
	return &Faults{next: next, stop: make(chan struct{}), rng: rand.New(rand.NewPCG(seed, seed)), requests: map[string]int{}}
}

// Stop ends every injected delay now and refuses later requests with 503, so a
// server can shut down without waiting out latencies whose clients are gone.
func (f *Faults) Stop() { f.once.Do(func() { close(f.stop) }) }

// Inject adds a fault.
func (f *Faults) Inject(ft Fault) error {
	switch {
	case ft.Status != 0 && (ft.Status < 400 || ft.Status > 599):
		return fmt.Errorf("inject fault: status %d is not an error status", ft.Status)
	case ft.Fraction < 0 || ft.Fraction > 1:
		return fmt.Errorf("inject fault: fraction %v outside [0, 1]", ft.Fraction)
	case ft.Count < 0 || ft.Latency < 0:
		return fmt.Errorf("inject fault: negative count or latency")
	case ft.Status == 0 && ft.Latency == 0:
		return fmt.Errorf("inject fault: neither a status nor a latency")
	}
	r := &rule{Fault: ft, left: ft.Count}
	if ft.Count == 0 {
		r.left = -1
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rules = append(f.rules, r)
	return nil
}

// Clear removes every fault; counters are kept.
func (f *Faults) Clear() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rules = nil
}

// Requests returns how many requests with method arrived (all of them for "").
func (f *Faults) Requests(method string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	if method != "" {
		return f.requests[method]
	}
	n := 0
	for _, c := range f.requests {
		n += c
	}
	return n
}

// Injected returns how many requests a fault was applied to.
func (f *Faults) Injected() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.injected
}

// pick counts the request and returns the fault to apply to it, if any.
func (f *Faults) pick(r *http.Request) (Fault, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.requests[r.Method]++
	for i, rl := range f.rules {
		if rl.Method != "" && rl.Method != r.Method {
			continue
		}
		if rl.Fraction > 0 && rl.Fraction < 1 && f.rng.Float64() >= rl.Fraction {
			continue
		}
		if rl.left > 0 {
			rl.left--
			if rl.left == 0 {
				f.rules = append(f.rules[:i:i], f.rules[i+1:]...)
			}
		}
		f.injected++
		return rl.Fault, true
	}
	return Fault{}, false
}

// ServeHTTP counts the request, applies the first fault that matches it, and
// otherwise passes it on.
func (f *Faults) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	select {
	case <-f.stop:
		http.Error(w, "shutting down", http.StatusServiceUnavailable)
		return
	default:
	}
	ft, ok := f.pick(r)
	if !ok {
		f.next.ServeHTTP(w, r)
		return
	}
	if ft.Latency > 0 {
		t := time.NewTimer(ft.Latency)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return
		case <-f.stop:
			t.Stop()
			http.Error(w, "shutting down", http.StatusServiceUnavailable)
			return
		}
	}
	if ft.Status == 0 {
		f.next.ServeHTTP(w, r)
		return
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(r.Body, maxDrain))
	code := "InternalError"
	switch ft.Status {
	case http.StatusServiceUnavailable:
		code = "SlowDown"
	case http.StatusForbidden:
		code = "AccessDenied"
	case http.StatusNotFound:
		code = "NoSuchKey"
	}
	w.Header().Set("Content-Type", "application/xml")
	w.WriteHeader(ft.Status)
	_ = xml.NewEncoder(w).Encode(struct {
		XMLName xml.Name `xml:"Error"`
		Code    string
		Message string
	}{Code: code, Message: "injected fault"})
}
