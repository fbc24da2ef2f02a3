package status

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"time"

	"github.com/aws/aws-lambda-go/events"

	"github.com/sandgate/sandgate/internal/frames"
	"github.com/sandgate/sandgate/internal/httproute"
	"github.com/sandgate/sandgate/internal/logging"
	"github.com/sandgate/sandgate/internal/state"
)

// Log keys of this package; the shared ones come from internal/logging.
const logQueued = "queued" // frames waiting in the inbox

// Store is the part of the state store the Handler uses: reads only.
type Store interface {
	Get(ctx context.Context, userID string) (*state.Sandbox, error)
	Queued(ctx context.Context, userID string) (int, error)
}

var _ Store = (*state.Store)(nil)

// Handler serves GET /status: the caller's sandbox, read only, never started.
type Handler struct {
	Verifier httproute.Verifier
	Store    Store
	Log      *slog.Logger
	// Now is the clock leases are judged by (time.Now when nil).
	Now func() time.Time
}

// Handle answers 200 with the caller's httproute.Body, 401 on a bad signature, 503
// when the table cannot be read. The user is the signed one; nothing in the request
// can name another.
func (h *Handler) Handle(ctx context.Context, req events.APIGatewayV2HTTPRequest) (events.APIGatewayV2HTTPResponse, error) {
	if resp := httproute.RequireMethod(req, http.MethodGet); resp != nil {
		return *resp, nil
	}
	userID, refused := httproute.Verify(ctx, h.Verifier, h.Log, req)
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
		return httproute.Refuse(http.StatusServiceUnavailable, frames.ReasonUnavailable), nil
	}
	now := time.Now()
	if h.Now != nil {
		now = h.Now()
	}
	b := httproute.Describe(userID, sb, now)
	b.Queued = &queued
	b.Receipt = httproute.ReceiptOf(sb)
	log.DebugContext(ctx, "status", logging.State, b.State, logQueued, queued)
	return httproute.Respond(http.StatusOK, b), nil
}
