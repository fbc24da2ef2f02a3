package testkit

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	"github.com/aws/aws-sdk-go-v2/service/lambda/types"
)

// Invocation is one call an Invoker received.
type Invocation struct {
	Function string
	Type     types.InvocationType
	Payload  []byte
}

// Invoker stands in for the Lambda Invoke API where a test calls handlers in process:
// an Event invocation runs the named Func on its own goroutine, as Lambda runs it in
// another instance, and every call is recorded. The end-to-end tests use the real
// runtime (lambdart) instead.
type Invoker struct {
	Funcs Funcs

	mu    sync.Mutex
	calls []Invocation
	ch    chan Invocation
	wg    sync.WaitGroup
}

// NewInvoker returns an Invoker over fns; the test waits for its invocations to end.
func NewInvoker(tb testing.TB, fns Funcs) *Invoker {
	i := &Invoker{Funcs: fns, ch: make(chan Invocation, 1024)}
	tb.Cleanup(i.Wait)
	return i
}

// Invoke records the call and, for an Event invocation, runs the function.
func (i *Invoker) Invoke(ctx context.Context, in *lambda.InvokeInput, _ ...func(*lambda.Options)) (*lambda.InvokeOutput, error) {
	inv := Invocation{Function: aws.ToString(in.FunctionName), Type: in.InvocationType, Payload: append([]byte(nil), in.Payload...)}
	fn, ok := i.Funcs[inv.Function]
	if !ok {
		return nil, &types.ResourceNotFoundException{Message: aws.String("Function not found: " + inv.Function)}
	}
	if inv.Type != types.InvocationTypeEvent {
		return nil, fmt.Errorf("testkit: only Event invocations are supported, got %q", inv.Type)
	}
	i.mu.Lock()
	i.calls = append(i.calls, inv)
	i.wg.Add(1)
	i.mu.Unlock()
	i.ch <- inv
	go func() {
		defer i.wg.Done()
		_, _ = fn(context.WithoutCancel(ctx), inv.Payload)
	}()
	return &lambda.InvokeOutput{StatusCode: 202}, nil
}

// Calls returns the invocations so far.
func (i *Invoker) Calls() []Invocation {
	i.mu.Lock()
	defer i.mu.Unlock()
	return append([]Invocation(nil), i.calls...)
}

// Wait waits for every running invocation to end.
func (i *Invoker) Wait() { i.wg.Wait() }
