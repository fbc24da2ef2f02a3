package notice_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/lambda/types"

	"github.com/sandgate/sandgate/infra/local/testkit"
	"github.com/sandgate/sandgate/internal/ensure"
	"github.com/sandgate/sandgate/internal/frames"
	"github.com/sandgate/sandgate/internal/metrics"
	"github.com/sandgate/sandgate/internal/notice"
	"github.com/sandgate/sandgate/internal/state"
)

// connectFunc stands in for the Connect function: it decodes the ensure notice,
// hands it to answer and returns the answer beside API Gateway's response, as
// connect.Response does.
func connectFunc(t *testing.T, answer func(notice.Notice) notice.Answer) testkit.Func {
	return func(_ context.Context, p []byte) ([]byte, error) {
		var env notice.Envelope
		if err := json.Unmarshal(p, &env); err != nil || env.Notice == nil {
			t.Errorf("not a notice: %s (%v)", p, err)
			return nil, errors.New("not a notice")
		}
		a := answer(*env.Notice)
		return json.Marshal(struct {
			StatusCode int `json:"statusCode"`
			notice.Answer
		}{200, a})
	}
}

// ensurer is a notice.Ensurer whose Lambda client reaches fn over HTTP.
func ensurer(t *testing.T, fn testkit.Func) (*notice.Ensurer, *testkit.Invoker) {
	inv := testkit.NewInvoker(t, testkit.Funcs{fnName: fn})
	return &notice.Ensurer{API: inv.Client(t), Function: fnName}, inv
}

// The wire: one synchronous invocation of the Connect function with an ensure notice
// naming the user, the asking connection and stage, and when the asker stops waiting;
// the answer comes back as the ensure's result.
func TestEnsurer_Ensure_NoticeAndAnswer(t *testing.T) {
	e, inv := ensurer(t, connectFunc(t, func(n notice.Notice) notice.Answer {
		return notice.Answer{Ensured: &notice.Ensured{State: "STARTING", Generation: 3, Started: true}}
	}))
	deadline := time.Now().Add(10 * time.Second)
	ctx, cancel := context.WithDeadline(notice.WithOrigin(context.Background(), "c1", "prod"), deadline)
	defer cancel()
	res, err := e.Ensure(ctx, "user_a")
	if err != nil {
		t.Fatal(err)
	}
	if !res.Started || res.State() != state.Starting || res.Sandbox.Generation != 3 || res.Sandbox.UserID != "user_a" ||
		res.Sandbox.GatewayToken != "" || res.Sandbox.Endpoint != "" {
		t.Fatalf("result %+v, sandbox %+v", res, res.Sandbox)
	}
	calls := inv.Calls()
	if len(calls) != 1 || calls[0].Function != fnName || calls[0].Type != types.InvocationTypeRequestResponse {
		t.Fatalf("calls %+v", calls)
	}
	var env notice.Envelope
	if err := json.Unmarshal(calls[0].Payload, &env); err != nil || env.Notice == nil {
		t.Fatalf("payload %s: %v", calls[0].Payload, err)
	}
	want := notice.Notice{Kind: notice.KindEnsure, UserID: "user_a", ConnectionID: "c1", Stage: "prod",
		Until: deadline.Add(-notice.DefaultAnswerReserve).UnixMilli()}
	if *env.Notice != want {
		t.Fatalf("notice %+v, want %+v", *env.Notice, want)
	}
	if err := env.Notice.Validate(); err != nil {
		t.Fatal(err)
	}
}

// Without a deadline there is no bound to send; without an origin, no connection: the
// notice is still valid.
func TestEnsurer_Ensure_NoDeadlineNoOrigin(t *testing.T) {
	var got notice.Notice
	e, _ := ensurer(t, connectFunc(t, func(n notice.Notice) notice.Answer {
		got = n
		return notice.Answer{Ensured: &notice.Ensured{State: "RUNNING", Generation: 1}}
	}))
	res, err := e.Ensure(context.Background(), "user_a")
	if err != nil || res.State() != state.Running || res.Started {
		t.Fatalf("result %+v, %v", res, err)
	}
	if got.Until != 0 || got.ConnectionID != "" || got.Stage != "" || got.Validate() != nil {
		t.Fatalf("notice %+v", got)
	}
}

