package callcount

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

// Key names one operation of one service, as the SDK names them (for example
// {"DynamoDB", "GetItem"}).
type Key struct {
	Service   string
	Operation string
}

// Counter counts operation calls and HTTP attempts. A call is one invocation of a
// client method that passed parameter validation; attempts include the SDK's own
// retries, so attempts ≥ calls. The zero value is not usable; call New. Safe for
// concurrent use.
type Counter struct {
	mu       sync.Mutex
	calls    map[Key]int64
	attempts map[Key]int64
}

// New returns an empty Counter.
func New() *Counter {
	return &Counter{calls: map[Key]int64{}, attempts: map[Key]int64{}}
}

// APIOption installs the counting middleware on one operation's stack. Append it to
// aws.Config.APIOptions (every client built from that config) or to one client's
// Options.APIOptions.
func (c *Counter) APIOption(stack *middleware.Stack) error {
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

func (c *Counter) add(ctx context.Context, m map[Key]int64) {
	k := Key{Service: awsmiddleware.GetServiceID(ctx), Operation: awsmiddleware.GetOperationName(ctx)}
	c.mu.Lock()
	m[k]++
	c.mu.Unlock()
}

// Calls returns the calls of one operation; an empty operation sums all of service's.
func (c *Counter) Calls(service, operation string) int64 { return c.sum(c.calls, service, operation) }

// Attempts returns the HTTP attempts of one operation; an empty operation sums all of
// service's.
func (c *Counter) Attempts(service, operation string) int64 {
	return c.sum(c.attempts, service, operation)
}

func (c *Counter) sum(m map[Key]int64, service, operation string) int64 {
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
type Count struct {
	Key
	Calls    int64
	Attempts int64
}

// Snapshot returns every operation seen so far, sorted by service and operation.
func (c *Counter) Snapshot() []Count {
	c.mu.Lock()
	defer c.mu.Unlock()
	rows := make([]Count, 0, len(c.calls))
	for k, v := range c.calls {
		rows = append(rows, Count{Key: k, Calls: v, Attempts: c.attempts[k]})
	}
	for k, v := range c.attempts {
		if _, ok := c.calls[k]; !ok {
			rows = append(rows, Count{Key: k, Attempts: v})
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
func (c *Counter) Reset() {
	c.mu.Lock()
	clear(c.calls)
	clear(c.attempts)
	c.mu.Unlock()
}

type callMiddleware struct{ c *Counter }

func (callMiddleware) ID() string { return CallMiddlewareID }

func (m callMiddleware) HandleInitialize(ctx context.Context, in middleware.InitializeInput, next middleware.InitializeHandler) (middleware.InitializeOutput, middleware.Metadata, error) {
	m.c.add(ctx, m.c.calls)
	return next.HandleInitialize(ctx, in)
}

type attemptMiddleware struct{ c *Counter }

func (attemptMiddleware) ID() string { return AttemptMiddlewareID }

func (m attemptMiddleware) HandleFinalize(ctx context.Context, in middleware.FinalizeInput, next middleware.FinalizeHandler) (middleware.FinalizeOutput, middleware.Metadata, error) {
	m.c.add(ctx, m.c.attempts)
	return next.HandleFinalize(ctx, in)
}
