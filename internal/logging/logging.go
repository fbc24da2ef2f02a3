package logging

import (
	"context"
	"io"
	"log/slog"

	"github.com/aws/aws-lambda-go/lambdacontext"
)

// Keys shared by every log line, so one query finds a user's or a connection's story
// across functions, the agent and the local stack.
const (
	UserID       = "userId"
	ConnectionID = "connectionId"
	RequestID    = "requestId"
	Reason       = "reason"
	Error        = "error"
	Route        = "route"
	TaskARN      = "taskArn"
	State        = "state"
	Duration     = "durationMs"
)

// New returns a JSON logger writing to w at level. Inside a Lambda invocation each
// line carries the request id taken from the context passed to the log call.
func New(w io.Writer, level slog.Leveler) *slog.Logger {
	return slog.New(requestIDHandler{slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level})})
}

type requestIDHandler struct{ slog.Handler }

func (h requestIDHandler) Handle(ctx context.Context, r slog.Record) error {
	if lc, ok := lambdacontext.FromContext(ctx); ok && lc.AwsRequestID != "" {
		r.AddAttrs(slog.String(RequestID, lc.AwsRequestID))
	}
	return h.Handler.Handle(ctx, r)
}

func (h requestIDHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return requestIDHandler{h.Handler.WithAttrs(attrs)}
}

func (h requestIDHandler) WithGroup(name string) slog.Handler {
	return requestIDHandler{h.Handler.WithGroup(name)}
}
