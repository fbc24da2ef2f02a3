package taskevents_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/sandgate/sandgate/internal/frames"
	"github.com/sandgate/sandgate/internal/state"
)

const poolTaskDef = "arn:aws:ecs:us-east-1:000000000000:task-definition/sandbox:1"

// waitingPoolTask is a registered pool task and the event's view of it.
func (e *env) waitingPoolTask(t *testing.T) (state.PoolTask, task) {
	t.Helper()
	ctx := context.Background()
	p, err := e.store.ReservePool(ctx, poolTaskDef)
	if err != nil {
		t.Fatal(err)
	}
	arn := "arn:aws:ecs:us-east-1:000000000000:task/" + cluster + "/pool" + strings.ToLower(p.ID[:8])
	p, err = e.store.RegisterPool(ctx, state.PoolRegistration{ID: p.ID, TaskARN: arn, TaskDefinition: poolTaskDef,
		Endpoint: "http://127.0.9.1:8080", ClaimSecret: strings.Repeat("s", 43), LaunchedAt: e.db.Clock.Now()})
	if err != nil {
		t.Fatal(err)
	}
	return p, task{arn: arn, pool: p.ID}
}

func (e *env) claimable(t *testing.T) state.PoolCandidates {
	return func(ctx context.Context) ([]state.PoolTask, error) {
		all, err := e.store.PoolTasks(ctx)
		var w []state.PoolTask
		for _, p := range all {
			if p.State == state.PoolWaiting {
				w = append(w, p)
			}
		}
		return w, err
	}
}

// A pool task that dies while it waits: its container's exit takes it out of the pool
// at once (no start claims a dead task), its stop gives its slot back, once.
func TestHandler_PoolTaskDiesWhileWaiting(t *testing.T) {
	e := newEnv(t)
	p, tk := e.waitingPoolTask(t)
	if e.capacity(t) != 1 {
		t.Fatal("setup")
	}
	e.handle(t, event(tk.with("RUNNING", "STOPPED", "EssentialContainerExited", "Essential container in task exited")))
	if got, _ := e.store.PoolTaskOf(context.Background(), p.ID); got == nil || got.State != state.PoolDraining {
		t.Fatalf("pool item after the exit %+v", got)
	}
	acq, err := e.store.AcquireClaim(context.Background(), "user_a", e.claimable(t))
	if err != nil || acq.Claimed != nil {
		t.Fatalf("a dying pool task was claimed: %+v %v", acq, err)
	}
	for range 3 { // the stop, redelivered
		e.handle(t, event(tk.with("STOPPED", "STOPPED", "EssentialContainerExited", "Essential container in task exited")))
		if e.capacity(t) != 1 { // user_a's own start
			t.Fatalf("capacity %d", e.capacity(t))
		}
	}
	if _, err := e.store.PoolTaskOf(context.Background(), p.ID); !errors.Is(err, state.ErrNotFound) {
		t.Fatalf("pool item after the stop: %v", err)
	}
}

// A pool task that dies after its claim is its user's sandbox dying: the lease ends,
// the user is told start_failed (it never became ready), the slot comes back once,
// and the claim is forgotten.
func TestHandler_PoolTaskDiesAfterClaim(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	p, tk := e.waitingPoolTask(t)
	acq, err := e.store.AcquireClaim(ctx, "user_a", e.claimable(t))
	if err != nil || acq.Claimed == nil || acq.Claimed.ID != p.ID {
		t.Fatalf("claim %+v %v", acq, err)
	}
	c := e.gw.Dial(t, "user_a")
	e.handle(t, event(tk.with("RUNNING", "STOPPED", "EssentialContainerExited", "Essential container in task exited")))
	if f := c.NextFrame(); f.Type != frames.TypeError || f.Reason != frames.ReasonStartFailed {
		t.Fatalf("client heard %+v, want start_failed", f)
	}
	sb, _ := e.store.Get(ctx, "user_a")
	if sb.State != state.Stopped || sb.Slot != acq.Lease.Generation || e.capacity(t) != 1 {
		t.Fatalf("record %+v, capacity %d", sb, e.capacity(t))
	}
	for range 2 {
		e.handle(t, event(tk.with("STOPPED", "STOPPED", "EssentialContainerExited", "Essential container in task exited")))
		if e.capacity(t) != 0 {
			t.Fatalf("capacity %d", e.capacity(t))
		}
	}
	if _, err := e.store.PoolClaimOf(ctx, p.ID); !errors.Is(err, state.ErrNotFound) {
		t.Fatalf("claim after the stop: %v", err)
	}
	e.marker(t, c, "user_a")
	// The user's next start is admitted at once.
	if l, err := e.store.Acquire(ctx, "user_a"); err != nil || l.Generation != acq.Lease.Generation+1 {
		t.Fatalf("restart %+v %v", l, err)
	}
}

// The stop of a claimed pool task whose claim did not reach it (the start launched a
// task instead, which the record names) changes nothing of the user's sandbox.
func TestHandler_UnclaimedPoolTaskStopsAfterFallback(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	_, tk := e.waitingPoolTask(t)
	acq, err := e.store.AcquireClaim(ctx, "user_a", e.claimable(t))
	if err != nil || acq.Claimed == nil {
		t.Fatal(err)
	}
	launched := "arn:aws:ecs:us-east-1:000000000000:task/" + cluster + "/launchedinstead000000000000000000"
	if err := e.store.SetTask(ctx, acq.Lease, launched); err != nil {
		t.Fatal(err)
	}
	e.handle(t, event(tk.with("STOPPED", "STOPPED", "UserInitiated", "sandgate: pool task did not take its claim")))
	sb, _ := e.store.Get(ctx, "user_a")
	if sb.State != state.Starting || sb.TaskARN != launched || e.capacity(t) != 1 {
		t.Fatalf("record %+v, capacity %d", sb, e.capacity(t))
	}
}
