package lambdart

import (
	"errors"
	"fmt"
	"time"
)

// Lambda's concurrency quota, as AWS sets it for an account and region
// (https://docs.aws.amazon.com/lambda/latest/dg/lambda-concurrency.html).
const (
	// DefaultAccountConcurrency is Lambda's default concurrent-executions quota.
	DefaultAccountConcurrency = 1000
	// DefaultUnreservedMinimum is what Lambda keeps unreserved for the functions
	// without reserved concurrency: reservations may not go below it.
	DefaultUnreservedMinimum = 100
)

// Reasons Lambda gives in a TooManyRequestsException.
const (
	// ReasonReserved: the function's reserved concurrency is in use (or is 0).
	ReasonReserved = "ReservedFunctionConcurrentInvocationLimitExceeded"
	// ReasonAccount: the account's unreserved concurrency is in use.
	ReasonAccount = "ConcurrentInvocationLimitExceeded"
)

// ThrottleError is an invocation Lambda refused for concurrency (429
// TooManyRequestsException); it matches ErrThrottled.
type ThrottleError struct {
	Function string
	Reason   string
	// InFlight and Limit are what the decision saw.
	InFlight, Limit int
}

func (e *ThrottleError) Error() string {
	return fmt.Sprintf("invoke %s: rate exceeded (%s: %d of %d in flight)", e.Function, e.Reason, e.InFlight, e.Limit)
}

// Is matches ErrThrottled.
func (e *ThrottleError) Is(target error) bool { return target == ErrThrottled }

// ErrReservation: a reserved concurrency that would leave the account less unreserved
// concurrency than its minimum (Lambda's InvalidParameterValueException).
var ErrReservation = errors.New("reserved concurrency would leave too little unreserved")

// Stats are one function's invocations as the concurrency emulation counted them.
type Stats struct {
	// Invocations counts invocations admitted; Throttles those refused.
	Invocations, Throttles int64
	// InFlight is the invocations running or waiting for a process now, Peak the most
	// at once: what Lambda counts as concurrent executions.
	InFlight, Peak int
	// Busy is the time invocations were in flight, summed (execution-seconds).
	Busy time.Duration
}

// admit counts one invocation of p against its reserved concurrency, or against the
// account's unreserved concurrency, and returns its release; over the limit it returns
// a *ThrottleError and counts nothing but the throttle. Invocations waiting for one of
// the function's processes count too: in Lambda they would be running.
func (p *pool) admit() (func(), error) {
	r := p.rt
	r.concMu.Lock()
	defer r.concMu.Unlock()
	p.mu.Lock()
	reserved := p.reserved
	p.mu.Unlock()
	st := r.stats[p.fn.Name]
	switch {
	case reserved != nil:
		if st.InFlight >= *reserved {
			st.Throttles++
			return nil, &ThrottleError{Function: p.fn.Name, Reason: ReasonReserved, InFlight: st.InFlight, Limit: *reserved}
		}
	case r.AccountConcurrency > 0:
		limit := r.AccountConcurrency - r.reservedLocked()
		if r.unreserved >= limit {
			st.Throttles++
			return nil, &ThrottleError{Function: p.fn.Name, Reason: ReasonAccount, InFlight: r.unreserved, Limit: limit}
		}
		r.unreserved++
	}
	st.Invocations++
	st.InFlight++
	st.Peak = max(st.Peak, st.InFlight)
	start := time.Now()
	counted := reserved == nil && r.AccountConcurrency > 0
	return func() {
		r.concMu.Lock()
		defer r.concMu.Unlock()
		st.InFlight--
		st.Busy += time.Since(start)
		if counted {
			r.unreserved--
		}
	}, nil
}

// reservedLocked sums the functions' reserved concurrency; the caller holds concMu.
func (r *Runtime) reservedLocked() int {
	r.mu.Lock()
	pools := make([]*pool, 0, len(r.pools))
	for _, p := range r.pools {
		pools = append(pools, p)
	}
	r.mu.Unlock()
	sum := 0
	for _, p := range pools {
		p.mu.Lock()
		if p.reserved != nil {
			sum += *p.reserved
		}
		p.mu.Unlock()
	}
	return sum
}

// checkReservation refuses a reservation of n for function that would leave the
// account less unreserved concurrency than UnreservedMinimum, as Lambda does.
func (r *Runtime) checkReservation(function string, n int) error {
	if r.AccountConcurrency <= 0 {
		return nil
	}
	r.concMu.Lock()
	defer r.concMu.Unlock()
	others := r.reservedLocked()
	if p, err := r.pool(function); err == nil {
		p.mu.Lock()
		if p.reserved != nil {
			others -= *p.reserved
		}
		p.mu.Unlock()
	}
	min := r.UnreservedMinimum
	if min <= 0 {
		min = DefaultUnreservedMinimum
	}
	if r.AccountConcurrency-others-n < min {
		return fmt.Errorf("%w: Specified ReservedConcurrentExecutions for function decreases account's UnreservedConcurrentExecution below its minimum value of [%d].", ErrReservation, min)
	}
	return nil
}

// Stats returns function's concurrency statistics.
func (r *Runtime) Stats(function string) (Stats, error) {
	if _, err := r.pool(function); err != nil {
		return Stats{}, err
	}
	r.concMu.Lock()
	defer r.concMu.Unlock()
	return *r.stats[function], nil
}

// ResetStats starts every function's statistics afresh (InFlight stays).
func (r *Runtime) ResetStats() {
	r.concMu.Lock()
	defer r.concMu.Unlock()
	for _, st := range r.stats {
		*st = Stats{InFlight: st.InFlight, Peak: st.InFlight}
	}
}
