package notice

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	"github.com/aws/aws-sdk-go-v2/service/lambda/types"

	"github.com/sandgate/sandgate/internal/ensure"
	"github.com/sandgate/sandgate/internal/frames"
	"github.com/sandgate/sandgate/internal/state"
)

// DefaultAnswerReserve is Ensurer.AnswerReserve when zero.
const DefaultAnswerReserve = time.Second

// ErrUnavailable: the sandbox was not ensured, and not for capacity, a purge or a
// failed start — the Connect function could not be invoked, failed, gave no answer
// to read, or could not reach its own store. ensure.Reason reads it as unavailable.
var ErrUnavailable = errors.New("sandbox not ensured: unavailable")

// maxDetail bounds how much of a failed function's message an error repeats.
const maxDetail = 200

// Ensurer ensures users' sandboxes through the Connect function, so that a function
// without the right to start tasks (the Message function: no ecs:RunTask, no
// iam:PassRole) can have one started: each Ensure is a synchronous (RequestResponse)
// invocation of an ensure notice, which the Connect function answers with what its
// own Ensure found. Its errors wrap ensure.ErrCapacity, ensure.ErrPurging,
// ensure.ErrStartFailed or ErrUnavailable, so ensure.Reason and ensure.Metric read
// them as they read the Connect function's.
type Ensurer struct {
	API Invoker
	// Function is the Connect function's name or ARN.
	Function string
	// AnswerReserve is kept from the caller's deadline for what the caller does with
	// the answer: the notice's Until, which bounds the Connect function's ensure, is
	// the deadline minus AnswerReserve. DefaultAnswerReserve when zero.
	AnswerReserve time.Duration
}

// Ensure asks the Connect function to ensure userID's sandbox. The result's Sandbox
// holds only the user, the state and the generation: no endpoint, no token. The
// connection and stage WithOrigin put in ctx go with the notice, for the Connect
// function's logs and metrics.
func (e *Ensurer) Ensure(ctx context.Context, userID string) (ensure.Result, error) {
	n := Notice{Kind: KindEnsure, UserID: userID}
	if o, ok := ctx.Value(originKey{}).(origin); ok {
		n.ConnectionID, n.Stage = o.connectionID, o.stage
	}
	if dl, ok := ctx.Deadline(); ok {
		reserve := e.AnswerReserve
		if reserve <= 0 {
			reserve = DefaultAnswerReserve
		}
		n.Until = dl.Add(-reserve).UnixMilli()
	}
	if err := n.Validate(); err != nil {
		return ensure.Result{}, fmt.Errorf("ensure sandbox %s: %w: %w", userID, ErrUnavailable, err)
	}
	payload, err := json.Marshal(Envelope{Notice: &n})
	if err != nil {
		return ensure.Result{}, fmt.Errorf("ensure sandbox %s: %w: %w", userID, ErrUnavailable, err)
	}
	out, err := e.API.Invoke(ctx, &lambda.InvokeInput{
		FunctionName:   aws.String(e.Function),
		InvocationType: types.InvocationTypeRequestResponse,
		Payload:        payload,
	})
	if err != nil {
		return ensure.Result{}, fmt.Errorf("ensure sandbox %s: invoke %s: %w: %w", userID, e.Function, ErrUnavailable, err)
	}
	if out.FunctionError != nil {
		return ensure.Result{}, fmt.Errorf("ensure sandbox %s: %s failed (%s): %s: %w",
			userID, e.Function, aws.ToString(out.FunctionError), failure(out.Payload), ErrUnavailable)
	}
	var a Answer
	if err := json.Unmarshal(out.Payload, &a); err != nil || a.Ensured == nil {
		return ensure.Result{}, fmt.Errorf("ensure sandbox %s: %s gave no answer to an ensure notice (%d bytes): %w",
			userID, e.Function, len(out.Payload), ErrUnavailable)
	}
	return a.Ensured.result(userID, e.Function)
}

// result is what Ensure returns for the answer.
func (a *Ensured) result(userID, function string) (ensure.Result, error) {
	if a.Reason != "" {
		kind := ErrUnavailable
		switch a.Reason {
		case frames.ReasonCapacity:
			kind = ensure.ErrCapacity
		case frames.ReasonPurging:
			kind = ensure.ErrPurging
		case frames.ReasonStartFailed:
			kind = ensure.ErrStartFailed
		}
		return ensure.Result{}, fmt.Errorf("ensure sandbox %s: %s answered %q: %w", userID, function, a.Reason, kind)
	}
	switch st := state.State(a.State); st {
	case state.Starting, state.Running, state.Stopping:
		return ensure.Result{Sandbox: &state.Sandbox{UserID: userID, State: st, Generation: a.Generation}, Started: a.Started}, nil
	}
	return ensure.Result{}, fmt.Errorf("ensure sandbox %s: %s answered state %q: %w", userID, function, a.State, ErrUnavailable)
}

// failure is the message of a failed invocation's payload ({"errorMessage", …}).
func failure(payload []byte) string {
	var p struct {
		Type    string `json:"errorType"`
		Message string `json:"errorMessage"`
	}
	if json.Unmarshal(payload, &p) != nil || p.Message == "" {
		return fmt.Sprintf("%d bytes of payload", len(payload))
	}
	msg := p.Type + ": " + p.Message
	if len(msg) > maxDetail {
		msg = msg[:maxDetail]
	}
	return msg
}

type originKey struct{}

type origin struct{ connectionID, stage string }

// WithOrigin returns ctx carrying the connection whose frame asks for the sandbox and
// its stage; Ensurer.Ensure sends them with the notice, so the Connect function logs
// the ensure with the connection and counts its refusals under the stage, as for a
// $connect.
func WithOrigin(ctx context.Context, connectionID, stage string) context.Context {
	return context.WithValue(ctx, originKey{}, origin{connectionID: connectionID, stage: stage})
}
