package cleanup_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/sandgate/sandgate/infra/local/testkit"
	"github.com/sandgate/sandgate/internal/state"
)

const poolTaskDef = "arn:aws:ecs:us-east-1:000000000000:task-definition/sandbox:1"

// poolTask reserves a pool slot and launches its (stand-in) task; registered, it
// waits to be claimed.
func (e *env) poolTask(t *testing.T, register bool) state.PoolTask {
	t.Helper()
	ctx := context.Background()
	p, err := e.store.ReservePool(ctx, poolTaskDef)
	if err != nil {
		t.Fatal(err)
	}
	arn, err := e.launcher.LaunchPool(ctx, p.ID)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.store.RecordPoolTask(ctx, p.ID, arn); err != nil {
		t.Fatal(err)
	}
	p.TaskARN = arn
	if register {
		if p, err = e.store.RegisterPool(ctx, state.PoolRegistration{ID: p.ID, TaskARN: arn, TaskDefinition: poolTaskDef,
			Endpoint: "http://127.0.9.1:8080", ClaimSecret: strings.Repeat("s", 43), LaunchedAt: e.db.Clock.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	return p
}

func (e *env) running(arn string) bool {
	for _, ti := range e.ecs.Server.Tasks() {
		if ti.ARN == arn {
			return ti.DesiredStatus != "STOPPED"
		}
	}
	return false
}

func (e *env) exact(t *testing.T) int {
	t.Helper()
	held, err := e.store.CountSlots(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	c, err := e.store.Capacity(context.Background())
	if err != nil || c != held {
		t.Fatalf("capacity counter %d, slots held %d (%v)", c, held, err)
	}
	return c
}

// Pool tasks carry no user: the pool's own (launching, waiting) and a claimed one its
// user's live lease names are kept; one drained whose stop failed, and one nothing
// names (its item gone, no live claim), are orphans and stopped.
func TestCleaner_Run_PoolTasks(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	launching := e.poolTask(t, false)
	waiting := e.poolTask(t, true)
	claimed := e.poolTask(t, true)
	drained := e.poolTask(t, true)
	orphan := e.poolTask(t, true)
	only := func(id string) state.PoolCandidates {
		return func(ctx context.Context) ([]state.PoolTask, error) {
			all, err := e.store.PoolTasks(ctx)
			for _, p := range all {
				if p.ID == id {
					return []state.PoolTask{p}, err
				}
			}
			return nil, err
		}
	}
	if acq, err := e.store.AcquireClaim(ctx, "user_a", only(claimed.ID)); err != nil || acq.Claimed == nil {
		t.Fatalf("claim %+v %v", acq, err)
	}
	if ok, err := e.store.DrainPool(ctx, drained.ID, "test"); !ok || err != nil {
		t.Fatal(err)
	}
	if ok, err := e.store.RemovePool(ctx, orphan.ID, "test: its stop event came for another task"); !ok || err != nil {
		t.Fatal(err)
	}
	sum, err := e.c.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, keep := range []state.PoolTask{launching, waiting, claimed} {
		if !e.running(keep.TaskARN) {
			t.Fatalf("pool task %s (%s) stopped", keep.ID, keep.State)
		}
	}
	for _, gone := range []state.PoolTask{drained, orphan} {
		if e.running(gone.TaskARN) {
			t.Fatalf("pool task %s left running", gone.ID)
		}
	}
	if sum.Orphans != 2 || sum.Corrections != 0 {
		t.Fatalf("summary %+v", sum)
	}
	e.exact(t)
}

// A pool item whose task ECS no longer runs (its stop event was lost, or RunTask never
// started it) gets its slot back once it is older than the grace; a young one is left
// to its launch.
func TestCleaner_Reconcile_LostPoolTask(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	lost := e.poolTask(t, true)
	if err := e.launcher.Stop(ctx, lost.TaskARN, "test: lost"); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 10*time.Second, func() bool { return len(e.ecs.Server.Tasks()) == 0 },
		func() string { return "the lost pool task did not stop" })
	young, err := e.store.ReservePool(ctx, poolTaskDef) // reserved, RunTask not answered yet
	if err != nil {
		t.Fatal(err)
	}
	if r, err := e.c.Reconcile(ctx); err != nil || r.SlotsReturned != 0 {
		t.Fatalf("within the grace: %+v %v", r, err)
	}
	e.db.Clock.Advance(5 * time.Minute)
	if err := e.store.RecordPoolTask(ctx, young.ID, "arn:aws:ecs:us-east-1:000000000000:task/sandboxes/neverstarted"); err != nil {
		t.Fatal(err)
	}
	r, err := e.c.Reconcile(ctx)
	if err != nil || r.SlotsReturned != 2 {
		t.Fatalf("reconcile %+v %v", r, err)
	}
	if _, err := e.store.PoolTaskOf(ctx, lost.ID); !errors.Is(err, state.ErrNotFound) {
		t.Fatalf("lost pool item: %v", err)
	}
	if e.exact(t) != 0 {
		t.Fatal("counter")
	}
}
