package agent

import (
	"context"
	"time"

	"github.com/sandgate/sandgate/internal/state"
)

// LeaseStore is what the agent does with its lease. Every call writes the user's own
// record only: Stop and Abort leave the capacity slot to the task's stop event, so the
// agent never writes the capacity counter.
type LeaseStore interface {
	Get(ctx context.Context, userID string) (*state.Sandbox, error)
	Heartbeat(ctx context.Context, l state.Lease, lastActivity time.Time) (state.Lease, error)
	MarkReady(ctx context.Context, l state.Lease, endpoint, gatewayToken string) (state.Lease, error)
	// RecordSync records the durability receipt of a completed sync on the record.
	RecordSync(ctx context.Context, l state.Lease, r state.SyncReceipt) error
	MarkStopping(ctx context.Context, l state.Lease) error
	Stop(ctx context.Context, l state.Lease) error
	Abort(ctx context.Context, l state.Lease, reason string) error
}

// ConnStore is what the agent does with the user's connection records.
type ConnStore interface {
	Connections(ctx context.Context, userID string) ([]state.Connection, error)
	RemoveConnection(ctx context.Context, userID, connectionID string) error
}

// InboxStore is what the agent does with the frames queued while it started.
type InboxStore interface {
	Inbox(ctx context.Context, userID string) ([]state.InboxItem, error)
	Ack(ctx context.Context, it state.InboxItem) error
}

// Store is every state call the agent makes; *state.Store implements it.
type Store interface {
	LeaseStore
	ConnStore
	InboxStore
}

var _ Store = (*state.Store)(nil)
