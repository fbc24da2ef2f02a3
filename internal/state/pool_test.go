package state_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/sandgate/sandgate/internal/state"
)

const poolTaskDef = "arn:aws:ecs:us-east-1:000000000000:task-definition/sandgate-sandbox:1"

// waitingPoolTask reserves a pool slot, records its task and registers its agent: a
// task ready to be claimed.
func waitingPoolTask(tb testing.TB, e *env, n int) state.PoolTask {
	tb.Helper()
	ctx := context.Background()
	p, err := e.store.ReservePool(ctx, poolTaskDef)
	if err != nil {
		tb.Fatal(err)
	}
	arn := fmt.Sprintf("arn:aws:ecs:us-east-1:000000000000:task/sandgate/pool%04d", n)
	if err := e.store.RecordPoolTask(ctx, p.ID, arn); err != nil {
		tb.Fatal(err)
	}
	got, err := e.store.RegisterPool(ctx, state.PoolRegistration{ID: p.ID, TaskARN: arn, TaskDefinition: poolTaskDef,
		Endpoint: fmt.Sprintf("http://127.0.9.%d:8080", n), ClaimSecret: fmt.Sprintf("secret-%d", n), LaunchedAt: e.clock.Now()})
	if err != nil {
		tb.Fatal(err)
	}
	if got.State != state.PoolWaiting || got.TaskARN != arn || got.ClaimSecret == "" {
		tb.Fatalf("registered %+v", got)
	}
	return got
}

// waiting lists the pool's waiting tasks, as a start's candidates.
func waiting(s *state.Store) state.PoolCandidates {
	return func(ctx context.Context) ([]state.PoolTask, error) {
		all, err := s.PoolTasks(ctx)
		var w []state.PoolTask
		for _, p := range all {
			if p.State == state.PoolWaiting {
				w = append(w, p)
			}
		}
		return w, err
	}
}

// A pool task's life: the refill's reservation +1; its agent's registration 0; a
// fresh start's claim 0 (the slot moves to the record, which names the pool task and
// says the start was warm); the claimed task's stop event -1 through the claim item.
func TestPool_ReserveRegisterClaimStop(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	p := waitingPoolTask(t, e, 1)
	if e.checkInvariants(t) != 1 {
		t.Fatal("a pool task does not hold a slot")
	}
	acq, err := e.store.AcquireClaim(ctx, "user_a", waiting(e.store))
	if err != nil {
		t.Fatal(err)
	}
	if acq.Claimed == nil || acq.Claimed.ID != p.ID || acq.Claimed.ClaimSecret != p.ClaimSecret || acq.Replaced != nil {
		t.Fatalf("acquisition %+v, want the claim of %s", acq, p.ID)
	}
	sb := wantSlot(t, e, "user_a", state.Starting, acq.Lease.Generation)
	if sb.TaskARN != p.TaskARN || !sb.Warm || sb.LeaseToken != acq.Lease.Token {
		t.Fatalf("record %+v, want the pool task, warm, under the new lease", sb)
	}
	if counter(t, e) != 1 || e.checkInvariants(t) != 1 {
		t.Fatal("a claim moved the counter")
	}
	if pool, _ := e.store.PoolTasks(ctx); len(pool) != 0 {
		t.Fatalf("pool after the claim: %+v", pool)
	}
	c, err := e.store.PoolClaimOf(ctx, p.ID)
	if err != nil || c.UserID != "user_a" || c.Generation != acq.Lease.Generation || c.TaskARN != p.TaskARN {
		t.Fatalf("claim item %+v, %v", c, err)
	}
	// A claimed task cannot register again, so it is never claimed a second time.
	_, err = e.store.RegisterPool(ctx, state.PoolRegistration{ID: p.ID, TaskARN: p.TaskARN, TaskDefinition: poolTaskDef,
		Endpoint: p.Endpoint, ClaimSecret: "again", LaunchedAt: e.clock.Now()})
	wantErr(t, err, state.ErrNotFound)

	end, err := e.store.TaskStopped(ctx, c.Ref(), "task stopped")
	if err != nil || end.Ended != state.Starting || !end.SlotReturned {
		t.Fatalf("stop of the claimed task: %+v, %v", end, err)
	}
	if e.checkInvariants(t) != 0 {
		t.Fatal("the claimed task's stop did not give its slot back")
	}
	if err := e.store.ForgetPoolClaim(ctx, p.ID); err != nil {
		t.Fatal(err)
	}
	_, err = e.store.PoolClaimOf(ctx, p.ID)
	wantErr(t, err, state.ErrNotFound)

	// The next start finds no pool task and is cold: not warm, no task yet.
	l := mustAcquire(t, e.store, "user_a")
	sb = wantSlot(t, e, "user_a", state.Starting, l.Generation)
	if sb.Warm || sb.TaskARN != "" {
		t.Fatalf("cold start's record %+v", sb)
	}
}

