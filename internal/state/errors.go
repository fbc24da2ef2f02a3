package state

import (
	"errors"
	"fmt"
	"time"
)

// Sentinel errors; match them with errors.Is. Where a caller needs data, the error is
// a struct (HeldError, LeaseLostError, CapacityError, InboxFullError, RunningError,
// ActiveError, UnavailableError) that matches its sentinel.
var (
	// ErrInvalid: bad input (empty ids, zero lease); nothing was written.
	ErrInvalid = errors.New("invalid input")
	// ErrNotFound: no such record.
	ErrNotFound = errors.New("not found")
	// ErrHeld: another caller holds a live lease on the user's sandbox.
	ErrHeld = errors.New("sandbox lease held")
	// ErrPurging: cleanup holds the user's lock while it deletes data.
	ErrPurging = errors.New("user data is being purged")
	// ErrPurgeStarted: the purge has begun deleting, so its lock cannot be released
	// (the data would come back half deleted); the purge must be finished.
	ErrPurgeStarted = errors.New("purge has begun deleting data")
	// ErrActive: the user was active after the purge's cutoff, so is not purged.
	ErrActive = errors.New("user active since the purge cutoff")
	// ErrCapacity: MaxSandboxes are live.
	ErrCapacity = errors.New("sandbox capacity reached")
	// ErrLeaseLost: the caller's lease token is no longer the record's; nothing was written.
	ErrLeaseLost = errors.New("lease lost")
	// ErrState: the caller holds the lease but the sandbox's state forbids the change
	// (for example MarkReady after MarkStopping).
	ErrState = errors.New("sandbox state forbids this change")
	// ErrInboxFull: the user's inbox is at its item or byte bound.
	ErrInboxFull = errors.New("inbox full")
	// ErrTooLarge: one message is larger than Store.MaxMessageBytes.
	ErrTooLarge = errors.New("message too large")
	// ErrRunning: the sandbox is RUNNING, so a message must go to it directly rather
	// than to the inbox, which the agent drained when it became ready.
	ErrRunning = errors.New("sandbox is running")
	// ErrContention: write conflicts persisted through every retry.
	ErrContention = errors.New("too much write contention")
	// ErrUnavailable: DynamoDB could not be reached or kept failing after the SDK's
	// retries; the operation may be retried.
	ErrUnavailable = errors.New("dynamodb unavailable")
)

// HeldError is returned when another caller holds a live lease; Sandbox is the
// holder's record as DynamoDB returned it, so the caller can use the winner's sandbox
// without another read.
type HeldError struct{ Sandbox *Sandbox }

func (e *HeldError) Error() string {
	return fmt.Sprintf("sandbox lease held: %s, generation %d, until %s",
		e.Sandbox.State, e.Sandbox.Generation, e.Sandbox.LeaseDeadline.UTC().Format(time.RFC3339Nano))
}

// Is matches ErrHeld.
func (e *HeldError) Is(target error) bool { return target == ErrHeld }

// LeaseLostError is returned by a fenced write whose token is stale; Current is the
// record as it is now (nil when it no longer exists).
type LeaseLostError struct{ Current *Sandbox }

func (e *LeaseLostError) Error() string {
	if e.Current == nil {
		return "lease lost: no sandbox record"
	}
	return fmt.Sprintf("lease lost: record is %s at generation %d", e.Current.State, e.Current.Generation)
}

// Is matches ErrLeaseLost.
func (e *LeaseLostError) Is(target error) bool { return target == ErrLeaseLost }

// CapacityError is returned when admission fails: Live sandboxes of Max.
type CapacityError struct{ Live, Max int }

func (e *CapacityError) Error() string {
	return fmt.Sprintf("sandbox capacity reached: %d of %d live", e.Live, e.Max)
}

// Is matches ErrCapacity.
func (e *CapacityError) Is(target error) bool { return target == ErrCapacity }

// InboxFullError is returned when a message would exceed the inbox bounds.
type InboxFullError struct {
	Items, Bytes       int // in the inbox now
	MaxItems, MaxBytes int
}

func (e *InboxFullError) Error() string {
	return fmt.Sprintf("inbox full: %d of %d items, %d of %d bytes", e.Items, e.MaxItems, e.Bytes, e.MaxBytes)
}

// Is matches ErrInboxFull.
func (e *InboxFullError) Is(target error) bool { return target == ErrInboxFull }

// RunningError is returned by Enqueue when the sandbox is RUNNING; Sandbox is its
// record, endpoint included.
type RunningError struct{ Sandbox *Sandbox }

func (e *RunningError) Error() string {
	return fmt.Sprintf("sandbox is running (generation %d)", e.Sandbox.Generation)
}

// Is matches ErrRunning.
func (e *RunningError) Is(target error) bool { return target == ErrRunning }

// ActiveError is returned by AcquirePurgeIfInactive when the record shows activity
// at or after Cutoff: the user came back after cleanup's scan judged them inactive.
// Sandbox is the record as DynamoDB returned it.
type ActiveError struct {
	Sandbox *Sandbox
	Cutoff  time.Time
}

func (e *ActiveError) Error() string {
	return fmt.Sprintf("user active since the purge cutoff %s: %s since %s, last activity %s",
		e.Cutoff.UTC().Format(time.RFC3339), e.Sandbox.State,
		e.Sandbox.StateSince.UTC().Format(time.RFC3339), e.Sandbox.LastActivity.UTC().Format(time.RFC3339))
}

// Is matches ErrActive.
func (e *ActiveError) Is(target error) bool { return target == ErrActive }

// UnavailableError wraps the transport or service error behind ErrUnavailable.
type UnavailableError struct{ Err error }

func (e *UnavailableError) Error() string { return "dynamodb unavailable: " + e.Err.Error() }

// Is matches ErrUnavailable.
func (e *UnavailableError) Is(target error) bool { return target == ErrUnavailable }

// Unwrap returns the cause.
func (e *UnavailableError) Unwrap() error { return e.Err }
