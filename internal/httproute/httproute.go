package httproute

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/url"
	"time"

	"github.com/aws/aws-lambda-go/events"

	"github.com/sandgate/sandgate/internal/auth"
	"github.com/sandgate/sandgate/internal/authorizer"
	"github.com/sandgate/sandgate/internal/frames"
	"github.com/sandgate/sandgate/internal/logging"
	"github.com/sandgate/sandgate/internal/secretcache"
	"github.com/sandgate/sandgate/internal/state"
	"github.com/sandgate/sandgate/internal/userid"
)

// Verifier checks the signed query string; *authorizer.Verifier is one.
type Verifier = authorizer.QueryVerifier

// Body is the JSON the HTTP API's functions answer with: the caller's sandbox.
type Body struct {
	UserID string `json:"userId"`
	// State is the sandbox's state: STOPPED (also for no sandbox, or a dead one whose
	// lease expired), STARTING, RUNNING, STOPPING or PURGING.
	State string `json:"state"`
	// Since is when the sandbox entered State, absent when there is no sandbox.
	Since *time.Time `json:"since,omitempty"`
	// Ready reports whether frames go straight to a running sandbox.
	Ready bool `json:"ready"`
	// Queued is how many frames wait for the sandbox (Status only).
	Queued *int `json:"queued,omitempty"`
	// Warm reports that the sandbox's start claimed a warm pool task instead of
	// waiting for a launch of its own.
	Warm bool `json:"warm"`
	// Receipt is the durability receipt of the user's last completed sync (Status
	// only; absent before the first): the same object the sandgate.status frame of
	// state "saved" carries.
	Receipt *frames.Receipt `json:"receipt,omitempty"`
}

// ReceiptOf returns the receipt recorded on sb, or nil when there is none.
func ReceiptOf(sb *state.Sandbox) *frames.Receipt {
	if sb == nil || sb.LastSync == nil {
		return nil
	}
	r := sb.LastSync
	return &frames.Receipt{Time: r.Time.UTC(), Generation: r.Generation, Files: r.Files, Bytes: r.Bytes, Digest: r.Digest}
}

// Describe returns the Body of userID's sandbox sb (nil: no sandbox) at now.
func Describe(userID string, sb *state.Sandbox, now time.Time) Body {
	b := Body{UserID: userID, State: string(state.Stopped)}
	if sb == nil {
		return b
	}
	b.State = string(sb.State)
	if sb.Expired(now) {
		// A dead holder: nothing runs, and the next connect takes the lease over.
		b.State = string(state.Stopped)
	}
	if !sb.StateSince.IsZero() {
		since := sb.StateSince.UTC()
		b.Since = &since
	}
	b.Ready = sb.State == state.Running && sb.Live(now)
	b.Warm = sb.Warm
	return b
}

// errorBody is the JSON of every refusal: a reason and nothing more.
type errorBody struct {
	Error string `json:"error"`
}

// Respond returns a JSON response with body, never cached.
func Respond(status int, body any) events.APIGatewayV2HTTPResponse {
	b, _ := json.Marshal(body)
	return events.APIGatewayV2HTTPResponse{
		StatusCode: status,
		Headers:    map[string]string{"Content-Type": "application/json", "Cache-Control": "no-store"},
		Body:       string(b),
	}
}

// Refuse returns the response to a refused request: status and {"error": reason}.
func Refuse(status int, reason string) events.APIGatewayV2HTTPResponse {
	return Respond(status, errorBody{Error: reason})
}

// Verify returns the signed user of req, or the 401 response (503 when the signing
// secrets cannot be read: no URL is called bad for that). The raw query string is
// parsed here: API Gateway's queryStringParameters joins repeated parameters with
// commas, which would hide a duplicate the verifier must refuse.
func Verify(ctx context.Context, v Verifier, log *slog.Logger, req events.APIGatewayV2HTTPRequest) (string, *events.APIGatewayV2HTTPResponse) {
	q, err := url.ParseQuery(req.RawQueryString)
	userID := ""
	if err == nil {
		userID, err = v.VerifyQuery(ctx, q)
	} else {
		err = errors.Join(auth.ErrMalformed, err)
	}
	if err != nil {
		attrs := []any{logging.Reason, authorizer.Reason(err), logging.Error, err.Error(), logging.Route, req.RouteKey}
		// Name the user only when the id is well-formed; never the signature.
		if ids := q[auth.ParamUserID]; len(ids) == 1 && userid.Valid(ids[0]) {
			attrs = append(attrs, logging.UserID, ids[0])
		}
		log.WarnContext(ctx, "request refused", attrs...)
		if errors.Is(err, secretcache.ErrUnavailable) {
			resp := Refuse(http.StatusServiceUnavailable, "unavailable")
			return "", &resp
		}
		resp := Refuse(http.StatusUnauthorized, "unauthorized")
		return "", &resp
	}
	return userID, nil
}

// RequireMethod returns nil when req uses method, or the 405 response naming it.
func RequireMethod(req events.APIGatewayV2HTTPRequest, method string) *events.APIGatewayV2HTTPResponse {
	if req.RequestContext.HTTP.Method == method {
		return nil
	}
	resp := Refuse(http.StatusMethodNotAllowed, "method not allowed")
	resp.Headers["Allow"] = method
	return &resp
}
