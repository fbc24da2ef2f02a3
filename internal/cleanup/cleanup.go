package cleanup

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/sandgate/sandgate/internal/backup"
	"github.com/sandgate/sandgate/internal/frames"
	"github.com/sandgate/sandgate/internal/launcher"
	"github.com/sandgate/sandgate/internal/logging"
	"github.com/sandgate/sandgate/internal/metrics"
	"github.com/sandgate/sandgate/internal/objsync"
	"github.com/sandgate/sandgate/internal/relay"
	"github.com/sandgate/sandgate/internal/state"
	"github.com/sandgate/sandgate/internal/userid"
)

// Log keys of this package; the shared ones come from internal/logging. The summary's
// keys are the Summary's JSON names.
const (
	logLive         = "liveSandboxes"
	logCapacity     = "capacityCounter"
	logReaped       = "reaped"
	logOrphans      = "orphans"
	logPurged       = "purged"
	logWouldPurge   = "wouldPurge"
	logErrors       = "errors"
	logDryRun       = "dryRun"
	logDeleted      = "deleted"      // keys a purge deleted
	logLastActivity = "lastActivity" // a user's last activity
	logPrefix       = "prefix"       // a user's storage prefix
	logCreatedAt    = "createdAt"    // when a task was created
	logPurgeStarted = "purgeStarted" // when an unfinished purge began deleting
	logCorrections  = "capacityCorrections"
	logGeneration   = "generation"
	logStoppedAt    = "stoppedAt"    // when a record became STOPPED
	logSlotsHeld    = "slotsHeld"    // records that hold a capacity slot
	logDrift        = "counterDrift" // slots held minus the counter
	logPoolID       = "poolId"       // a warm pool task's id
	logBackfilled   = "backfilled"   // records given the index key
)

// DefaultOrphanGrace is how old a task must be before cleanup may call it an orphan: a
// task just launched has no ARN in its record until the launcher's SetTask lands.
const DefaultOrphanGrace = 2 * time.Minute

// DefaultStopEventGrace is how long a STOPPED record keeps its task's capacity slot,
// while ECS runs no such task, before cleanup calls the task's stop event lost and
// gives the slot back itself: EventBridge delivers within seconds, and a late event
// finds the slot given back and changes nothing.
const DefaultStopEventGrace = 2 * time.Minute

// Store is the part of the state store the Cleaner uses.
type Store interface {
	// ListSandboxesIndexed reads the sandbox records from the Sandboxes index, the
	// leases whole (state.Store.ListSandboxesIndexed); BackfillSandboxIndex puts the
	// records written before the index into it.
	ListSandboxesIndexed(ctx context.Context, fn func(*state.Sandbox) error) error
	BackfillSandboxIndex(ctx context.Context) (state.Backfill, error)
	Get(ctx context.Context, userID string) (*state.Sandbox, error)
	Reap(ctx context.Context, sb *state.Sandbox) error
	Capacity(ctx context.Context) (int, error)
	ReturnSlot(ctx context.Context, userID string, generation int64) (bool, error)
	ReconcileCapacity(ctx context.Context) (state.CapacityCheck, error)
	Connections(ctx context.Context, userID string) ([]state.Connection, error)
	AcquirePurgeIfInactive(ctx context.Context, userID string, cutoff time.Time) (state.Lease, error)
	// The warm pool's items and claims.
	PoolTasks(ctx context.Context) ([]state.PoolTask, error)
	PoolClaimOf(ctx context.Context, id string) (*state.PoolClaim, error)
	RemovePool(ctx context.Context, id, reason string) (bool, error)
	BeginPurge(ctx context.Context, l state.Lease) error
	ReleasePurge(ctx context.Context, l state.Lease) error
	FinishPurge(ctx context.Context, l state.Lease) error
}

// Tasks lists and stops sandbox tasks; *launcher.Launcher is one.
type Tasks interface {
	List(ctx context.Context) ([]launcher.Task, error)
	Stop(ctx context.Context, arn, reason string) error
}

