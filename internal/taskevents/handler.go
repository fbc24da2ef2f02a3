package taskevents

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"

	"github.com/aws/aws-lambda-go/events"

	"github.com/sandgate/sandgate/internal/frames"
	"github.com/sandgate/sandgate/internal/logging"
	"github.com/sandgate/sandgate/internal/metrics"
	"github.com/sandgate/sandgate/internal/relay"
	"github.com/sandgate/sandgate/internal/state"
	"github.com/sandgate/sandgate/internal/userid"
)

// Log keys of this package; the shared ones come from internal/logging.
const (
	logEventID      = "eventId"
	logLastStatus   = "lastStatus"
	logStopCode     = "stopCode"
	logGeneration   = "generation"
	logEnded        = "ended"
	logSlotReturned = "slotReturned"
	logVersion      = "taskVersion"
	logPoolID       = "poolId"
)

// maxReason bounds the reason recorded on the record.
const maxReason = 200

// ErrMalformed: the event is not an ECS task state change the handler can read. It
// is logged and dropped, not retried: a retry would read the same bytes.
var ErrMalformed = errors.New("malformed task state change")

// Store is the part of the state store the handler uses.
type Store interface {
	TaskExited(ctx context.Context, ref state.TaskRef, reason string) (state.TaskEnd, error)
	TaskStopped(ctx context.Context, ref state.TaskRef, reason string) (state.TaskEnd, error)
	// A warm pool task's: its claim (the user it serves), and its pool item.
	PoolClaimOf(ctx context.Context, id string) (*state.PoolClaim, error)
	ForgetPoolClaim(ctx context.Context, id string) error
	DrainPool(ctx context.Context, id, reason string) (bool, error)
	RemovePool(ctx context.Context, id, reason string) (bool, error)
}

// Broadcaster posts to every connection of a user; *relay.Relay is one.
type Broadcaster interface {
	Broadcast(ctx context.Context, userID string, data []byte) (int, error)
}

var (
	_ Store       = (*state.Store)(nil)
	_ Broadcaster = (*relay.Relay)(nil)
)

// Handler acts on the sandbox cluster's task state changes.
//
// A task that has stopped (lastStatus STOPPED) gives back the capacity slot its
// generation holds, and ends that generation's lease if it is still held (the task
// died without stopping its sandbox). A task on its way down because it failed to
// start or its container exited (stopCode TaskFailedToStart or EssentialContainerExited,
// before STOPPED) ends that generation's lease at once, the slot kept until the task
// has stopped. Other stops (StopTask, a Spot interruption) leave the lease to the
// agent, which is still syncing, until the task has stopped.
//
// Whichever event ends a lease tells the user's connections: start_failed for a
// sandbox that never became ready (counted as a start failure), stopping for one that
// ran. Every write is conditional on the record (state.TaskExited, TaskStopped), so a
// redelivered event, events out of order and races with the agent, Reap, Release and
// a takeover change each record once and give each slot back once; a broadcast
// follows only the write that ended the lease.
type Handler struct {
	Store   Store
	Relay   Broadcaster
	Metrics *metrics.Emitter
	Log     *slog.Logger
	// Cluster is the sandbox cluster's name: events of other clusters are ignored.
	Cluster string
	// StartedBy marks the tasks the launcher starts (launcher.DefaultStartedBy);
	// other tasks are ignored.
	StartedBy string
	// Stage is the metrics' dimension.
	Stage string
}

