package pool

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/sandgate/sandgate/internal/ensure"
	"github.com/sandgate/sandgate/internal/launcher"
	"github.com/sandgate/sandgate/internal/logging"
	"github.com/sandgate/sandgate/internal/metrics"
	"github.com/sandgate/sandgate/internal/state"
)

// Defaults of a Refiller.
const (
	// DefaultRate is the most pool tasks launched a second: a quarter of RunTask's 20
	// calls a second (and of Fargate's sustained 20 launches), so users' own launches
	// keep the rest.
	DefaultRate = 5
	// DefaultRegisterGrace is how long a launched pool task may take to register
	// before it is drained: a cold start of 30–90 s, with room.
	DefaultRegisterGrace = 10 * time.Minute
	// DefaultBackoff is how long a refill that ECS throttled keeps the next one off;
	// it doubles while refills keep being throttled, to MaxBackoff.
	DefaultBackoff = 15 * time.Second
	MaxBackoff     = 5 * time.Minute
	// DefaultRunFor bounds one refill when its context has no deadline.
	DefaultRunFor = 50 * time.Second
	// deadlineMargin is kept from the invocation's deadline to give the lock back.
	deadlineMargin = 3 * time.Second
	// maxRounds bounds how often one refill reads the pool again (claims may empty it
	// while it fills it).
	maxRounds = 3
)

// Reasons a pool task is drained.
const (
	DrainTaskDefinition = "older task definition"
	DrainMaxAge         = "max age"
	DrainUnregistered   = "never registered"
	DrainOverSize       = "pool over its size"
)

// Store is the part of the state store the Refiller uses.
type Store interface {
	PoolTasks(ctx context.Context) ([]state.PoolTask, error)
	ReservePool(ctx context.Context, taskDefinition string) (state.PoolTask, error)
	RecordPoolTask(ctx context.Context, id, taskARN string) error
	DrainPool(ctx context.Context, id, reason string) (bool, error)
	RemovePool(ctx context.Context, id, reason string) (bool, error)
	LockRefill(ctx context.Context, holder string, term time.Duration) (bool, error)
	UnlockRefill(ctx context.Context, holder string, backoff time.Duration) error
}

// Launcher launches and stops pool tasks; *launcher.Launcher is one.
type Launcher interface {
	LaunchPool(ctx context.Context, id string) (string, error)
	Stop(ctx context.Context, arn, reason string) error
}

var (
	_ Store    = (*state.Store)(nil)
	_ Launcher = (*launcher.Launcher)(nil)
)

// Refiller keeps the pool at its size.
type Refiller struct {
	Store    Store
	Launcher Launcher
	Log      *slog.Logger
	Metrics  *metrics.Emitter
	// Stage is the metrics' dimension.
	Stage string
	// Size is the pool's size: waiting and launching tasks of the current definition.
	Size int
	// TaskDefinition is the current sandbox task definition; MaxAge the oldest a
	// pool task may be.
	TaskDefinition string
	MaxAge         time.Duration
	// Rate is DefaultRate when zero; RegisterGrace DefaultRegisterGrace; Backoff
	// DefaultBackoff.
	Rate          float64
	RegisterGrace time.Duration
	Backoff       time.Duration
	// Now is the clock pool tasks' ages are judged by (time.Now).
	Now func() time.Time

	mu      sync.Mutex
	backoff time.Duration // the last back-off, doubled while throttling lasts
}

// Summary is what one refill did; the function returns it and logs it on one line.
type Summary struct {
	// Waiting and Launching are the pool after the refill: tasks that can be claimed,
	// and tasks launched that have not registered yet.
	Waiting   int `json:"waiting"`
	Launching int `json:"launching"`
	// Launched and Drained count this refill's launches and drains.
	Launched int `json:"launched"`
	Drained  int `json:"drained"`
	// Throttled: ECS refused a launch for its rate; the next refill waits.
	Throttled bool `json:"throttled"`
	// AtCapacity: the capacity limit left no slot for the pool.
	AtCapacity bool `json:"atCapacity"`
	// Locked: another refill was under way, or a back-off held; nothing done.
	Locked bool `json:"locked"`
	Errors int  `json:"errors"`
}

// Handle runs one refill, for the schedule ({}) or a start (ensure.RefillRequest).
func (r *Refiller) Handle(ctx context.Context, req ensure.RefillRequest) (Summary, error) {
	return r.Run(ctx)
}