// Broadcaster posts to every connection of a user; *relay.Relay is one.
type Broadcaster interface {
	Broadcast(ctx context.Context, userID string, data []byte) (int, error)
}

var (
	_ Store       = (*state.Store)(nil)
	_ Tasks       = (*launcher.Launcher)(nil)
	_ Broadcaster = (*relay.Relay)(nil)
)

// Cleaner runs one cleanup pass.
type Cleaner struct {
	Store   Store
	Tasks   Tasks
	Bucket  objsync.Bucket
	Relay   Broadcaster
	Metrics *metrics.Emitter
	Log     *slog.Logger
	// Now is the clock leases and inactivity are judged by (time.Now when nil).
	Now func() time.Time
	// Stage is the metrics' dimension.
	Stage string
	// Retention is how long a user may be inactive before their data is purged.
	Retention time.Duration
	// DryRun reports the users it would purge and deletes nothing. Reaping and
	// orphan stopping still happen: they only free what is already dead.
	DryRun bool
	// OrphanGrace is DefaultOrphanGrace when zero; negative means none.
	OrphanGrace time.Duration
	// StopEventGrace is DefaultStopEventGrace when zero; negative means none.
	StopEventGrace time.Duration
	// Backups, when set, is the backup step (backups.go); nil backs nothing up.
	Backups *backup.Pass
}

// Summary is what one pass did; the function returns it and logs it on one line.
type Summary struct {
	// Live is the number of live sandboxes after the pass.
	Live int `json:"liveSandboxes"`
	// Capacity is the capacity counter as read at the end (-1 if it could not be read).
	Capacity int `json:"capacityCounter"`
	Reaped   int `json:"reaped"`
	Orphans  int `json:"orphans"`
	Purged   int `json:"purged"`
	// WouldPurge counts the users a dry run found eligible.
	WouldPurge int `json:"wouldPurge"`
	// Corrections counts the capacity slots the pass put right: slots given back for
	// tasks whose stop event never came, plus how far it moved the counter to match
	// the records (Reconciliation). Any is worth an alarm: something lost an event or
	// broke the counter's arithmetic.
	Corrections int  `json:"capacityCorrections"`
	Errors      int  `json:"errors"`
	DryRun      bool `json:"dryRun"`
	// Backups is what the backup step did (nil without one).
	Backups *backup.Summary `json:"backups,omitempty"`
}

// Handle runs one pass. EventBridge Scheduler sends {}; any JSON is accepted.
func (c *Cleaner) Handle(ctx context.Context, _ json.RawMessage) (Summary, error) {
	return c.Run(ctx)
}

func (c *Cleaner) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

// pass is the state of one Run.
type pass struct {
	sum  Summary
	errs []error
	// live maps users with a live lease to their record.
	live map[string]*state.Sandbox
	// purges are the records to purge: stale PURGING locks to resume first (they
	// refuse their user's starts), then STOPPED records past the retention.
	purges, inactive []*state.Sandbox
	// slotted are STOPPED records that still hold their task's capacity slot.
	slotted []*state.Sandbox
	// tasks are ECS's sandbox tasks, as stopOrphans listed them; listed reports that
	// the listing succeeded.
	tasks  []launcher.Task
	listed bool
	// pool is the warm pool's items by id, as stopOrphans read them; nil when they
	// could not be read (then no pool task is judged).
	pool map[string]state.PoolTask
	// cutoff is now minus the retention: activity before it is old enough to purge.
	cutoff time.Time
	// users are the users the backup step considers: a live sandbox, or a record
	// active within BackupLookback, never a PURGING one; purged are those whose data
	// this pass deleted.
	users, purged []string
}

func (p *pass) fail(err error) {
	p.sum.Errors++
	p.errs = append(p.errs, err)
}

