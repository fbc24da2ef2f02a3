package admin

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/sandgate/sandgate/internal/state"
)

// Stopped is what Stop found and did.
type Stopped struct {
	UserID string `json:"userId"`
	// State is the record's state as Stop found it.
	State string `json:"state"`
	// Generation is the sandbox's, and Task its task (empty when it named none).
	Generation int64  `json:"generation"`
	Task       string `json:"task,omitempty"`
	// Action is what was done: "stop requested" (ECS StopTask: the agent syncs, then
	// exits), "reaped" (a lease past its deadline ended, as cleanup ends it, and its
	// task stopped), or "nothing: already stopped".
	Action string `json:"action"`
	// Done reports that the sandbox was seen stopped with its capacity slot given back
	// (only when waited for).
	Done bool `json:"done"`
}

// Stop stops userID's sandbox gracefully: ECS stops its task (SIGTERM: the agent
// refuses new frames, syncs the workspace a last time and ends its lease; the task's
// stop event gives the slot back). A lease past its deadline (a dead or stuck sandbox)
// is reaped first, as cleanup reaps it. With wait, Stop returns once the record is
// STOPPED and holds no capacity slot, or ErrNotStopped after StopWait.
//
// A user unknown is ErrUnknownUser; one whose sandbox is starting without a task yet
// is ErrMidStart, one whose data is being purged ErrMidPurge: nothing is changed.
func (a *Admin) Stop(ctx context.Context, userID string, wait bool) (Stopped, error) {
	res, err := a.stop(ctx, userID, wait, "sandgate admin: stop")
	a.Audit.Record(ctx, "stop", userID, err, "state", res.State, "generation", res.Generation, "task", res.Task,
		"actionTaken", res.Action, "waited", wait, "done", res.Done)
	return res, err
}

func (a *Admin) stop(ctx context.Context, userID string, wait bool, reason string) (Stopped, error) {
	if err := checkUser(userID); err != nil {
		return Stopped{}, err
	}
	sb, err := a.Store.Get(ctx, userID)
	if errors.Is(err, state.ErrNotFound) {
		return Stopped{UserID: userID}, fmt.Errorf("%s: %w", userID, ErrUnknownUser)
	}
	if err != nil {
		return Stopped{UserID: userID}, fmt.Errorf("stop %s: %w", userID, err)
	}
	res := Stopped{UserID: userID, State: string(sb.State), Generation: sb.Generation, Task: sb.TaskARN}
	now := a.now()
	switch {
	case sb.State == state.Purging:
		return res, fmt.Errorf("%s: %w (since %s); it ends when the purge finishes", userID, ErrMidPurge, sb.StateSince.UTC().Format(time.RFC3339))
	case sb.State == state.Stopped && !sb.HoldsSlot():
		res.Action, res.Done = "nothing: already stopped", true
		return res, nil
	case sb.Expired(now):
		err := a.Store.Reap(ctx, sb)
		switch {
		case err == nil:
			res.Action = "reaped"
		case errors.Is(err, state.ErrHeld), errors.Is(err, state.ErrLeaseLost):
			// Renewed or taken over since the read: judge the record as it is now.
			return a.stop(ctx, userID, wait, reason)
		default:
			return res, fmt.Errorf("stop %s: %w", userID, err)
		}
	case sb.State.Counted() && sb.TaskARN == "":
		return res, fmt.Errorf("%s: %w", userID, ErrMidStart)
	default:
		res.Action = "stop requested"
	}
	if sb.TaskARN != "" {
		if err := a.Tasks.Stop(ctx, sb.TaskARN, reason); err != nil {
			return res, fmt.Errorf("stop %s: %w", userID, err)
		}
	}
	if !wait {
		return res, nil
	}
	err = a.wait(ctx, orDefault(a.StopWait, DefaultStopWait), func() (bool, error) {
		cur, err := a.Store.Get(ctx, userID)
		if errors.Is(err, state.ErrNotFound) {
			return true, nil
		}
		if err != nil {
			return false, err
		}
		// Stopped with its slot back, or another generation's already (a new start).
		return cur.Generation != sb.Generation || cur.State != state.Purging && !cur.HoldsSlot(), nil
	})
	if err != nil {
		return res, fmt.Errorf("stop %s: %w", userID, err)
	}
	res.Done = true
	return res, nil
}