func (r *Refiller) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

// Run refills the pool once, under the refill's lock: it drains the pool tasks that
// must not be claimed any more (a task definition other than the current one, past
// MaxAge, never registered within RegisterGrace, or beyond the pool's size) —
// DRAINING, then StopTask; their slots come back when they are seen to stop — and
// launches tasks until the waiting and launching ones of the current definition make
// Size: each a capacity slot reserved with its pool item first (the refill stops at
// the capacity limit, so pool tasks never exceed it), then RunTask, at most Rate a
// second. A launch ECS throttles ends the refill and keeps the next one off for a
// back-off; one that fails gives its slot back at once.
func (r *Refiller) Run(ctx context.Context) (Summary, error) {
	start := time.Now()
	log := r.Log
	deadline := start.Add(DefaultRunFor)
	if dl, ok := ctx.Deadline(); ok {
		deadline = dl.Add(-deadlineMargin)
	}
	holder := newHolder()
	var sum Summary
	locked, err := r.Store.LockRefill(ctx, holder, time.Until(deadline)+deadlineMargin)
	if err != nil {
		return sum, fmt.Errorf("refill: %w", err)
	}
	if !locked {
		sum.Locked = true
		log.InfoContext(ctx, "refill skipped: another refill is under way or backing off")
		return sum, nil
	}
	var errs []error
	for round := 0; round < maxRounds && time.Now().Before(deadline); round++ {
		need, err := r.review(ctx, &sum)
		if err != nil {
			errs = append(errs, err)
			break
		}
		if need <= 0 || !r.launch(ctx, &sum, need, deadline, &errs) {
			break
		}
	}
	backoff := time.Duration(0)
	r.mu.Lock()
	if sum.Throttled {
		r.backoff = min(max(2*r.backoff, orDefault(r.Backoff, DefaultBackoff)), MaxBackoff)
		backoff = r.backoff
	} else {
		r.backoff = 0
	}
	r.mu.Unlock()
	if err := r.Store.UnlockRefill(context.WithoutCancel(ctx), holder, backoff); err != nil {
		errs = append(errs, err)
	}
	sum.Errors = len(errs)
	log.InfoContext(ctx, "refill done", logSize, r.Size, logWaiting, sum.Waiting, logLaunching, sum.Launching,
		logLaunched, sum.Launched, logDrained, sum.Drained, logThrottled, sum.Throttled, logAtCapacity, sum.AtCapacity,
		logErrors, sum.Errors, logging.Duration, time.Since(start).Milliseconds())
	if err := r.Metrics.Emit(r.Stage,
		metrics.Value{Name: metrics.PoolRefills, Value: float64(sum.Launched)},
		metrics.Value{Name: metrics.PoolDrains, Value: float64(sum.Drained)},
		metrics.Value{Name: metrics.PoolSize, Value: float64(sum.Waiting)},
	); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return sum, fmt.Errorf("refill: %w", errors.Join(errs...))
	}
	return sum, nil
}

// review reads the pool, drains what must not be claimed any more, counts what is
// left into sum and returns how many tasks the pool lacks.
func (r *Refiller) review(ctx context.Context, sum *Summary) (int, error) {
	tasks, err := r.Store.PoolTasks(ctx)
	if err != nil {
		return 0, err
	}
	now := r.now()
	claimable := ensure.Pool{TaskDefinition: r.TaskDefinition, MaxAge: r.MaxAge}
	grace := orDefault(r.RegisterGrace, DefaultRegisterGrace)
	// The youngest first, so that a pool over its size loses its oldest tasks.
	slices.SortFunc(tasks, func(a, b state.PoolTask) int { return b.ReservedAt.Compare(a.ReservedAt) })
	sum.Waiting, sum.Launching = 0, 0
	for _, t := range tasks {
		reason := ""
		switch t.State {
		case state.PoolWaiting:
			switch {
			case t.TaskDefinition != r.TaskDefinition:
				reason = DrainTaskDefinition
			case !claimable.Claimable(t, now):
				reason = DrainMaxAge
			case sum.Waiting+sum.Launching >= r.Size:
				reason = DrainOverSize
			default:
				sum.Waiting++
			}
		case state.PoolLaunching:
			switch {
			case t.TaskDefinition != r.TaskDefinition:
				reason = DrainTaskDefinition
			case now.Sub(t.ReservedAt) > grace:
				reason = DrainUnregistered
			case sum.Waiting+sum.Launching >= r.Size:
				reason = DrainOverSize
			default:
				sum.Launching++
			}
		}
		if reason != "" {
			r.drain(ctx, sum, t, reason)
		}
	}
	return r.Size - sum.Waiting - sum.Launching, nil
}

