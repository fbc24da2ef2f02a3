package demopage

import (
	"context"
	"errors"
	"net/http"

	ops "github.com/sandgate/sandgate/internal/admin"
)

// Operator is what the operator panel calls: internal/admin, the code make admin runs.
type Operator interface {
	List(ctx context.Context, f ops.Filter) ([]ops.Sandbox, error)
	Inspect(ctx context.Context, userID string) (*ops.Report, error)
	Stop(ctx context.Context, userID string, wait bool) (ops.Stopped, error)
	Revoke(ctx context.Context, userID string) (ops.Revocation, error)
}

var _ Operator = (*ops.Admin)(nil)

// registerOperator mounts the operator panel's endpoints: the sandboxes, one user's
// report, a graceful stop and a revocation, as make admin does them.
func (h *Handler) registerOperator(mux interface {
	Handle(pattern string, handler http.Handler)
}) {
	mux.Handle("GET /dev/admin/list", http.HandlerFunc(h.adminList))
	mux.Handle("GET /dev/admin/inspect", http.HandlerFunc(h.adminInspect))
	mux.Handle("POST /dev/admin/stop", http.HandlerFunc(h.adminStop))
	mux.Handle("POST /dev/admin/revoke", http.HandlerFunc(h.adminRevoke))
}

func (h *Handler) adminList(w http.ResponseWriter, r *http.Request) {
	rows, err := h.Operator.List(r.Context(), ops.Filter{All: r.URL.Query().Get("all") == "true"})
	if err != nil {
		adminError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"sandboxes": rows})
}

func (h *Handler) adminInspect(w http.ResponseWriter, r *http.Request) {
	rep, err := h.Operator.Inspect(r.Context(), r.URL.Query().Get("userId"))
	if err != nil {
		adminError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, rep)
}

func (h *Handler) adminStop(w http.ResponseWriter, r *http.Request) {
	res, err := h.Operator.Stop(r.Context(), r.URL.Query().Get("userId"), false)
	if err != nil {
		adminError(w, err)
		return
	}
	writeJSON(w, http.StatusAccepted, res)
}

func (h *Handler) adminRevoke(w http.ResponseWriter, r *http.Request) {
	rev, err := h.Operator.Revoke(r.Context(), r.URL.Query().Get("userId"))
	if err != nil {
		adminError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, rev)
}

// adminError answers an operation's error with its message: 400 for a bad id, 404 for
// an unknown user, 409 for a user mid-start or mid-purge, 502 otherwise.
func adminError(w http.ResponseWriter, err error) {
	status := http.StatusBadGateway
	switch {
	case errors.Is(err, ops.ErrBadUserID):
		status = http.StatusBadRequest
	case errors.Is(err, ops.ErrUnknownUser):
		status = http.StatusNotFound
	case errors.Is(err, ops.ErrMidStart), errors.Is(err, ops.ErrMidPurge):
		status = http.StatusConflict
	}
	writeJSON(w, status, map[string]string{"error": err.Error()})
}
