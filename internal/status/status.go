package status

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
	"github.com/sandgate/sandgate/internal/ensure"
	"github.com/sandgate/sandgate/internal/frames"
	"github.com/sandgate/sandgate/internal/logging"
	"github.com/sandgate/sandgate/internal/metrics"
	"github.com/sandgate/sandgate/internal/state"
	"github.com/sandgate/sandgate/internal/userid"
)

// Log keys of this package; the shared ones come from internal/logging.
const (
	logQueued  = "queued"  // frames waiting in the inbox
	logStarted = "started" // this call launched the task
)

// Verifier checks the signed query string; *auth.Verifier is one.
type Verifier interface {
	VerifyQuery(q map[string][]string) (string, error)
}

// Store is the part of the state store the Status handler uses: reads only.
type Store interface {
	Get(ctx context.Context, userID string) (*state.Sandbox, error)
	Queued(ctx context.Context, userID string) (int, error)
}

// Ensurer ensures a user's sandbox; *ensure.Ensurer is one.
type Ensurer interface {
	Ensure(ctx context.Context, userID string) (ensure.Result, error)
}

var (
	_ Verifier = (*auth.Verifier)(nil)
	_ Store    = (*state.Store)(nil)
	_ Ensurer  = (*ensure.Ensurer)(nil)
)

// Body is the JSON both functions answer with.
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
}

// describe returns the body for sb (nil: no sandbox).
func describe(userID string, sb *state.Sandbox, now time.Time) Body {
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
	return b
}

// errorBody is the JSON of every refusal: a reason and nothing more.
type errorBody struct {
	Error string `json:"error"`
}

func respond(status int, body any) events.APIGatewayV2HTTPResponse {
	b, _ := json.Marshal(body)
	return events.APIGatewayV2HTTPResponse{
		StatusCode: status,
		Headers:    map[string]string{"Content-Type": "application/json", "Cache-Control": "no-store"},
		Body:       string(b),
	}
}

// verify returns the signed user of req, or the 401 response. The raw query string is
// parsed here: API Gateway's queryStringParameters joins repeated parameters with
// commas, which would hide a duplicate the verifier must refuse.
func verify(ctx context.Context, v Verifier, log *slog.Logger, req events.APIGatewayV2HTTPRequest) (string, *events.APIGatewayV2HTTPResponse) {
	q, err := url.ParseQuery(req.RawQueryString)
	userID := ""
	if err == nil {
		userID, err = v.VerifyQuery(q)
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
		resp := respond(http.StatusUnauthorized, errorBody{Error: "unauthorized"})
		return "", &resp
	}
	return userID, nil
}

func methodIs(req events.APIGatewayV2HTTPRequest, method string) *events.APIGatewayV2HTTPResponse {
	if req.RequestContext.HTTP.Method == method {
		return nil
	}
	resp := respond(http.StatusMethodNotAllowed, errorBody{Error: "method not allowed"})
	resp.Headers["Allow"] = method
	return &resp
}

// StatusHandler serves GET /status: the caller's sandbox, read only, never started.
type StatusHandler struct {
	Verifier Verifier
	Store    Store
	Log      *slog.Logger
	// Now is the clock leases are judged by (time.Now when nil).
	Now func() time.Time
}

// Handle answers 200 with the caller's Body, 401 on a bad signature, 503 when the
// table cannot be read. The user is the signed one; nothing in the request can name
// another.
func (h *StatusHandler) Handle(ctx context.Context, req events.APIGatewayV2HTTPRequest) (events.APIGatewayV2HTTPResponse, error) {
	if resp := methodIs(req, http.MethodGet); resp != nil {
		return *resp, nil
	}
	userID, refused := verify(ctx, h.Verifier, h.Log, req)
	if refused != nil {
		return *refused, nil
	}
	log := h.Log.With(logging.UserID, userID)
	sb, err := h.Store.Get(ctx, userID)
	if errors.Is(err, state.ErrNotFound) {
		sb, err = nil, nil
	}
	var queued int
	if err == nil {
		queued, err = h.Store.Queued(ctx, userID)
	}
	if err != nil {
		log.ErrorContext(ctx, "status unavailable", logging.Error, err.Error())
		return respond(http.StatusServiceUnavailable, errorBody{Error: frames.ReasonUnavailable}), nil
	}
	now := time.Now()
	if h.Now != nil {
		now = h.Now()
	}
	b := describe(userID, sb, now)
	b.Queued = &queued
	log.DebugContext(ctx, "status", logging.State, b.State, logQueued, queued)
	return respond(http.StatusOK, b), nil
}

// PrewarmHandler serves POST /prewarm: ensure the caller's sandbox, so a frontend can
// call it at sign-in and hide the cold start.
type PrewarmHandler struct {
	Verifier Verifier
	Ensurer  Ensurer
	Metrics  *metrics.Emitter
	Log      *slog.Logger
	// Now is the clock leases are judged by (time.Now when nil).
	Now func() time.Time
}

// Handle answers 202 with the Body of the ensured sandbox, 401 on a bad signature,
// and 503 with the reason (capacity, purging, start_failed, unavailable) when no
// sandbox could be ensured.
func (h *PrewarmHandler) Handle(ctx context.Context, req events.APIGatewayV2HTTPRequest) (events.APIGatewayV2HTTPResponse, error) {
	if resp := methodIs(req, http.MethodPost); resp != nil {
		return *resp, nil
	}
	userID, refused := verify(ctx, h.Verifier, h.Log, req)
	if refused != nil {
		return *refused, nil
	}
	log := h.Log.With(logging.UserID, userID)
	res, err := h.Ensurer.Ensure(ctx, userID)
	if err != nil {
		reason := ensure.Reason(err)
		if name := ensure.Metric(err); name != "" {
			if merr := h.Metrics.Count(req.RequestContext.Stage, name); merr != nil {
				log.WarnContext(ctx, "metric not emitted", logging.Error, merr.Error())
			}
		}
		log.WarnContext(ctx, "prewarm refused", logging.Reason, reason, logging.Error, err.Error())
		return respond(http.StatusServiceUnavailable, errorBody{Error: reason}), nil
	}
	now := time.Now()
	if h.Now != nil {
		now = h.Now()
	}
	b := describe(userID, res.Sandbox, now)
	log.InfoContext(ctx, "prewarm", logging.State, b.State, logStarted, res.Started)
	return respond(http.StatusAccepted, b), nil
}
