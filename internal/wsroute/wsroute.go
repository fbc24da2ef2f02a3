package wsroute

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/aws/aws-lambda-go/events"

	"github.com/sandgate/sandgate/internal/authorizer"
	"github.com/sandgate/sandgate/internal/frames"
	"github.com/sandgate/sandgate/internal/userid"
)

// ErrNoIdentity: the event carries no verified user (no authorizer context with a
// well-formed userId) or no connection id. Such an event never came through the
// authorizer, so it is refused before anything is read or written.
var ErrNoIdentity = errors.New("event has no authorized user or connection")

// Caller is who sent a WebSocket event.
type Caller struct {
	UserID       string
	ConnectionID string
	Stage        string
}

// Identify returns the caller of a WebSocket event. The user comes only from the
// authorizer's context, never from the body or the URL.
func Identify(rc events.APIGatewayWebsocketProxyRequestContext) (Caller, error) {
	ctx, _ := rc.Authorizer.(map[string]any)
	userID, _ := ctx[authorizer.ContextUserID].(string)
	switch {
	case userID == "":
		return Caller{}, fmt.Errorf("%w: no %s in the authorizer context", ErrNoIdentity, authorizer.ContextUserID)
	case !userid.Valid(userID):
		return Caller{}, fmt.Errorf("%w: malformed user id in the authorizer context", ErrNoIdentity)
	case rc.ConnectionID == "":
		return Caller{}, fmt.Errorf("%w: no connection id", ErrNoIdentity)
	}
	return Caller{UserID: userID, ConnectionID: rc.ConnectionID, Stage: rc.Stage}, nil
}

// OK is the response that accepts a connection or acknowledges a frame.
func OK() events.APIGatewayProxyResponse {
	return events.APIGatewayProxyResponse{StatusCode: http.StatusOK}
}

// Refused is the response to an event that cannot be served (no identity, or the
// connection could not be recorded): API Gateway fails the handshake or the frame.
func Refused() events.APIGatewayProxyResponse {
	return events.APIGatewayProxyResponse{StatusCode: http.StatusInternalServerError}
}

// messages are what people read in error frames; programs read the reason.
var messages = map[string]string{
	frames.ReasonCapacity:    "All sandboxes are in use; try again in a few minutes.",
	frames.ReasonRateLimited: "Frames are arriving faster than allowed; this frame was not delivered.",
	frames.ReasonTooLarge:    "The frame is larger than 128 KB; it was not delivered.",
	frames.ReasonInboxFull:   "Too many frames are waiting for the sandbox to start; this frame was not queued.",
	frames.ReasonStartFailed: "The sandbox could not be started; reconnect or send again to retry.",
	frames.ReasonUnavailable: "The sandbox is unavailable right now; this frame was not delivered, send it again.",
	frames.ReasonNoAnswer:    "The sandbox did not answer in time; this frame may or may not have been delivered.",
	frames.ReasonPurging:     "Stored data of this account is being deleted; try again in a few minutes.",
	frames.ReasonTooManyConnections: "This account has as many connections open as allowed; close one and reconnect. " +
		"This connection is being closed.",
	frames.ReasonConnectRate: "Connecting faster than allowed; wait a little before reconnecting.",
	reasonRateLimitClose:     "Frames kept arriving faster than allowed; this connection is being closed.",
}

// reasonRateLimitClose keys the message of the rate_limited frame sent before a
// connection is closed for being rate limited again and again (RateLimitCloseFrame).
const reasonRateLimitClose = "rate_limited/close"

// RateLimitCloseFrame is the error frame (reason rate_limited) sent before a connection
// that keeps being rate limited is closed.
func RateLimitCloseFrame() frames.Frame {
	return frames.Error(frames.ReasonRateLimited, messages[reasonRateLimitClose])
}

// Limited is the response that refuses a handshake for a per-user limit: 429 Too Many
// Requests, with the error frame as its body for clients that read a refused
// handshake's body (browsers do not; they see the close).
func Limited(reason string) events.APIGatewayProxyResponse {
	return events.APIGatewayProxyResponse{StatusCode: http.StatusTooManyRequests,
		Headers: map[string]string{"Content-Type": "application/json"}, Body: string(ErrorFrame(reason).Bytes())}
}

// ErrorFrame returns the error frame for reason.
func ErrorFrame(reason string) frames.Frame {
	msg, ok := messages[reason]
	if !ok {
		msg = "The frame could not be handled."
	}
	return frames.Error(reason, msg)
}