// Handle acts on one event. It returns an error only when the state could not be
// written (DynamoDB unavailable): Lambda retries the event then, which is safe.
func (h *Handler) Handle(ctx context.Context, ev events.CloudWatchEvent) error {
	log := h.Log.With(logEventID, ev.ID)
	d, err := h.read(ev)
	if err != nil {
		log.WarnContext(ctx, "event dropped", logging.Reason, err.Error())
		return nil
	}
	log = log.With(logging.TaskARN, d.TaskArn, logLastStatus, d.LastStatus, logStopCode, d.StopCode, logVersion, d.Version)
	if why := h.notOurs(d); why != "" {
		log.DebugContext(ctx, "event ignored", logging.Reason, why)
		return nil
	}
	if !(d.LastStatus == StatusStopped || exitedEarly(d)) {
		log.DebugContext(ctx, "event ignored", logging.Reason, "the task is not down yet, or its agent is stopping it")
		return nil
	}
	var ref state.TaskRef
	if id := d.PoolID(); id != "" {
		log = log.With(logPoolID, id)
		c, err := h.poolTask(ctx, log, d, id)
		if err != nil {
			log.ErrorContext(ctx, "task event not recorded; it will be retried", logging.Error, err.Error())
			return fmt.Errorf("task event %s: %w", ev.ID, err)
		}
		if c == nil {
			return nil // it never served anyone
		}
		ref = c.Ref()
	} else if ref, err = taskRef(d); err != nil {
		log.WarnContext(ctx, "event dropped", logging.Reason, err.Error())
		return nil
	}
	log = log.With(logging.UserID, ref.UserID, logGeneration, ref.Generation)
	var end state.TaskEnd
	if d.LastStatus == StatusStopped {
		end, err = h.Store.TaskStopped(ctx, ref, reason(d))
	} else {
		end, err = h.Store.TaskExited(ctx, ref, reason(d))
	}
	if err != nil {
		log.ErrorContext(ctx, "task event not recorded; it will be retried", logging.Error, err.Error())
		return fmt.Errorf("task event %s: %w", ev.ID, err)
	}
	log.InfoContext(ctx, "task event", logEnded, string(end.Ended), logSlotReturned, end.SlotReturned)
	h.tell(ctx, log, ref.UserID, end)
	if id := d.PoolID(); id != "" && d.LastStatus == StatusStopped {
		// The claimed task's stop is recorded on its user's record: its claim has
		// nothing more to say.
		if err := h.Store.ForgetPoolClaim(ctx, id); err != nil {
			log.WarnContext(ctx, "pool claim not forgotten; it expires", logging.Error, err.Error())
		}
	}
	return nil
}

// poolTask acts on a warm pool task's end. A claimed task's is its user's sandbox's
// end: poolTask returns its claim, and the caller ends that lease as for any task. An
// unclaimed one's gives its pool item's slot back once it has stopped, and takes it
// out of the pool at once when it failed to start or its container exited, so that no
// start claims a dead task.
func (h *Handler) poolTask(ctx context.Context, log *slog.Logger, d *Detail, id string) (*state.PoolClaim, error) {
	c, err := h.Store.PoolClaimOf(ctx, id)
	if err == nil {
		log.InfoContext(ctx, "claimed pool task ended", logging.UserID, c.UserID, logGeneration, c.Generation)
		return c, nil
	}
	if !errors.Is(err, state.ErrNotFound) {
		return nil, err
	}
	if d.LastStatus != StatusStopped {
		drained, err := h.Store.DrainPool(ctx, id, reason(d))
		if err != nil {
			return nil, err
		}
		log.InfoContext(ctx, "pool task on its way down", "drained", drained)
	} else {
		removed, err := h.Store.RemovePool(ctx, id, reason(d))
		if err != nil {
			return nil, err
		}
		log.InfoContext(ctx, "pool task stopped", logSlotReturned, removed)
		if removed {
			return nil, nil
		}
	}
	// Not in the pool (any more): claimed meanwhile?
	c, err = h.Store.PoolClaimOf(ctx, id)
	switch {
	case err == nil:
		log.InfoContext(ctx, "pool task claimed as it ended", logging.UserID, c.UserID, logGeneration, c.Generation)
		return c, nil
	case errors.Is(err, state.ErrNotFound):
		return nil, nil
	}
	return nil, err
}