// A takeover of a dead lease (and a start over a STOPPED record whose task was not yet
// seen to stop) keeps the record's slot: the claim gives the pool item's back (-1).
func TestPool_ClaimOverAHeldSlot(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, e *env)
	}{
		{"takeover", func(t *testing.T, e *env) {
			mustAcquire(t, e.store, "user_a")
			e.clock.Advance(state.DefaultStartTTL + time.Second)
		}},
		{"stopped holding its slot", func(t *testing.T, e *env) {
			l := mustAcquire(t, e.store, "user_a")
			if err := e.store.Stop(context.Background(), l); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			tc.setup(t, e)
			p := waitingPoolTask(t, e, 1)
			if e.checkInvariants(t) != 2 {
				t.Fatal("setup")
			}
			acq, err := e.store.AcquireClaim(context.Background(), "user_a", waiting(e.store))
			if err != nil || acq.Claimed == nil || acq.Claimed.ID != p.ID {
				t.Fatalf("claim: %+v, %v", acq, err)
			}
			if (tc.name == "takeover") != (acq.Replaced != nil) {
				t.Fatalf("replaced %+v", acq.Replaced)
			}
			wantSlot(t, e, "user_a", state.Starting, acq.Lease.Generation)
			if e.checkInvariants(t) != 1 {
				t.Fatal("the pool item's slot was not given back")
			}
		})
	}
}

// Starts racing for a pool smaller than their number: each pool task is claimed by
// exactly one user, every other user takes a fresh slot, and one user racing itself
// gets one lease and at most one task.
func TestPool_ClaimRace(t *testing.T) {
	e := newEnv(t)
	e.store.MaxSandboxes = 100
	const pool, users, perUser = 5, 12, 3
	for i := range pool {
		waitingPoolTask(t, e, i)
	}
	type result struct {
		user string
		acq  state.Acquisition
		err  error
	}
	results := make(chan result, users*perUser)
	var wg sync.WaitGroup
	for u := range users {
		for range perUser {
			user := fmt.Sprintf("user_race%02d", u)
			wg.Go(func() {
				acq, err := e.store.AcquireClaim(context.Background(), user, waiting(e.store))
				results <- result{user, acq, err}
			})
		}
	}
	wg.Wait()
	close(results)
	leases := map[string]int{}
	claimedBy := map[string]string{}
	for r := range results {
		if r.err != nil {
			wantErr(t, r.err, state.ErrHeld) // the user's own other start won
			continue
		}
		leases[r.user]++
		if r.acq.Claimed != nil {
			if other, dup := claimedBy[r.acq.Claimed.ID]; dup {
				t.Fatalf("pool task %s claimed by %s and %s", r.acq.Claimed.ID, other, r.user)
			}
			claimedBy[r.acq.Claimed.ID] = r.user
		}
	}
	if len(leases) != users {
		t.Fatalf("%d users got a lease, want %d", len(leases), users)
	}
	for u, n := range leases {
		if n != 1 {
			t.Fatalf("%s took %d leases", u, n)
		}
	}
	if len(claimedBy) != pool {
		t.Fatalf("%d pool tasks claimed, want all %d", len(claimedBy), pool)
	}
	for id, u := range claimedBy {
		c, err := e.store.PoolClaimOf(context.Background(), id)
		if err != nil || c.UserID != u {
			t.Fatalf("claim item of %s: %+v, %v (claimed by %s)", id, c, err, u)
		}
		if sb := mustGet(t, e.store, u); sb.TaskARN != c.TaskARN || !sb.Warm {
			t.Fatalf("%s's record %+v does not name its pool task", u, sb)
		}
	}
	if e.checkInvariants(t) != users {
		t.Fatal("counter")
	}
}

