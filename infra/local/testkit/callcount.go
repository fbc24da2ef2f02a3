package testkit

import (
	"context"
	"sort"
	"sync"

	awsmiddleware "github.com/aws/aws-sdk-go-v2/aws/middleware"
	"github.com/aws/smithy-go/middleware"
)

// Middleware IDs, exported so a stack can be inspected or a middleware removed.
const (
	CallMiddlewareID    = "sandgate.callcount.Call"
	AttemptMiddlewareID = "sandgate.callcount.Attempt"
)

// CallKey names one operation of one service, as the SDK names them (for example
// {"DynamoDB", "GetItem"}).
type CallKey struct {
	Service   string
	Operation string
}

// CallCounter counts operation calls and HTTP attempts. A call is one invocation of a
// client method that passed parameter validation; attempts include the SDK's own
// retries, so attempts ≥ calls. The zero value is not usable; call NewCallCounter. Safe for
// concurrent use.
type CallCounter struct {
	mu       sync.Mutex
	calls    map[CallKey]int64
	attempts map[CallKey]int64
}

// New returns an empty CallCounter.
func NewCallCounter() *CallCounter {
	return &CallCounter{calls: map[CallKey]int64{}, attempts: map[CallKey]int64{}}
}

// APIOption installs the counting middleware on one operation's stack. Append it to
// aws.Config.APIOptions (every client built from that config) or to one client's
// Options.APIOptions.
func (c *CallCounter) APIOption(stack *middleware.Stack) error {
	// Initialize runs once per call; appending after the SDK's own initialize
	// middleware puts this behind parameter validation, so a call rejected before it
	// reaches the wire is not counted.
	if err := stack.Initialize.Add(callMiddleware{c}, middleware.After); err != nil {
		return err
	}
	// Behind the retry middleware, Finalize runs once per attempt.
	if _, ok := stack.Finalize.Get("Retry"); ok {
		return stack.Finalize.Insert(attemptMiddleware{c}, "Retry", middleware.After)
	}
	return stack.Finalize.Add(attemptMiddleware{c}, middleware.After)
}

func (c *CallCounter) add(ctx context.Context, m map[CallKey]int64) {
	k := CallKey{Service: awsmiddleware.GetServiceID(ctx), Operation: awsmiddleware.GetOperationName(ctx)}
	c.mu.Lock()
	m[k]++
	c.mu.Unlock()
}

// Calls returns the calls of one operation; an empty operation sums all of service's.
func (c *CallCounter) Calls(service, operation string) int64 {
	return c.sum(c.calls, service, operation)
}

// Attempts returns the HTTP attempts of one operation; an empty operation sums all of
// service's.
func (c *CallCounter) Attempts(service, operation string) int64 {
	return c.sum(c.attempts, service, operation)
}

func (c *CallCounter) sum(m map[CallKey]int64, service, operation string) int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	var n int64
	for k, v := range m {
		if k.Service == service && (operation == "" || k.Operation == operation) {
			n += v
		}
	}
	return n
}

// Count is one row of a Snapshot.
type CallCount struct {
	CallKey
	Calls    int64
	Attempts int64
}

// Snapshot returns every operation seen so far, sorted by service and operation.
func (c *CallCounter) Snapshot() []CallCount {
	c.mu.Lock()
	defer c.mu.Unlock()
	rows := make([]CallCount, 0, len(c.calls))
	for k, v := range c.calls {
		rows = append(rows, CallCount{CallKey: k, Calls: v, Attempts: c.attempts[k]})
	}
	for k, v := range c.attempts {
		if _, ok := c.calls[k]; !ok {
			rows = append(rows, CallCount{CallKey: k, Attempts: v})
		}
	}
	sort.Slice(rows, func(i, j int) bool {
		if rows[i].Service != rows[j].Service {
			return rows[i].Service < rows[j].Service
		}
		return rows[i].Operation < rows[j].Operation
	})
	return rows
}

// Reset sets every count to zero, for example after a benchmark's setup.
func (c *CallCounter) Reset() {
	c.mu.Lock()
	clear(c.calls)
	clear(c.attempts)
	c.mu.Unlock()
}

type callMiddleware struct{ c *CallCounter }

func (callMiddleware) ID() string { return CallMiddlewareID }

func (m callMiddleware) HandleInitialize(ctx context.Context, in middleware.InitializeInput, next middleware.InitializeHandler) (middleware.InitializeOutput, middleware.Metadata, error) {
	m.c.add(ctx, m.c.calls)
	return next.HandleInitialize(ctx, in)
}

type attemptMiddleware struct{ c *CallCounter }

func (attemptMiddleware) ID() string { return AttemptMiddlewareID }

func (m attemptMiddleware) HandleFinalize(ctx context.Context, in middleware.FinalizeInput, next middleware.FinalizeHandler) (middleware.FinalizeOutput, middleware.Metadata, error) {
	m.c.add(ctx, m.c.attempts)
	return next.HandleFinalize(ctx, in)
}