// Run reaps, stops orphans, gives back the slots of tasks whose stop event never came,
// purges and reconciles the capacity counter, then logs one summary line and emits
// the metrics (LiveSandboxes, Reaped, Orphans, Purged, CapacityCorrections). It keeps
// going past failures and returns them joined, so the function's Errors metric
// notices.
func (c *Cleaner) Run(ctx context.Context) (Summary, error) {
	start := time.Now()
	now := c.now()
	p := &pass{live: map[string]*state.Sandbox{}, sum: Summary{DryRun: c.DryRun, Capacity: -1}, cutoff: now.Add(-c.Retention)}
	c.backfill(ctx, p)
	err := c.Store.ListSandboxesIndexed(ctx, func(sb *state.Sandbox) error {
		if sb.State != state.Purging && (sb.Live(now) || recentlyActive(sb, now.Add(-BackupLookback))) {
			p.users = append(p.users, sb.UserID)
		}
		switch {
		case sb.Expired(now):
			c.reap(ctx, p, sb)
		case sb.Live(now):
			p.live[sb.UserID] = sb
		case sb.StalePurge(now):
			// Whatever the retention: deletion may have begun, and only a resumed
			// purge can end the lock.
			p.purges = append(p.purges, sb)
		case sb.State == state.Stopped && sb.HoldsSlot():
			// Not purged while its slot is held: its task has not been seen to stop.
			p.slotted = append(p.slotted, sb)
		case sb.State == state.Stopped && isInactive(sb, p.cutoff):
			// From the index a STOPPED record has no LastActivity (a heartbeat writes
			// it, and the index leaves it out so a heartbeat writes the table alone):
			// the judgement is then its stop's time, never before its last activity,
			// which no write moves while STOPPED. AcquirePurgeIfInactive applies
			// the full rule to the current record.
			p.inactive = append(p.inactive, sb)
		}
		return ctx.Err()
	})
	if err != nil {
		p.fail(fmt.Errorf("list sandboxes: %w", err))
	}
	p.sum.Live = len(p.live)
	c.stopOrphans(ctx, p)
	c.returnLostSlots(ctx, p)
	for _, sb := range append(p.purges, p.inactive...) {
		if ctx.Err() != nil {
			p.fail(ctx.Err())
			break
		}
		c.purge(ctx, p, sb)
	}
	c.reconcileCounter(ctx, p)
	c.backups(ctx, p)
	if n, err := c.Store.Capacity(ctx); err == nil {
		p.sum.Capacity = n
	} else {
		p.fail(err)
	}
	c.Log.InfoContext(ctx, "cleanup done", logLive, p.sum.Live, logCapacity, p.sum.Capacity,
		logReaped, p.sum.Reaped, logOrphans, p.sum.Orphans, logPurged, p.sum.Purged, logWouldPurge, p.sum.WouldPurge,
		logCorrections, p.sum.Corrections,
		logErrors, p.sum.Errors, logDryRun, c.DryRun, logging.Duration, time.Since(start).Milliseconds())
	if err := c.Metrics.Emit(c.Stage,
		metrics.Value{Name: metrics.LiveSandboxes, Value: float64(p.sum.Live)},
		metrics.Value{Name: metrics.Reaped, Value: float64(p.sum.Reaped)},
		metrics.Value{Name: metrics.Orphans, Value: float64(p.sum.Orphans)},
		metrics.Value{Name: metrics.Purged, Value: float64(p.sum.Purged)},
		metrics.Value{Name: metrics.CapacityCorrections, Value: float64(p.sum.Corrections)},
	); err != nil {
		p.fail(err)
	}
	if len(p.errs) > 0 {
		return p.sum, fmt.Errorf("cleanup: %d failures: %w", len(p.errs), errors.Join(p.errs...))
	}
	return p.sum, nil
}

// BackupLookback is how long after its last sign of life a user's prefix is still
// checked for a backup: a sandbox's final sync precedes its STOPPED record's state
// time, so a day covers every sync with room for passes deferred or busy. Past it an
// idle user costs no request at all.
const BackupLookback = 24 * time.Hour

