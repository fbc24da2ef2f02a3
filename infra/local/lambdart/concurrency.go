package lambdart

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
)

// ErrThrottled: Lambda refused the invocation for concurrency: the function's reserved
// concurrency is in use (0 throttles every invocation until it is raised or removed),
// or the account's unreserved concurrency is (account.go; a *ThrottleError says which)
// (https://docs.aws.amazon.com/lambda/latest/dg/configuration-concurrency.html).
var ErrThrottled = errors.New("rate exceeded")

// SetReservedConcurrency sets function's reserved concurrency, as PutFunctionConcurrency
// does; nil removes it, as DeleteFunctionConcurrency does. The runtime enforces it: an
// invocation that starts with n already in flight is throttled (ErrThrottled; 0
// throttles every one), while those running finish; the reservation comes out of the
// account's concurrency (ErrReservation when it would leave less than the unreserved
// minimum). The function's processes stay bounded by its MaxConcurrency.
func (r *Runtime) SetReservedConcurrency(function string, n *int) error {
	if n != nil && *n < 0 {
		return fmt.Errorf("reserved concurrency of %s: %d is negative", function, *n)
	}
	if n != nil {
		if err := r.checkReservation(function, *n); err != nil {
			return fmt.Errorf("reserved concurrency of %s: %w", function, err)
		}
	}
	p, err := r.pool(function)
	if err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if n == nil {
		p.reserved = nil
	} else {
		v := *n
		p.reserved = &v
	}
	return nil
}

// ReservedConcurrency returns function's reserved concurrency, nil when none is set.
func (r *Runtime) ReservedConcurrency(function string) (*int, error) {
	p, err := r.pool(function)
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.reserved == nil {
		return nil, nil
	}
	v := *p.reserved
	return &v, nil
}

// concurrencyBody is the body of PutFunctionConcurrency and of the answers of the
// concurrency operations.
type concurrencyBody struct {
	ReservedConcurrentExecutions *int `json:",omitempty"`
}

// serveConcurrency answers PutFunctionConcurrency (PUT /2017-10-31/…/concurrency),
// DeleteFunctionConcurrency (DELETE, the same path) and GetFunctionConcurrency (GET
// /2019-09-30/…/concurrency), each authorised as the action of its name.
func (r *Runtime) serveConcurrency(w http.ResponseWriter, req *http.Request) {
	name := functionName(req.PathValue("name"))
	body, err := io.ReadAll(io.LimitReader(req.Body, 1<<16))
	if err != nil {
		invokeError(w, http.StatusBadRequest, "InvalidRequestContentException", err.Error())
		return
	}
	if !r.authorizeInvoke(w, req, body) {
		return
	}
	var set *int
	if req.Method == http.MethodPut {
		var in concurrencyBody
		if err := json.Unmarshal(body, &in); err != nil || in.ReservedConcurrentExecutions == nil {
			invokeError(w, http.StatusBadRequest, "InvalidParameterValueException", "ReservedConcurrentExecutions is required")
			return
		}
		if *in.ReservedConcurrentExecutions < 0 {
			invokeError(w, http.StatusBadRequest, "InvalidParameterValueException", "ReservedConcurrentExecutions must not be negative")
			return
		}
		set = in.ReservedConcurrentExecutions
	}
	var out *int
	switch req.Method {
	case http.MethodPut, http.MethodDelete:
		err = r.SetReservedConcurrency(name, set)
		out = set
	default:
		out, err = r.ReservedConcurrency(name)
	}
	switch {
	case errors.Is(err, ErrClosed):
		invokeError(w, http.StatusServiceUnavailable, "ServiceException", "runtime closed")
		return
	case errors.Is(err, ErrReservation):
		invokeError(w, http.StatusBadRequest, "InvalidParameterValueException", err.Error())
		return
	case err != nil:
		invokeError(w, http.StatusNotFound, "ResourceNotFoundException", "Function not found: "+r.arn(name))
		return
	}
	if req.Method == http.MethodDelete {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	b, _ := json.Marshal(concurrencyBody{ReservedConcurrentExecutions: out})
	_, _ = w.Write(b)
}

// throttledError writes Lambda's answer to a throttled invocation (err says why).
func throttledError(w http.ResponseWriter, err error) {
	reason := ReasonReserved
	var te *ThrottleError
	if errors.As(err, &te) {
		reason = te.Reason
	}
	w.Header().Set("X-Amzn-Errortype", "TooManyRequestsException")
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusTooManyRequests)
	b, _ := json.Marshal(map[string]string{"Reason": reason, "Type": "User", "message": "Rate Exceeded."})
	_, _ = w.Write(b)
}
