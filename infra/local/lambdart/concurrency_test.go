package lambdart_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	"github.com/aws/aws-sdk-go-v2/service/lambda/types"

	"github.com/sandgate/sandgate/infra/local/identity"
	"github.com/sandgate/sandgate/infra/local/lambdart"
	"github.com/sandgate/sandgate/infra/local/testkit"
)

// A reserved concurrency of 0, set through PutFunctionConcurrency, throttles every
// invocation as Lambda does: a synchronous one is answered 429 TooManyRequestsException,
// an asynchronous one is accepted and kept until the function takes invocations again,
// a function URL answers 429; DeleteFunctionConcurrency lifts it. The three operations
// are authorised as the actions of their names, on the function.
func TestRuntime_ReservedConcurrency_ZeroThrottles(t *testing.T) {
	iam := newIAM(t, true,
		identity.Role{Name: "operator", Policies: []identity.Policy{
			policy("operator/concurrency", allow(`["lambda:PutFunctionConcurrency","lambda:GetFunctionConcurrency","lambda:DeleteFunctionConcurrency","lambda:InvokeFunction"]`,
				`["`+fnARN("Api")+`","`+fnARN("Url")+`"]`)),
		}},
		identity.Role{Name: "stranger", Policies: []identity.Policy{
			policy("stranger/invoke", allow(`"lambda:InvokeFunction"`, `"`+fnARN("Api")+`"`)),
		}})
	h := newRuntimeWith(t, func(rt *lambdart.Runtime) {
		rt.Authority, rt.Authorizer = iam.a, iam.ev
		rt.AsyncRetryDelay = 10 * time.Millisecond
	}, lambdart.Function{Name: "Api"}, lambdart.Function{Name: "Url", URLAuthType: lambdart.AuthTypeNone})
	srv := httptest.NewServer(h.rt.Handler())
	t.Cleanup(srv.Close)
	ctx := context.Background()
	operator, _ := iam.session(t, "operator", "undeploy")
	stranger, _ := iam.session(t, "stranger", "caller")
	op := lambdaClient(srv.URL, operator)

	got, err := op.GetFunctionConcurrency(ctx, &lambda.GetFunctionConcurrencyInput{FunctionName: aws.String("Api")})
	if err != nil || got.ReservedConcurrentExecutions != nil {
		t.Fatalf("unset: %+v, %v", got, err)
	}
	zero := int32(0)
	if _, err := lambdaClient(srv.URL, stranger).PutFunctionConcurrency(ctx, &lambda.PutFunctionConcurrencyInput{
		FunctionName: aws.String("Api"), ReservedConcurrentExecutions: &zero}); testkit.ErrorCode(err) != "AccessDeniedException" ||
		!strings.Contains(err.Error(), "lambda:PutFunctionConcurrency on resource: "+fnARN("Api")) {
		t.Fatalf("stranger's PutFunctionConcurrency: %v", err)
	}
	for _, fn := range []string{"Api", fnARN("Url")} {
		put, err := op.PutFunctionConcurrency(ctx, &lambda.PutFunctionConcurrencyInput{FunctionName: aws.String(fn), ReservedConcurrentExecutions: &zero})
		if err != nil || put.ReservedConcurrentExecutions == nil || *put.ReservedConcurrentExecutions != 0 {
			t.Fatalf("PutFunctionConcurrency %s 0: %+v, %v", fn, put, err)
		}
	}
	got, err = op.GetFunctionConcurrency(ctx, &lambda.GetFunctionConcurrencyInput{FunctionName: aws.String(fnARN("Api"))})
	if err != nil || got.ReservedConcurrentExecutions == nil || *got.ReservedConcurrentExecutions != 0 {
		t.Fatalf("after put: %+v, %v", got, err)
	}

	_, err = op.Invoke(ctx, &lambda.InvokeInput{FunctionName: aws.String("Api"), Payload: []byte(`{"op":"echo"}`)})
	var tooMany *types.TooManyRequestsException
	if !errors.As(err, &tooMany) || status(err) != http.StatusTooManyRequests ||
		tooMany.Reason != types.ThrottleReasonReservedFunctionConcurrentInvocationLimitExceeded {
		t.Fatalf("throttled invoke: %v (status %d)", err, status(err))
	}
	out, err := op.Invoke(ctx, &lambda.InvokeInput{FunctionName: aws.String("Api"), InvocationType: types.InvocationTypeEvent,
		Payload: []byte(`{"op":"log","value":"queued while throttled"}`)})
	if err != nil || out.StatusCode != http.StatusAccepted {
		t.Fatalf("throttled Event invoke: %+v, %v", out, err)
	}
	resp, b := do(t, signed(t, identity.Credentials{}, http.MethodGet, h.rt.FunctionURL("Url")+"?op=plain", nil))
	if resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("throttled function URL: %d %s", resp.StatusCode, b)
	}
	if _, err := h.invoke(ctx, "Api", map[string]any{"op": "echo"}); !errors.Is(err, lambdart.ErrThrottled) {
		t.Fatalf("Runtime.Invoke while throttled: %v", err)
	}
	// No process started: nothing ran, the event included, while the queue retried it.
	if inits, _ := h.rt.InitDurations("Api"); len(inits) != 0 {
		t.Fatalf("%d processes started while throttled", len(inits))
	}

	if _, err := op.DeleteFunctionConcurrency(ctx, &lambda.DeleteFunctionConcurrencyInput{FunctionName: aws.String("Api")}); err != nil {
		t.Fatal(err)
	}
	if got, err = op.GetFunctionConcurrency(ctx, &lambda.GetFunctionConcurrencyInput{FunctionName: aws.String("Api")}); err != nil || got.ReservedConcurrentExecutions != nil {
		t.Fatalf("after delete: %+v, %v", got, err)
	}
	if _, err := op.Invoke(ctx, &lambda.InvokeInput{FunctionName: aws.String("Api"), Payload: []byte(`{"op":"echo"}`)}); err != nil {
		t.Fatalf("invoke after delete: %v", err)
	}
	testkit.Eventually(t, 10*time.Second, func() bool { return strings.Contains(h.out.String(), "stdout says queued while throttled") },
		func() string { return "the event queued while throttled did not run:\n" + h.logs.String() })
	if strings.Contains(h.logs.String(), "async invocation failed") {
		t.Fatalf("throttled attempts counted as failures:\n%s", h.logs.String())
	}
	two := int32(2)
	if _, err := op.PutFunctionConcurrency(ctx, &lambda.PutFunctionConcurrencyInput{FunctionName: aws.String("Nope"), ReservedConcurrentExecutions: &two}); testkit.ErrorCode(err) != "AccessDeniedException" {
		t.Fatalf("unknown function, not granted: %v", err)
	}
	if n, err := h.rt.ReservedConcurrency("Url"); err != nil || n == nil || *n != 0 {
		t.Fatalf("Url's reserved concurrency %v, %v", n, err)
	}
}