// recentlyActive reports whether the record shows activity, a heartbeat or a state
// change since since. A STOPPED record as the Sandboxes index projects it carries its
// state time alone, which is the one that counts: the stop follows the final sync.
func recentlyActive(sb *state.Sandbox, since time.Time) bool {
	return sb.LastActivity.After(since) || sb.StateSince.After(since) || sb.HeartbeatAt.After(since)
}

// backfill puts the records written before the Sandboxes index into it, until the
// store says the backfill is over (one GetItem a pass from then on).
func (c *Cleaner) backfill(ctx context.Context, p *pass) {
	b, err := c.Store.BackfillSandboxIndex(ctx)
	if err != nil {
		p.fail(err)
		c.Log.ErrorContext(ctx, "sandbox index backfill failed", logging.Error, err.Error())
		return
	}
	if b.Added > 0 {
		c.Log.WarnContext(ctx, "sandbox records written before the index put into it", logBackfilled, b.Added)
	}
}

// isInactive applies the rule AcquirePurgeIfInactive's condition applies again to the
// current record: last activity, or without one the state's start, before cutoff.
func isInactive(sb *state.Sandbox, cutoff time.Time) bool {
	last := sb.LastActivity
	if last.IsZero() {
		last = sb.StateSince
	}
	return !last.IsZero() && last.Before(cutoff)
}

// reap stops a sandbox whose holder is presumed dead: the record first (conditional
// on the lease still being expired, so a holder that just renewed keeps it), then its
// task, then its clients are told. Purge locks are never reaped (see purge).
func (c *Cleaner) reap(ctx context.Context, p *pass, sb *state.Sandbox) {
	log := c.Log.With(logging.UserID, sb.UserID)
	err := c.Store.Reap(ctx, sb)
	switch {
	case errors.Is(err, state.ErrHeld):
		var held *state.HeldError
		if errors.As(err, &held) && held.Sandbox.Live(c.now()) {
			p.live[sb.UserID] = held.Sandbox // renewed since the scan
		}
		return
	case errors.Is(err, state.ErrLeaseLost):
		return // taken over since the scan: someone else's sandbox now
	case err != nil:
		p.fail(err)
		log.ErrorContext(ctx, "reap failed", logging.Error, err.Error())
		return
	}
	// The store logged the reap itself; what follows are events of their own.
	p.sum.Reaped++
	if sb.TaskARN != "" {
		if err := c.Tasks.Stop(ctx, sb.TaskARN, "sandgate: lease expired"); err != nil {
			// The record is STOPPED already; the task is an orphan the next pass stops.
			p.fail(err)
			log.ErrorContext(ctx, "stop reaped task failed", logging.TaskARN, sb.TaskARN, logging.Error, err.Error())
		} else {
			log.InfoContext(ctx, "reaped sandbox's task stopped", logging.TaskARN, sb.TaskARN)
		}
	}
	// Its clients would otherwise hear nothing until their next frame starts a new one.
	if _, err := c.Relay.Broadcast(ctx, sb.UserID, frames.Status(frames.Stopping).Bytes()); err != nil {
		log.WarnContext(ctx, "tell clients of reaped sandbox failed", logging.Error, err.Error())
	}
}

