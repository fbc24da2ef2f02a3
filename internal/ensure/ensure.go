package ensure

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/sandgate/sandgate/internal/agentapi"
	"github.com/sandgate/sandgate/internal/frames"
	"github.com/sandgate/sandgate/internal/launcher"
	"github.com/sandgate/sandgate/internal/logging"
	"github.com/sandgate/sandgate/internal/metrics"
	"github.com/sandgate/sandgate/internal/state"
)

// logGeneration is this package's log key for a lease's generation.
const logGeneration = "generation"

// DefaultReleaseReserve is Ensurer.ReleaseReserve when zero.
const DefaultReleaseReserve = 2 * time.Second

// DefaultStopTimeout is Ensurer.StopTimeout when zero.
const DefaultStopTimeout = 3 * time.Second

// Errors of Ensure. Each wraps the cause (a state or launcher error) as well.
var (
	// ErrCapacity: MaxSandboxes are live, or Fargate had no capacity for the task.
	ErrCapacity = errors.New("no sandbox capacity")
	// ErrPurging: cleanup holds the user's lock while it deletes their data.
	ErrPurging = errors.New("user data is being purged")
	// ErrStartFailed: the lease was won but the task could not be launched; the lease
	// has been released.
	ErrStartFailed = errors.New("sandbox start failed")
)

// Store is the part of the state store Ensure uses.
type Store interface {
	AcquireClaim(ctx context.Context, userID string, candidates state.PoolCandidates) (state.Acquisition, error)
	SetTask(ctx context.Context, l state.Lease, taskARN string) error
	Release(ctx context.Context, l state.Lease, reason string) error
}

// Launcher starts sandbox tasks, and stops the task of a lease taken over;
// *launcher.Launcher is one.
type Launcher interface {
	Launch(ctx context.Context, spec launcher.Spec) (string, error)
	Stop(ctx context.Context, arn, reason string) error
}

var (
	_ Store    = (*state.Store)(nil)
	_ Launcher = (*launcher.Launcher)(nil)
)

// Ensurer makes sure a user has a sandbox.
type Ensurer struct {
	Store    Store
	Launcher Launcher
	Log      *slog.Logger
	// Now stamps a started sandbox's StateSince in the Result (time.Now when nil); the
	// record's own comes from the store's clock.
	Now func() time.Time
	// ReleaseReserve is the time kept from the caller's deadline to give a failed
	// start's lease and capacity slot back, and the most that giving back may take;
	// without it a start that failed by running out of time would hold both until the
	// start lease expires (minutes). DefaultReleaseReserve when zero.
	ReleaseReserve time.Duration
	// StopTimeout bounds the StopTask of the task whose lease a start took over, which
	// is best effort (cleanup stops a task no live lease names); DefaultStopTimeout
	// when zero.
	StopTimeout time.Duration
	// Pool, when set, is the warm pool: a start claims a waiting pool task with its
	// lease before it launches one.
	Pool *Pool
}

// Result is what Ensure found or did.
type Result struct {
	// Sandbox is the user's record: the live holder's as Acquire returned it, or, when
	// this call started the sandbox, the new STARTING lease (without its token).
	Sandbox *state.Sandbox
	// Started reports that this call won the lease and launched the task (or claimed
	// a pool task).
	Started bool
	// Warm reports that the start claimed a warm pool task: no launch to wait for.
	Warm bool
}

// State is the sandbox's state as the result describes it.
func (r Result) State() state.State { return r.Sandbox.State }