// Every outcome of Connect's Ensure, answered with AnswerOf, comes back as the same
// state, or as an error ensure.Reason and ensure.Metric read as they read Ensure's own.
func TestEnsurer_Ensure_OutcomesRoundTrip(t *testing.T) {
	cause := errors.New("cause")
	for name, tc := range map[string]struct {
		res    ensure.Result
		err    error
		reason string
		metric string
		is     error
	}{
		"capacity":      {err: fmt.Errorf("ensure: %w: %w", ensure.ErrCapacity, cause), reason: frames.ReasonCapacity, metric: metrics.CapacityRefusals, is: ensure.ErrCapacity},
		"purging":       {err: fmt.Errorf("ensure: %w: %w", ensure.ErrPurging, cause), reason: frames.ReasonPurging, is: ensure.ErrPurging},
		"start failed":  {err: fmt.Errorf("ensure: %w: %w", ensure.ErrStartFailed, cause), reason: frames.ReasonStartFailed, metric: metrics.StartFailures, is: ensure.ErrStartFailed},
		"store down":    {err: fmt.Errorf("ensure: %w", state.ErrUnavailable), reason: frames.ReasonUnavailable, is: notice.ErrUnavailable},
		"starting":      {res: ensure.Result{Sandbox: &state.Sandbox{State: state.Starting, Generation: 7}, Started: true}},
		"running":       {res: ensure.Result{Sandbox: &state.Sandbox{State: state.Running, Generation: 2, GatewayToken: "gw-secret", Endpoint: "http://10.0.0.1:8080"}}},
		"stopping":      {res: ensure.Result{Sandbox: &state.Sandbox{State: state.Stopping, Generation: 4}}},
		"held starting": {res: ensure.Result{Sandbox: &state.Sandbox{State: state.Starting, Generation: 5, LeaseToken: "lease-secret"}}},
	} {
		t.Run(name, func(t *testing.T) {
			e, _ := ensurer(t, connectFunc(t, func(notice.Notice) notice.Answer { return notice.AnswerOf(tc.res, tc.err) }))
			res, err := e.Ensure(context.Background(), "user_a")
			if tc.err != nil {
				if !errors.Is(err, tc.is) || ensure.Reason(err) != tc.reason || ensure.Metric(err) != tc.metric {
					t.Fatalf("err %v: reason %q, metric %q", err, ensure.Reason(err), ensure.Metric(err))
				}
				return
			}
			want := tc.res.Sandbox
			if err != nil || res.Started != tc.res.Started || res.State() != want.State || res.Sandbox.Generation != want.Generation ||
				res.Sandbox.GatewayToken != "" || res.Sandbox.Endpoint != "" || res.Sandbox.LeaseToken != "" {
				t.Fatalf("result %+v (sandbox %+v), %v", res, res.Sandbox, err)
			}
		})
	}
}

// The answer carries nothing of the record but its state, generation and whether
// this call started it: no token, no address, no task.
func TestAnswerOf_NothingSecret(t *testing.T) {
	sb := &state.Sandbox{UserID: "user_a", State: state.Running, Generation: 2, LeaseToken: "lease-secret",
		GatewayToken: "gw-secret", Endpoint: "http://10.0.0.1:8080", TaskARN: "arn:aws:ecs:r:1:task/c/abc"}
	b, err := json.Marshal(notice.AnswerOf(ensure.Result{Sandbox: sb}, nil))
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != `{"sandgateEnsured":{"state":"RUNNING","generation":2}}` {
		t.Fatalf("answer %s", b)
	}
}

// A Connect function that fails, cannot be invoked, or does not answer an ensure
// notice (one that predates them answers with API Gateway's response alone) leaves
// the sandbox unavailable, not refused for a reason that is not known.
func TestEnsurer_Ensure_ConnectFailsUnavailable(t *testing.T) {
	failing := func(context.Context, []byte) ([]byte, error) { return nil, errors.New("boom: task timed out") }
	old := func(context.Context, []byte) ([]byte, error) { return []byte(`{"statusCode":200}`), nil }
	bogus := func(context.Context, []byte) ([]byte, error) {
		return []byte(`{"sandgateEnsured":{"state":"STOPPED","generation":1}}`), nil
	}
	for name, tc := range map[string]struct {
		fn       testkit.Func
		function string
		says     string
	}{
		"function error":   {fn: failing, function: fnName, says: "boom: task timed out"},
		"no such function": {fn: failing, function: "Missing", says: "ResourceNotFoundException"},
		"no answer":        {fn: old, function: fnName, says: "no answer"},
		"not a live state": {fn: bogus, function: fnName, says: "STOPPED"},
	} {
		t.Run(name, func(t *testing.T) {
			e, inv := ensurer(t, tc.fn)
			e.Function = tc.function
			res, err := e.Ensure(context.Background(), "user_a")
			if !errors.Is(err, notice.ErrUnavailable) || ensure.Reason(err) != frames.ReasonUnavailable || ensure.Metric(err) != "" ||
				res.Sandbox != nil || !strings.Contains(err.Error(), tc.says) {
				t.Fatalf("result %+v, err %v", res, err)
			}
			if tc.function != fnName && len(inv.Calls()) != 0 {
				t.Fatalf("calls %+v", inv.Calls())
			}
		})
	}
}

// The caller's deadline ends the wait: the asker hears unavailable (the Connect
// function may still finish its ensure, which the next frame then finds).
func TestEnsurer_Ensure_CallerGivesUp(t *testing.T) {
	release := make(chan struct{})
	e, _ := ensurer(t, func(context.Context, []byte) ([]byte, error) {
		<-release
		return json.Marshal(notice.Answer{Ensured: &notice.Ensured{State: "STARTING", Generation: 1, Started: true}})
	})
	defer close(release)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err := e.Ensure(ctx, "user_a")
	if !errors.Is(err, notice.ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err %v", err)
	}
}

// A malformed user is refused before anything is invoked.
func TestEnsurer_Ensure_BadUser(t *testing.T) {
	e, inv := ensurer(t, connectFunc(t, func(notice.Notice) notice.Answer { return notice.Answer{} }))
	if _, err := e.Ensure(context.Background(), "../user_a"); !errors.Is(err, notice.ErrUnavailable) || len(inv.Calls()) != 0 {
		t.Fatalf("err %v, calls %d", err, len(inv.Calls()))
	}
}