// stopOrphans stops tasks that no live lease names. A task younger than the grace
// period is left alone (its launcher may not have recorded it yet), and so is one whose
// user's live lease names no task yet.
func (c *Cleaner) stopOrphans(ctx context.Context, p *pass) {
	tasks, err := c.Tasks.List(ctx)
	if err != nil {
		p.fail(err)
		c.Log.ErrorContext(ctx, "list tasks failed", logging.Error, err.Error())
		return
	}
	p.tasks, p.listed = tasks, true
	if items, err := c.Store.PoolTasks(ctx); err != nil {
		p.fail(err)
		c.Log.ErrorContext(ctx, "list pool tasks failed", logging.Error, err.Error())
	} else {
		p.pool = make(map[string]state.PoolTask, len(items))
		for _, it := range items {
			p.pool[it.ID] = it
		}
	}
	grace := c.OrphanGrace
	if grace == 0 {
		grace = DefaultOrphanGrace
	}
	for _, t := range tasks {
		if t.Stopped() || time.Since(t.CreatedAt) < grace {
			continue
		}
		if t.PoolID != "" {
			c.judgePoolTask(ctx, p, t)
			continue
		}
		if owns(p.live[t.UserID], t.ARN, c.now()) {
			continue
		}
		// The scan is eventually consistent and older than this task list: read the
		// record once more before stopping anything.
		if t.UserID != "" {
			sb, err := c.Store.Get(ctx, t.UserID)
			if err != nil && !errors.Is(err, state.ErrNotFound) {
				p.fail(err)
				continue
			}
			if owns(sb, t.ARN, c.now()) {
				continue
			}
		}
		if err := c.Tasks.Stop(ctx, t.ARN, "sandgate: orphan, no live lease names this task"); err != nil {
			p.fail(err)
			c.Log.ErrorContext(ctx, "stop orphan failed", logging.UserID, t.UserID, logging.TaskARN, t.ARN, logging.Error, err.Error())
			continue
		}
		p.sum.Orphans++
		c.Log.WarnContext(ctx, "orphan task stopped", logging.UserID, t.UserID, logging.TaskARN, t.ARN, logCreatedAt, t.CreatedAt)
	}
}

// judgePoolTask stops a warm pool task that nothing keeps: one whose pool item is
// gone and whose claim names no live lease of that task (an item drained whose stop
// failed is stopped again). A waiting or launching one is the pool's.
func (c *Cleaner) judgePoolTask(ctx context.Context, p *pass, t launcher.Task) {
	if p.pool == nil {
		return
	}
	reason := "sandgate: orphan pool task, no pool item or live claim names it"
	if it, ok := p.pool[t.PoolID]; ok {
		if it.State != state.PoolDraining {
			return
		}
		reason = "sandgate: pool drain: " + it.Reason
	} else {
		claim, err := c.Store.PoolClaimOf(ctx, t.PoolID)
		switch {
		case err == nil:
			sb, err := c.Store.Get(ctx, claim.UserID)
			if err != nil && !errors.Is(err, state.ErrNotFound) {
				p.fail(err)
				return
			}
			if owns(sb, t.ARN, c.now()) {
				return
			}
		case !errors.Is(err, state.ErrNotFound):
			p.fail(err)
			return
		}
	}
	if err := c.Tasks.Stop(ctx, t.ARN, reason); err != nil {
		p.fail(err)
		c.Log.ErrorContext(ctx, "stop orphan pool task failed", logging.TaskARN, t.ARN, logPoolID, t.PoolID, logging.Error, err.Error())
		return
	}
	p.sum.Orphans++
	c.Log.WarnContext(ctx, "orphan pool task stopped", logging.TaskARN, t.ARN, logPoolID, t.PoolID, logging.Reason, reason)
}

// owns reports whether sb is a live lease that names the task, or names none yet.
func owns(sb *state.Sandbox, arn string, now time.Time) bool {
	return sb.Live(now) && (sb.TaskARN == arn || sb.TaskARN == "")
}

