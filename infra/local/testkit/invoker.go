package testkit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	"github.com/aws/aws-sdk-go-v2/service/lambda/types"

	"github.com/sandgate/sandgate/internal/awsconf"
)

// Invocation is one call an Invoker received.
type Invocation struct {
	Function string
	Type     types.InvocationType
	Payload  []byte
}

// Invoker stands in for the Lambda Invoke API where a test calls handlers in process:
// an Event invocation runs the named Func on its own goroutine, as Lambda runs it in
// another instance; a RequestResponse one runs it and answers with its response, or
// with Lambda's answer to a failed function; every call is recorded. Client serves the
// same over HTTP, for tests of the wire. The end-to-end tests use the real runtime
// (lambdart) instead.
type Invoker struct {
	Funcs Funcs

	mu    sync.Mutex
	calls []Invocation
	wg    sync.WaitGroup
}

// NewInvoker returns an Invoker over fns; the test waits for its invocations to end.
func NewInvoker(tb testing.TB, fns Funcs) *Invoker {
	i := &Invoker{Funcs: fns}
	tb.Cleanup(i.Wait)
	return i
}

// Invoke records the call and runs the function: an Event invocation in the
// background (202); a RequestResponse one (the default) before it answers (200), with
// the function's response as the payload or, when it returns an error, FunctionError
// "Unhandled" and {"errorMessage", "errorType"} as Lambda answers. The function runs on
// in its own context when the caller's ends, as in another instance; the caller gets
// its context's error.
func (i *Invoker) Invoke(ctx context.Context, in *lambda.InvokeInput, _ ...func(*lambda.Options)) (*lambda.InvokeOutput, error) {
	typ := in.InvocationType
	if typ == "" {
		typ = types.InvocationTypeRequestResponse
	}
	inv := Invocation{Function: aws.ToString(in.FunctionName), Type: typ, Payload: append([]byte(nil), in.Payload...)}
	fn, ok := i.Funcs[inv.Function]
	if !ok {
		return nil, &types.ResourceNotFoundException{Message: aws.String("Function not found: " + inv.Function)}
	}
	if typ != types.InvocationTypeEvent && typ != types.InvocationTypeRequestResponse {
		return nil, fmt.Errorf("testkit: only Event and RequestResponse invocations are supported, got %q", typ)
	}
	i.mu.Lock()
	i.calls = append(i.calls, inv)
	i.wg.Add(1)
	i.mu.Unlock()
	type result struct {
		out []byte
		err error
	}
	done := make(chan result, 1)
	go func() {
		defer i.wg.Done()
		out, err := fn(context.WithoutCancel(ctx), inv.Payload)
		done <- result{out, err}
	}()
	if typ == types.InvocationTypeEvent {
		return &lambda.InvokeOutput{StatusCode: http.StatusAccepted}, nil
	}
	select {
	case r := <-done:
		if r.err != nil {
			return &lambda.InvokeOutput{StatusCode: http.StatusOK, FunctionError: aws.String("Unhandled"), Payload: failurePayload(r.err)}, nil
		}
		return &lambda.InvokeOutput{StatusCode: http.StatusOK, Payload: r.out, ExecutedVersion: aws.String("$LATEST")}, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// failurePayload is Lambda's payload for a handler that returned err: its message and
// the Go type's name.
func failurePayload(err error) []byte {
	t := reflect.TypeOf(err)
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	b, _ := json.Marshal(map[string]string{"errorMessage": err.Error(), "errorType": t.Name()})
	return b
}

// Calls returns the invocations so far.
func (i *Invoker) Calls() []Invocation {
	i.mu.Lock()
	defer i.mu.Unlock()
	return append([]Invocation(nil), i.calls...)
}

// Wait waits for every running invocation to end.
func (i *Invoker) Wait() { i.wg.Wait() }

// ServeHTTP serves the Lambda Invoke API (POST /2015-03-31/functions/{name}/invocations)
// over Invoke, with Lambda's status codes and headers: X-Amz-Function-Error for a
// failed function, X-Amzn-Errortype and a JSON message for a refused call. It checks
// no signature.
func (i *Invoker) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	name, ok := strings.CutPrefix(r.URL.Path, "/2015-03-31/functions/")
	name, ok2 := strings.CutSuffix(name, "/invocations")
	if r.Method != http.MethodPost || !ok || !ok2 {
		invokeError(w, http.StatusNotFound, "UnknownOperationException", "unknown operation "+r.Method+" "+r.URL.Path)
		return
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		invokeError(w, http.StatusBadRequest, "InvalidRequestContentException", err.Error())
		return
	}
	out, err := i.Invoke(r.Context(), &lambda.InvokeInput{FunctionName: aws.String(name),
		InvocationType: types.InvocationType(r.Header.Get("X-Amz-Invocation-Type")), Payload: body})
	var missing *types.ResourceNotFoundException
	switch {
	case errors.As(err, &missing):
		invokeError(w, http.StatusNotFound, "ResourceNotFoundException", aws.ToString(missing.Message))
		return
	case err != nil:
		invokeError(w, http.StatusInternalServerError, "ServiceException", err.Error())
		return
	}
	if out.FunctionError != nil {
		w.Header().Set("X-Amz-Function-Error", *out.FunctionError)
	}
	if out.StatusCode == http.StatusOK {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Amz-Executed-Version", "$LATEST")
	}
	w.WriteHeader(int(out.StatusCode))
	_, _ = w.Write(out.Payload)
}

func invokeError(w http.ResponseWriter, status int, typ, msg string) {
	w.Header().Set("X-Amzn-Errortype", typ)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	b, _ := json.Marshal(map[string]string{"Type": "User", "message": msg})
	_, _ = w.Write(b)
}

// Client serves i on a loopback HTTP server for the test's duration and returns the
// SDK's Lambda client of it: the real client's encoding and decoding of the Invoke
// API, with i behind it.
func (i *Invoker) Client(tb testing.TB) *lambda.Client {
	tb.Helper()
	srv := httptest.NewServer(i)
	tb.Cleanup(srv.Close)
	cfg, err := awsconf.Load(context.Background(), awsconf.Loopback(srv.URL)...)
	if err != nil {
		tb.Fatal(err)
	}
	return lambda.NewFromConfig(cfg)
}
