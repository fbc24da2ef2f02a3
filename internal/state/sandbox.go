package state

import (
	"log/slog"
	"time"

	"github.com/sandgate/sandgate/internal/logging"
)

// Log keys of this package; the shared ones come from internal/logging.
const (
	logGeneration = "generation"
	logDeadline   = "leaseDeadline"
	logOp         = "op"
	logSlot       = "slot"
	logCounter    = "capacityCounter"
	logHeld       = "slotsHeld"
)

// State is where a user's sandbox is in its life.
type State string

// The states of a sandbox record. STARTING, RUNNING and STOPPING always hold a slot of
// the capacity counter; a STOPPED record may still hold its task's slot until the task
// is seen to stop (Sandbox.Slot); PURGING never holds one.
const (
	Stopped  State = "STOPPED"
	Starting State = "STARTING"
	Running  State = "RUNNING"
	Stopping State = "STOPPING"
	// Purging is cleanup's lock while it deletes a user's data. No start is admitted
	// while it exists, expired or not: a purge that died may have deleted part of the
	// prefix. It ends only by ReleasePurge (before any delete) or FinishPurge (after
	// the prefix is gone); an expired one is retaken by AcquirePurge and resumed.
	Purging State = "PURGING"
)

// Counted reports whether a record in this state is a lease that holds a capacity
// slot (see Sandbox.HoldsSlot for the records that hold one).
func (s State) Counted() bool { return s == Starting || s == Running || s == Stopping }

// Sandbox is a user's sandbox record: the lease and what its holder has published.
type Sandbox struct {
	UserID string
	State  State
	// LeaseToken is the fencing token: every write by the holder is conditional on it.
	LeaseToken    string
	LeaseDeadline time.Time
	// Generation increases on every acquisition and takeover (never reused while the
	// record exists), so a restore can tell a stale writer's marker from the current.
	Generation int64
	TaskARN    string
	// Endpoint and GatewayToken reach the agent; set by MarkReady.
	Endpoint     string
	GatewayToken string
	HeartbeatAt  time.Time
	LastActivity time.Time
	StateSince   time.Time
	// Reason says why the sandbox last stopped (Release, Stop, Reap, ReleasePurge).
	Reason string
	// PurgeStarted is when a purge began deleting the user's data (BeginPurge); zero
	// before. Once set, the PURGING lock can only be finished, never released.
	PurgeStarted time.Time
	// Slot is the generation whose task holds the record's capacity slot, 0 when the
	// record holds none. Acquire sets it to the new generation (a fresh start takes a
	// slot of the counter; a takeover, or a start over a STOPPED record whose task has
	// not yet been seen to stop, takes the record's slot over). It stays through the
	// holder's own Stop, and is cleared in the same transaction that gives the slot
	// back to the counter: by TaskStopped (the task's stop event), Reap, Release or
	// ReturnSlot (cleanup, for a stop event that never came), whichever is first.
	Slot int64
	// Warm reports that the lease's task came from the warm pool (AcquireClaim) rather
	// than a launch of its own.
	Warm bool
	// LastSync is the receipt of the user's last completed sync (RecordSync), nil
	// before the first one.
	LastSync *SyncReceipt
	// Version increases on every write to the record.
	Version int64
}

// HoldsSlot reports whether the record holds a capacity slot: it is a lease (STARTING,
// RUNNING, STOPPING; a record written before slots were recorded holds one there too),
// or it is STOPPED and its task's stop has not yet given the slot back. The capacity
// counter equals the number of records that hold a slot.
func (sb *Sandbox) HoldsSlot() bool {
	return sb != nil && (sb.State.Counted() || sb.State == Stopped && sb.Slot != 0)
}

// Live reports whether the record holds an unexpired lease on a counted state, that
// is, whether a sandbox is (or may still be) running for the user.
func (sb *Sandbox) Live(now time.Time) bool {
	return sb != nil && sb.State.Counted() && now.Before(sb.LeaseDeadline)
}

// Expired reports whether the record holds a counted lease whose deadline has
// passed: its holder is presumed dead and the lease may be taken over or reaped. A
// PURGING lock is never Expired in this sense, since its data may be half deleted:
// see StalePurge.
func (sb *Sandbox) Expired(now time.Time) bool {
	return sb != nil && sb.State.Counted() && !now.Before(sb.LeaseDeadline)
}

// StalePurge reports whether the record is a PURGING lock past its deadline: the
// purge that took it died or timed out, perhaps halfway through the prefix. Starts
// still refuse it; the next cleanup pass retakes it (AcquirePurge) and resumes.
func (sb *Sandbox) StalePurge(now time.Time) bool {
	return sb != nil && sb.State == Purging && !now.Before(sb.LeaseDeadline)
}

// Lease returns the lease the record describes.
func (sb *Sandbox) Lease() Lease {
	return Lease{UserID: sb.UserID, Token: sb.LeaseToken, Generation: sb.Generation, Deadline: sb.LeaseDeadline}
}

// LogValue leaves the lease and gateway tokens out of logs.
func (sb *Sandbox) LogValue() slog.Value {
	if sb == nil {
		return slog.StringValue("none")
	}
	return slog.GroupValue(
		slog.String(logging.UserID, sb.UserID),
		slog.String(logging.State, string(sb.State)),
		slog.Int64(logGeneration, sb.Generation),
		slog.Time(logDeadline, sb.LeaseDeadline),
		slog.String(logging.TaskARN, sb.TaskARN),
		slog.Int64(logSlot, sb.Slot),
	)
}

// Lease is a held sandbox lease. It is a value: Heartbeat and MarkReady return the
// renewed lease rather than changing this one.
type Lease struct {
	UserID     string
	Token      string
	Generation int64
	Deadline   time.Time
}

// LogValue leaves the token out of logs.
func (l Lease) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String(logging.UserID, l.UserID),
		slog.Int64(logGeneration, l.Generation),
		slog.Time(logDeadline, l.Deadline),
	)
}
