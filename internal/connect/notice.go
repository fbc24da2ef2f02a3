package connect

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	"github.com/aws/aws-sdk-go-v2/service/lambda/types"

	"github.com/sandgate/sandgate/internal/userid"
)

// Kinds of notice.
const (
	// NoticeConnect follows a $connect: it tells the new connection the sandbox's state
	// (or why there is none) once the handshake has completed.
	NoticeConnect = "connect"
	// NoticeRestart follows a frame queued for a STOPPING sandbox: it waits until the
	// sandbox has stopped, then starts a new one, which drains the queued frames.
	NoticeRestart = "restart"
)

// Notice is the internal event the Connect function sends itself (and the Message
// function sends it) as an asynchronous invocation. It carries no secret.
type Notice struct {
	Kind         string `json:"kind"`
	UserID       string `json:"userId"`
	ConnectionID string `json:"connectionId"`
	// Stage is the WebSocket stage, the metrics' dimension.
	Stage string `json:"stage,omitempty"`
	// Reason, on a connect notice, is the error frame's reason when the ensure failed.
	Reason string `json:"reason,omitempty"`
	// Until, on a restart notice, bounds the wait for the sandbox to stop (Unix ms).
	Until int64 `json:"until,omitempty"`
}

// Validate reports what makes n unusable.
func (n Notice) Validate() error {
	switch {
	case n.Kind != NoticeConnect && n.Kind != NoticeRestart:
		return fmt.Errorf("notice: unknown kind %q", n.Kind)
	case n.UserID == "" || n.ConnectionID == "":
		return errors.New("notice: no user or connection")
	case !userid.Valid(n.UserID):
		return errors.New("notice: malformed user id")
	case n.Kind == NoticeRestart && n.Until == 0:
		return errors.New("notice: restart without a deadline")
	}
	return nil
}

// noticeKey is the one field a notice invocation's payload has; API Gateway's events
// never carry it, so one decoded struct tells the two shapes apart.
const noticeKey = "sandgateNotice"

// Event is what the Connect function receives: API Gateway's $connect event, or a
// notice (then only Notice is set).
type Event struct {
	events.APIGatewayWebsocketProxyRequest
	Notice *Notice `json:"sandgateNotice,omitempty"`
}

// Invoker is the part of the Lambda client a Notifier uses.
type Invoker interface {
	Invoke(ctx context.Context, in *lambda.InvokeInput, optFns ...func(*lambda.Options)) (*lambda.InvokeOutput, error)
}

var _ Invoker = (*lambda.Client)(nil)

// Notifier sends notices to the Connect function as Event (asynchronous) invocations.
type Notifier struct {
	API Invoker
	// Function is the Connect function's name or ARN.
	Function string
}

// Send invokes the Connect function with n and returns once Lambda has queued it.
func (s *Notifier) Send(ctx context.Context, n Notice) error {
	if err := n.Validate(); err != nil {
		return fmt.Errorf("send notice: %w", err)
	}
	payload, err := json.Marshal(map[string]Notice{noticeKey: n})
	if err != nil {
		return fmt.Errorf("send notice: %w", err)
	}
	_, err = s.API.Invoke(ctx, &lambda.InvokeInput{
		FunctionName:   aws.String(s.Function),
		InvocationType: types.InvocationTypeEvent,
		Payload:        payload,
	})
	if err != nil {
		return fmt.Errorf("send %s notice to %s: %w", n.Kind, s.Function, err)
	}
	return nil
}