// read decodes the event's detail.
func (h *Handler) read(ev events.CloudWatchEvent) (*Detail, error) {
	if ev.Source != Source || ev.DetailType != DetailType {
		return nil, fmt.Errorf("%w: source %q, detail-type %q", ErrMalformed, ev.Source, ev.DetailType)
	}
	var d Detail
	if err := json.Unmarshal(ev.Detail, &d); err != nil {
		return nil, fmt.Errorf("%w: detail: %v", ErrMalformed, err)
	}
	if d.TaskArn == "" || d.LastStatus == "" {
		return nil, fmt.Errorf("%w: no taskArn or lastStatus", ErrMalformed)
	}
	return &d, nil
}

// notOurs says why d is not about one of this stack's sandbox tasks ("" when it is).
func (h *Handler) notOurs(d *Detail) string {
	if h.Cluster != "" && d.ClusterArn != h.Cluster && !strings.HasSuffix(d.ClusterArn, ":cluster/"+h.Cluster) {
		return "another cluster's task"
	}
	if h.StartedBy != "" && d.StartedBy != h.StartedBy {
		return "a task the launcher did not start"
	}
	return ""
}

// taskRef names the sandbox the task was started for.
func taskRef(d *Detail) (state.TaskRef, error) {
	user := d.UserID()
	if !userid.Valid(user) {
		return state.TaskRef{}, fmt.Errorf("%w: the task's overrides name no valid user", ErrMalformed)
	}
	gen, err := strconv.ParseInt(d.Generation(), 10, 64)
	if err != nil || gen < 1 {
		return state.TaskRef{}, fmt.Errorf("%w: the task's overrides name no generation", ErrMalformed)
	}
	return state.TaskRef{UserID: user, Generation: gen, Token: d.LeaseToken(), TaskARN: d.TaskArn}, nil
}

// exitedEarly reports a task on its way down because it never ran or its container
// exited: its agent is gone, so its lease can end before the task has stopped.
func exitedEarly(d *Detail) bool {
	return d.DesiredStatus == StatusStopped && (d.StopCode == StopTaskFailedToStart || d.StopCode == StopEssentialContainerExited)
}

// reason is what the record says about the end: the stop code, ECS's reason and the
// container's.
func reason(d *Detail) string {
	parts := []string{"task stopped"}
	if d.StopCode != "" {
		parts = append(parts, d.StopCode)
	}
	if d.StoppedReason != "" {
		parts = append(parts, d.StoppedReason)
	}
	for _, c := range d.Containers {
		switch {
		case c.Reason != "" && c.Reason != d.StoppedReason:
			parts = append(parts, c.Reason)
		case c.ExitCode != nil:
			parts = append(parts, "exit code "+strconv.Itoa(*c.ExitCode))
		}
	}
	r := strings.Join(parts, ": ")
	if len(r) > maxReason {
		r = r[:maxReason]
	}
	return r
}

// tell tells the user's connections of a lease this event ended: a start that failed,
// or a sandbox that died. Best effort: the record is right whatever they hear, and
// their next frame starts a new sandbox.
func (h *Handler) tell(ctx context.Context, log *slog.Logger, user string, end state.TaskEnd) {
	var f frames.Frame
	switch end.Ended {
	case state.Starting:
		f = frames.Error(frames.ReasonStartFailed, "the sandbox could not start; reconnect to try again")
		if err := h.Metrics.Emit(h.Stage, metrics.Value{Name: metrics.StartFailures, Value: 1}); err != nil {
			log.WarnContext(ctx, "metrics not written", logging.Error, err.Error())
		}
	case state.Running, state.Stopping:
		f = frames.Status(frames.Stopping)
	default:
		return
	}
	n, err := h.Relay.Broadcast(ctx, user, f.Bytes())
	if err != nil {
		log.WarnContext(ctx, "tell clients of the ended sandbox failed", logging.Error, err.Error())
		return
	}
	log.InfoContext(ctx, "clients told", logging.Reason, string(end.Ended), "connections", n)
}
