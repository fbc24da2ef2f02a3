package prewarm

import (
	"context"
	"log/slog"
	"net/http"
	"time"

	"github.com/aws/aws-lambda-go/events"

	"github.com/sandgate/sandgate/internal/ensure"
	"github.com/sandgate/sandgate/internal/httproute"
	"github.com/sandgate/sandgate/internal/logging"
	"github.com/sandgate/sandgate/internal/metrics"
)

// Log keys of this package; the shared ones come from internal/logging.
const logStarted = "started" // this call launched the task

// Ensurer ensures a user's sandbox; *ensure.Ensurer is one.
type Ensurer interface {
	Ensure(ctx context.Context, userID string) (ensure.Result, error)
}

var _ Ensurer = (*ensure.Ensurer)(nil)

// Handler serves POST /prewarm: ensure the caller's sandbox, so a frontend can call it
// at sign-in and hide the cold start.
type Handler struct {
	Verifier httproute.Verifier
	Ensurer  Ensurer
	Metrics  *metrics.Emitter
	Log      *slog.Logger
	// Now is the clock leases are judged by (time.Now when nil).
	Now func() time.Time
}

// Handle answers 202 with the httproute.Body of the ensured sandbox, 401 on a bad
// signature, and 503 with the reason (capacity, purging, start_failed, unavailable)
// when no sandbox could be ensured.
func (h *Handler) Handle(ctx context.Context, req events.APIGatewayV2HTTPRequest) (events.APIGatewayV2HTTPResponse, error) {
	if resp := httproute.RequireMethod(req, http.MethodPost); resp != nil {
		return *resp, nil
	}
	userID, refused := httproute.Verify(ctx, h.Verifier, h.Log, req)
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
		return httproute.Refuse(http.StatusServiceUnavailable, reason), nil
	}
	now := time.Now()
	if h.Now != nil {
		now = h.Now()
	}
	b := httproute.Describe(userID, res.Sandbox, now)
	log.InfoContext(ctx, "prewarm", logging.State, b.State, logStarted, res.Started)
	return httproute.Respond(http.StatusAccepted, b), nil
}