// Ensure reuses the user's live sandbox (RUNNING, or STARTING or STOPPING under
// another caller's lease), or takes the lease (no record, STOPPED, or a dead holder)
// and launches the task with the lease token as RunTask's clientToken — or, with a
// warm pool (Pool), claims a waiting pool task in the lease's own write and hands it
// the claim instead of launching (see Pool). It never waits for the task. When it
// took over a dead holder's lease whose record names a
// task, it then asks ECS to stop that task (StopTask, best effort): a sandbox that
// lost its lease without knowing it — cut off from DynamoDB, or paused — is stopped
// rather than left to write (objsync's conditional writes and the marker's
// generation fence what it still writes meanwhile).
//
// Errors: ErrPurging; ErrCapacity (no lease was taken, or the launch found no Fargate
// capacity and the lease was released); ErrStartFailed (the launch failed and the
// lease was released); otherwise the store's error (state.ErrUnavailable, …).
//
// Calls: one GetItem when a sandbox is live; one GetItem, one write, RunTask and
// SetTask when this call starts it, and StopTask after a takeover. With a pool, a
// start also makes one Query, and a hit one TransactWriteItems per task tried and one
// POST to the claimed agent instead of RunTask and SetTask; every start with a pool
// invokes the pool function asynchronously.
func (e *Ensurer) Ensure(ctx context.Context, userID string) (Result, error) {
	log := e.Log.With(logging.UserID, userID)
	now := time.Now
	if e.Now != nil {
		now = e.Now
	}
	var candidates state.PoolCandidates
	if e.Pool != nil {
		candidates = e.Pool.candidates(now())
	}
	acq, err := e.Store.AcquireClaim(ctx, userID, candidates)
	lease, replaced := acq.Lease, acq.Replaced
	var held *state.HeldError
	switch {
	case errors.As(err, &held):
		return Result{Sandbox: held.Sandbox}, nil
	case errors.Is(err, state.ErrPurging):
		return Result{}, fmt.Errorf("ensure sandbox %s: %w: %w", userID, ErrPurging, err)
	case errors.Is(err, state.ErrCapacity):
		log.WarnContext(ctx, "sandbox refused", logging.Reason, frames.ReasonCapacity, logging.Error, err.Error())
		return Result{}, fmt.Errorf("ensure sandbox %s: %w: %w", userID, ErrCapacity, err)
	case err != nil:
		return Result{}, fmt.Errorf("ensure sandbox %s: %w", userID, err)
	}
	sb := &state.Sandbox{UserID: userID, State: state.Starting, Generation: lease.Generation,
		LeaseDeadline: lease.Deadline, StateSince: now()}
	pool := PoolOff
	if e.Pool != nil {
		pool = PoolMiss
	}
	if p := acq.Claimed; p != nil {
		// The pool lost a task: ask for its replacement (a miss found the pool empty,
		// and the claims that emptied it asked already; the schedule does the rest).
		defer e.Pool.refill(context.WithoutCancel(ctx), log, "claim")
		// The replaced task goes whether or not the claim reaches its task.
		defer e.stopReplaced(ctx, log, replaced, lease.Generation)
		if e.claim(ctx, log, lease, p) {
			sb.TaskARN, sb.Warm = p.TaskARN, true
			e.Pool.count(ctx, log, PoolHit)
			log.InfoContext(ctx, "sandbox starting", logging.TaskARN, p.TaskARN, logGeneration, lease.Generation, logPool, PoolHit)
			return Result{Sandbox: sb, Started: true, Warm: true}, nil
		}
		// Not delivered: launch a task under the same lease, which the record will
		// name instead, so the claimed task is refused its user's credentials if the
		// claim reached it after all.
		replaced = nil
	}
	if e.Pool != nil {
		e.Pool.count(ctx, log, PoolMiss)
	}
	// The launch may not use the caller's whole deadline: a launch that runs out of
	// time (RunTask throttled and retried) must still leave time to give the lease back.
	reserve := e.ReleaseReserve
	if reserve == 0 {
		reserve = DefaultReleaseReserve
	}
	launchCtx := ctx
	if deadline, ok := ctx.Deadline(); ok {
		var cancel context.CancelFunc
		launchCtx, cancel = context.WithDeadline(ctx, deadline.Add(-reserve))
		defer cancel()
	}
	arn, err := e.Launcher.Launch(launchCtx, launcher.Spec{UserID: userID, LeaseToken: lease.Token, Generation: lease.Generation})
	// The replaced task goes whether or not the new one started: its lease is gone.
	defer e.stopReplaced(ctx, log, replaced, lease.Generation)
	if err != nil {
		kind := ErrStartFailed
		reason := frames.ReasonStartFailed
		if errors.Is(err, launcher.ErrCapacity) {
			kind, reason = ErrCapacity, frames.ReasonCapacity
		}
		log.ErrorContext(ctx, "sandbox start failed", logging.Reason, reason, logging.Error, err.Error())
		// The slot and the lock go back at once, so the next attempt need not wait
		// for the start lease to expire.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), reserve)
		defer cancel()
		if rerr := e.Store.Release(rctx, lease, truncate("start failed: "+err.Error(), 200)); rerr != nil {
			log.ErrorContext(ctx, "release after failed start failed", logging.Error, rerr.Error())
		}
		return Result{}, fmt.Errorf("ensure sandbox %s: %w: %w", userID, kind, err)
	}
	sb.TaskARN = arn
	if err := e.Store.SetTask(ctx, lease, arn); err != nil {
		// The task runs under this lease whether or not its ARN is recorded: the agent
		// marks itself ready by the token, and cleanup leaves a live lease's task alone
		// while the record names none.
		log.ErrorContext(ctx, "record task failed", logging.TaskARN, arn, logging.Error, err.Error())
	}
	log.InfoContext(ctx, "sandbox starting", logging.TaskARN, arn, logGeneration, lease.Generation, logPool, pool)
	return Result{Sandbox: sb, Started: true}, nil
}