// purge deletes an inactive user's data under the purge lock: no sandbox can start
// (and restore) while the prefix is half deleted, and a user with a connection is
// left alone. sb is either a STOPPED record past the retention or a stale purge lock
// to resume.
//
// The lock has two exits only. Before the first delete, BeginPurge marks the record;
// until then a returning user gets the data back (ReleasePurge), after it the purge
// must be finished (FinishPurge once the prefix is gone). A purge that fails partway
// (a delete error, the function's timeout) leaves the lock, which refuses starts
// even once expired, and the next pass retakes it and resumes here.
func (c *Cleaner) purge(ctx context.Context, p *pass, sb *state.Sandbox) {
	log := c.Log.With(logging.UserID, sb.UserID)
	prefix, err := objsync.UserPrefix(sb.UserID)
	if err != nil || !userid.Valid(sb.UserID) {
		p.fail(fmt.Errorf("purge: record with user id %q: %w", sb.UserID, err))
		return
	}
	resume := sb.State == state.Purging
	if !resume {
		// Cheap early exit before any write; the check after the lock decides.
		if connected, err := c.connected(ctx, sb.UserID); err != nil || connected {
			if err != nil {
				p.fail(err)
			}
			return
		}
	}
	if c.DryRun {
		p.sum.WouldPurge++
		msg := "would purge user data (dry run)"
		if resume {
			msg = "would resume an unfinished purge (dry run)"
		}
		log.InfoContext(ctx, msg, logLastActivity, sb.LastActivity, logPrefix, prefix)
		return
	}
	lease, err := c.Store.AcquirePurgeIfInactive(ctx, sb.UserID, p.cutoff)
	var active *state.ActiveError
	switch {
	case errors.As(err, &active):
		// Active since the scan (the scan is older and eventually consistent).
		log.InfoContext(ctx, "user active since the scan; not purged",
			logging.Reason, state.ErrActive.Error(), logLastActivity, active.Sandbox.LastActivity)
		return
	case errors.Is(err, state.ErrHeld), errors.Is(err, state.ErrPurging), errors.Is(err, state.ErrNotFound):
		return // started, being purged, or purged since the scan
	case err != nil:
		p.fail(err)
		log.ErrorContext(ctx, "purge lock failed", logging.Error, err.Error())
		return
	}
	if resume {
		log.WarnContext(ctx, "resuming an unfinished purge", logPurgeStarted, sb.PurgeStarted)
	}
	// A connection that arrived before the lock (its start now refused) means the
	// user is back. Before any delete, they keep the data: the lock goes back at
	// once, with their return recorded as activity so later passes leave them be.
	connected, err := c.connected(ctx, sb.UserID)
	if err != nil {
		// Nothing deleted, the lock stays: the next pass retakes it and asks again.
		p.fail(err)
		return
	}
	if connected {
		err := c.Store.ReleasePurge(ctx, lease)
		switch {
		case err == nil:
			log.WarnContext(ctx, "user connected during purge; data kept, lock released", logging.Reason, state.ReasonPurgeReleased)
			return
		case errors.Is(err, state.ErrPurgeStarted):
			// Part of the prefix is gone already: giving it back would restore a
			// half-deleted workspace. Finish, and the user starts afresh.
			log.WarnContext(ctx, "user connected during an unfinished purge; deletion had begun, finishing it",
				logging.Reason, state.ErrPurgeStarted.Error())
		default:
			p.fail(err)
			log.ErrorContext(ctx, "release purge failed", logging.Error, err.Error())
			return
		}
	}
	if err := c.Store.BeginPurge(ctx, lease); err != nil {
		// Lost the lock (a later pass took it over) or DynamoDB failed: delete nothing.
		p.fail(err)
		log.ErrorContext(ctx, "begin purge failed", logging.Error, err.Error())
		return
	}
	n, err := objsync.DeletePrefix(ctx, c.Bucket, prefix)
	if err != nil {
		// The lock stays and keeps refusing starts; the next pass after it expires
		// retakes it and finishes the deletion.
		p.fail(err)
		log.ErrorContext(ctx, "purge failed; the next pass resumes it", logDeleted, n, logging.Error, err.Error())
		return
	}
	if err := c.Store.FinishPurge(ctx, lease); err != nil {
		p.fail(err)
		log.ErrorContext(ctx, "finish purge failed", logDeleted, n, logging.Error, err.Error())
		return
	}
	p.sum.Purged++
	p.purged = append(p.purged, sb.UserID)
	log.InfoContext(ctx, "user data purged", logDeleted, n, logLastActivity, sb.LastActivity, logPrefix, prefix)
}

func (c *Cleaner) connected(ctx context.Context, userID string) (bool, error) {
	conns, err := c.Store.Connections(ctx, userID)
	if err != nil {
		return false, fmt.Errorf("purge %s: %w", userID, err)
	}
	return len(conns) > 0, nil
}
