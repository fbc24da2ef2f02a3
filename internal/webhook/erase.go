package webhook

import (
	"context"
	"fmt"
	"log/slog"

	ops "github.com/sandgate/sandgate/internal/admin"
	"github.com/sandgate/sandgate/internal/cleanup"
	"github.com/sandgate/sandgate/internal/logging"
	"github.com/sandgate/sandgate/internal/userid"
)

// Deleter deletes a user; *admin.Admin is one.
type Deleter interface {
	DeleteUser(ctx context.Context, userID string) (*ops.Deletion, error)
}

// EraseHandler is the erase function: the operator's delete-user, run for the
// identity provider. A failure returns the error, so Lambda runs the event again
// (delete-user resumes where it stopped).
type EraseHandler struct {
	Admin Deleter
	Log   *slog.Logger
}

// Handle deletes req.UserID.
func (h *EraseHandler) Handle(ctx context.Context, req EraseRequest) error {
	if !userid.Valid(req.UserID) {
		// Nothing to retry: the webhook checked it, so this event came from elsewhere.
		h.Log.ErrorContext(ctx, "erase refused: not a user id", logging.Reason, "bad_user_id")
		return nil
	}
	d, err := h.Admin.DeleteUser(ctx, req.UserID)
	if err != nil {
		return fmt.Errorf("erase %s (webhook %s): %w", req.UserID, req.WebhookID, err)
	}
	h.Log.InfoContext(ctx, "user erased", logging.UserID, req.UserID, logMessageID, req.WebhookID,
		"deletedObjects", d.DeletedObjects, "deletedItems", d.DeletedItems)
	return nil
}

// LoadEraseConfig reads the erase function's configuration: the Cleanup function's
// (table, cluster, bucket and storage, management endpoint), whose clients it builds.
var LoadEraseConfig = cleanup.LoadConfig

// EraseOptional lists the variables LoadEraseConfig reads that have defaults.
var EraseOptional = cleanup.Optional