// claim hands the claimed pool task p its user, lease and generation, and reports
// whether it took them. When it did not (unreachable, died, refused), the task is
// asked to stop: its claim item names the user, so its stop changes nothing of a
// record that names another task by then.
func (e *Ensurer) claim(ctx context.Context, log *slog.Logger, l state.Lease, p *state.PoolTask) bool {
	err := e.Pool.Claimer.Claim(ctx, p.Endpoint, p.ClaimSecret, agentapi.Claim{UserID: l.UserID, Generation: l.Generation, LeaseToken: l.Token})
	if err == nil {
		return true
	}
	log.WarnContext(ctx, "pool task did not take its claim; launching a task instead", logging.TaskARN, p.TaskARN,
		logGeneration, l.Generation, logging.Error, err.Error())
	timeout := e.StopTimeout
	if timeout == 0 {
		timeout = DefaultStopTimeout
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
	defer cancel()
	if err := e.Launcher.Stop(sctx, p.TaskARN, "sandgate: pool task did not take its claim"); err != nil {
		log.WarnContext(ctx, "stop the unclaimed pool task failed", logging.TaskARN, p.TaskARN, logging.Error, err.Error())
	}
	return false
}

// stopReplaced asks ECS to stop the task of the record a takeover replaced, if it
// names one; a failure is logged, not returned: cleanup stops a task no live lease
// names, and the store's conditions fence whatever it writes meanwhile.
func (e *Ensurer) stopReplaced(ctx context.Context, log *slog.Logger, replaced *state.Sandbox, gen int64) {
	if replaced == nil || replaced.TaskARN == "" {
		return
	}
	timeout := e.StopTimeout
	if timeout == 0 {
		timeout = DefaultStopTimeout
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
	defer cancel()
	reason := fmt.Sprintf("sandgate: lease taken over by generation %d", gen)
	if err := e.Launcher.Stop(sctx, replaced.TaskARN, reason); err != nil {
		log.WarnContext(ctx, "stop the replaced sandbox's task failed", logging.TaskARN, replaced.TaskARN,
			logGeneration, replaced.Generation, logging.Error, err.Error())
		return
	}
	log.InfoContext(ctx, "stopped the replaced sandbox's task", logging.TaskARN, replaced.TaskARN, logGeneration, replaced.Generation)
}

// Reason returns the reason an error frame gives for an Ensure error.
func Reason(err error) string {
	switch {
	case errors.Is(err, ErrCapacity):
		return frames.ReasonCapacity
	case errors.Is(err, ErrPurging):
		return frames.ReasonPurging
	case errors.Is(err, ErrStartFailed):
		return frames.ReasonStartFailed
	}
	return frames.ReasonUnavailable
}

// Metric returns the metric an Ensure error counts toward, or "" for none.
func Metric(err error) string {
	switch {
	case errors.Is(err, ErrCapacity):
		return metrics.CapacityRefusals
	case errors.Is(err, ErrStartFailed):
		return metrics.StartFailures
	}
	return ""
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}