// drain takes t out of the pool and stops its task, best effort: a task whose stop
// failed is an orphan the cleanup stops (its item is DRAINING), and its slot comes
// back when it is seen to stop.
func (r *Refiller) drain(ctx context.Context, sum *Summary, t state.PoolTask, reason string) {
	log := r.Log.With(logPoolID, t.ID, logging.TaskARN, t.TaskARN, logging.Reason, reason)
	drained, err := r.Store.DrainPool(ctx, t.ID, reason)
	if err != nil {
		log.ErrorContext(ctx, "pool drain failed", logging.Error, err.Error())
		return
	}
	if !drained {
		return // claimed or drained meanwhile
	}
	sum.Drained++
	if t.TaskARN == "" {
		log.WarnContext(ctx, "pool task drained before its ARN was recorded; cleanup stops it")
		return
	}
	if err := r.Launcher.Stop(ctx, t.TaskARN, "sandgate: pool drain: "+reason); err != nil {
		log.WarnContext(ctx, "stop the drained pool task failed; cleanup stops it", logging.Error, err.Error())
		return
	}
	log.InfoContext(ctx, "pool task drained")
}

// launch launches up to n pool tasks at Rate a second before deadline. It reports
// whether the refill may go on (no throttling, no capacity refusal, no failure).
func (r *Refiller) launch(ctx context.Context, sum *Summary, n int, deadline time.Time, errs *[]error) bool {
	rate := r.Rate
	if rate <= 0 {
		rate = DefaultRate
	}
	every := time.Duration(float64(time.Second) / rate)
	next := time.Now()
	for range n {
		if wait := time.Until(next); wait > 0 {
			if next.After(deadline) {
				return false
			}
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return false
			case <-t.C:
			}
		}
		next = time.Now().Add(every)
		p, err := r.Store.ReservePool(ctx, r.TaskDefinition)
		if errors.Is(err, state.ErrCapacity) {
			sum.AtCapacity = true
			r.Log.InfoContext(ctx, "pool not refilled further: capacity reached", logging.Error, err.Error())
			return false
		}
		if err != nil {
			*errs = append(*errs, err)
			return false
		}
		arn, err := r.Launcher.LaunchPool(ctx, p.ID)
		if err != nil {
			// No task runs for it (a RunTask that started one after all is refused
			// its registration and exits): the slot goes back at once.
			if _, rerr := r.Store.RemovePool(context.WithoutCancel(ctx), p.ID, "launch failed"); rerr != nil {
				*errs = append(*errs, rerr)
			}
			switch {
			case errors.Is(err, launcher.ErrThrottled):
				sum.Throttled = true
				r.Log.WarnContext(ctx, "pool launch throttled; the refill backs off", logging.Error, err.Error())
			case errors.Is(err, launcher.ErrCapacity):
				sum.AtCapacity = true
				r.Log.WarnContext(ctx, "pool launch found no Fargate capacity", logging.Error, err.Error())
			default:
				*errs = append(*errs, err)
				r.Log.ErrorContext(ctx, "pool launch failed", logging.Error, err.Error())
			}
			return false
		}
		sum.Launched++
		sum.Launching++
		if err := r.Store.RecordPoolTask(ctx, p.ID, arn); err != nil && !errors.Is(err, state.ErrNotFound) {
			// Its registration records the ARN too.
			r.Log.WarnContext(ctx, "record the pool task's ARN failed", logPoolID, p.ID, logging.Error, err.Error())
		}
	}
	return true
}

func newHolder() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func orDefault(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

// Log keys of this package; the shared ones come from internal/logging.
const (
	logPoolID     = "poolId"
	logSize       = "poolSize"
	logWaiting    = "waiting"
	logLaunching  = "launching"
	logLaunched   = "launched"
	logDrained    = "drained"
	logThrottled  = "throttled"
	logAtCapacity = "atCapacity"
	logErrors     = "errors"
)