// A drained task is not claimed; a removed one gives its slot back once; a claim
// passes over both to the next waiting task, and with none left takes a fresh slot.
func TestPool_DrainAndRemove(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	a, b := waitingPoolTask(t, e, 1), waitingPoolTask(t, e, 2)
	stale := waiting(e.store) // read before the drain: the claim must not trust it
	list, _ := stale(ctx)
	if ok, err := e.store.DrainPool(ctx, a.ID, "test"); !ok || err != nil {
		t.Fatalf("drain: %v %v", ok, err)
	}
	if ok, _ := e.store.DrainPool(ctx, a.ID, "again"); ok {
		t.Fatal("drained twice")
	}
	if e.checkInvariants(t) != 2 {
		t.Fatal("a drain gave the slot back before the task stopped")
	}
	acq, err := e.store.AcquireClaim(ctx, "user_a", func(context.Context) ([]state.PoolTask, error) { return list, nil })
	if err != nil || acq.Claimed == nil || acq.Claimed.ID != b.ID {
		t.Fatalf("claim passed over the drained task? %+v %v", acq, err)
	}
	for i := range 2 { // the stop event, then its redelivery
		removed, err := e.store.RemovePool(ctx, a.ID, "task stopped")
		if err != nil || removed != (i == 0) {
			t.Fatalf("remove #%d: %v, %v", i+1, removed, err)
		}
	}
	if e.checkInvariants(t) != 1 {
		t.Fatal("the drained task's slot not given back exactly once")
	}
	if removed, _ := e.store.RemovePool(ctx, b.ID, "claimed already"); removed {
		t.Fatal("a claimed task's item removed again")
	}
	acq, err = e.store.AcquireClaim(ctx, "user_b", func(context.Context) ([]state.PoolTask, error) { return list, nil })
	if err != nil || acq.Claimed != nil {
		t.Fatalf("with no task left: %+v %v", acq, err)
	}
	if e.checkInvariants(t) != 2 {
		t.Fatal("counter")
	}
}

// The refill never exceeds capacity: pool tasks count against MaxSandboxes, and a
// user's start is refused like any other once pool tasks and sandboxes fill it.
func TestPool_ReserveAtCapacity(t *testing.T) {
	e := newEnv(t)
	e.store.MaxSandboxes = 2
	waitingPoolTask(t, e, 1)
	mustAcquire(t, e.store, "user_a") // claims nothing: Acquire has no pool
	_, err := e.store.ReservePool(context.Background(), poolTaskDef)
	wantErr(t, err, state.ErrCapacity)
	_, err = e.store.Acquire(context.Background(), "user_b")
	wantErr(t, err, state.ErrCapacity)
	// A claim needs no room: the pool task's slot becomes the user's.
	acq, err := e.store.AcquireClaim(context.Background(), "user_b", waiting(e.store))
	if err != nil || acq.Claimed == nil {
		t.Fatalf("claim at capacity: %+v %v", acq, err)
	}
	if e.checkInvariants(t) != 2 {
		t.Fatal("counter")
	}
}

// Registration: once, by the task the item names, from LAUNCHING only; repeated with
// the same task and secret it is the same registration.
func TestPool_Register(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	p, err := e.store.ReservePool(ctx, poolTaskDef)
	if err != nil {
		t.Fatal(err)
	}
	reg := state.PoolRegistration{ID: p.ID, TaskARN: "arn:aws:ecs:us-east-1:000000000000:task/sandgate/one",
		TaskDefinition: poolTaskDef, Endpoint: "http://127.0.9.1:8080", ClaimSecret: "s1", LaunchedAt: e.clock.Now()}
	if _, err := e.store.RegisterPool(ctx, reg); err != nil {
		t.Fatal(err)
	}
	if _, err := e.store.RegisterPool(ctx, reg); err != nil {
		t.Fatalf("the same registration again: %v", err)
	}
	other := reg
	other.ClaimSecret = "s2"
	_, err = e.store.RegisterPool(ctx, other)
	wantErr(t, err, state.ErrState)
	other = reg
	other.TaskARN += "x"
	_, err = e.store.RegisterPool(ctx, other)
	wantErr(t, err, state.ErrState)
	err = e.store.RecordPoolTask(ctx, p.ID, other.TaskARN)
	wantErr(t, err, state.ErrState)
	if err := e.store.RecordPoolTask(ctx, p.ID, reg.TaskARN); err != nil {
		t.Fatalf("RunTask's answer after the registration: %v", err)
	}
	missing := reg
	missing.ID = state.NewPoolID()
	_, err = e.store.RegisterPool(ctx, missing)
	wantErr(t, err, state.ErrNotFound)
	if ok, _ := e.store.DrainPool(ctx, p.ID, "test"); !ok {
		t.Fatal("drain")
	}
	_, err = e.store.RegisterPool(ctx, reg)
	wantErr(t, err, state.ErrState)
	if e.checkInvariants(t) != 1 {
		t.Fatal("counter")
	}
}

// ReconcileCapacity counts pool items: a counter that matches records and pool items
// is left alone, one that lost a pool task's slot is corrected.
func TestPool_Reconcile(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	waitingPoolTask(t, e, 1)
	mustAcquire(t, e.store, "user_a")
	check, err := e.store.ReconcileCapacity(ctx)
	if err != nil || check.Corrected || check.Held != 2 || check.Counter != 2 {
		t.Fatalf("check %+v, %v", check, err)
	}
}
