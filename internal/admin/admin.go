package admin

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/sandgate/sandgate/internal/cleanup"
	"github.com/sandgate/sandgate/internal/launcher"
	"github.com/sandgate/sandgate/internal/objsync"
	"github.com/sandgate/sandgate/internal/relay"
	"github.com/sandgate/sandgate/internal/state"
	"github.com/sandgate/sandgate/internal/userid"
)

// Errors of the operations; each names what the operator can do about it.
var (
	// ErrBadUserID: the id fails the user-id rule every route applies.
	ErrBadUserID = errors.New("not a user id (user_ and 1-64 ASCII letters or digits)")
	// ErrUnknownUser: nothing is stored of the user.
	ErrUnknownUser = errors.New("unknown user: no record, connection or access item")
	// ErrMidStart: the user's sandbox is starting and no task is recorded for it yet.
	ErrMidStart = errors.New("sandbox is starting and names no task yet; try again in a few seconds")
	// ErrMidPurge: the user's data is being deleted (cleanup's purge, or another delete).
	ErrMidPurge = errors.New("user data is being purged")
	// ErrNotStopped: the sandbox did not stop within the wait.
	ErrNotStopped = errors.New("sandbox did not stop in time")
)

// Tasks is the part of the launcher the operations use; *launcher.Launcher is one.
type Tasks interface {
	List(ctx context.Context) ([]launcher.Task, error)
	ListStopped(ctx context.Context) ([]launcher.Task, error)
	Describe(ctx context.Context, arn string) (launcher.Task, error)
	Stop(ctx context.Context, arn, reason string) error
}

// Connections closes connections from the server side; *relay.Relay is one.
type Connections interface {
	Close(ctx context.Context, connectionID string) error
}

var (
	_ Tasks       = (*launcher.Launcher)(nil)
	_ Connections = (*relay.Relay)(nil)
)

// Defaults of Admin's tunables.
const (
	// DefaultPoll is the wait between two looks while waiting for a sandbox to stop.
	DefaultPoll = 500 * time.Millisecond
	// DefaultStopWait bounds a stop's wait: the task's stop timeout (120 s, the agent's
	// final sync within it) and the stop event's delivery.
	DefaultStopWait = 3 * time.Minute
	// DefaultRevokeSettle is how long a revocation keeps closing connections after its
	// first sweep: a connect authorized just before the revocation was written
	// records its connection within the authorizer's and Connect's run.
	DefaultRevokeSettle = 5 * time.Second
)

// Admin runs the operations. Store, Tasks, Bucket, Conns and Cleaner are required;
// set the tunables before first use.
type Admin struct {
	Store  *state.Store
	Tasks  Tasks
	Bucket objsync.Bucket
	Conns  Connections
	// Cleaner is the cleanup pass's code, whose Reconcile is the operator's reconcile.
	Cleaner *cleanup.Cleaner
	// Audit records who did what; nil records nothing.
	Audit *Audit
	Log   *slog.Logger
	// Now is the clock (time.Now when nil).
	Now func() time.Time
	// Poll, StopWait and RevokeSettle are DefaultPoll, DefaultStopWait and
	// DefaultRevokeSettle when zero.
	Poll, StopWait, RevokeSettle time.Duration
}

func (a *Admin) now() time.Time {
	if a.Now != nil {
		return a.Now()
	}
	return time.Now()
}

func (a *Admin) log() *slog.Logger {
	if a.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return a.Log
}

func orDefault(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}

// checkUser applies the user-id rule.
func checkUser(userID string) error {
	if !userid.Valid(userID) {
		if len(userID) > 80 {
			userID = userID[:80] + "…"
		}
		return fmt.Errorf("%q: %w", userID, ErrBadUserID)
	}
	return nil
}

// wait polls cond until it is true, ctx ends or d has passed (ErrNotStopped).
func (a *Admin) wait(ctx context.Context, d time.Duration, cond func() (bool, error)) error {
	deadline := time.Now().Add(d)
	poll := orDefault(a.Poll, DefaultPoll)
	for {
		ok, err := cond()
		if err != nil || ok {
			return err
		}
		if time.Now().After(deadline) {
			return ErrNotStopped
		}
		t := time.NewTimer(poll)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}
