package state_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sandgate/sandgate/infra/local/testkit"
	"github.com/sandgate/sandgate/internal/logging"
	"github.com/sandgate/sandgate/internal/state"
)

func TestStore_Acquire_Fresh(t *testing.T) {
	e := newEnv(t)
	now := e.clock.Now()
	l := mustAcquire(t, e.store, "user_a")
	e.wantCalls(t, map[string]int64{"GetItem": 1, "TransactWriteItems": 1})
	if l.UserID != "user_a" || l.Token == "" || l.Generation != 1 || !l.Deadline.Equal(now.Add(state.DefaultStartTTL)) {
		t.Fatalf("lease %+v", l)
	}
	sb := mustGet(t, e.store, "user_a")
	if sb.State != state.Starting || sb.LeaseToken != l.Token || sb.Generation != 1 || !sb.LeaseDeadline.Equal(l.Deadline) ||
		!sb.StateSince.Equal(now) || !sb.LastActivity.Equal(now) || sb.Version != 1 || !sb.Live(now) {
		t.Fatalf("record %+v", *sb)
	}
	if e.checkInvariants(t) != 1 {
		t.Fatal("want one live sandbox")
	}
}

func TestStore_Acquire_Held(t *testing.T) {
	e := newEnv(t)
	first := mustAcquire(t, e.store, "user_a")
	e.calls.Reset()
	_, err := e.store.Acquire(context.Background(), "user_a")
	var held *state.HeldError
	if !errors.As(err, &held) || !errors.Is(err, state.ErrHeld) {
		t.Fatalf("second Acquire = %v, want *HeldError", err)
	}
	if held.Sandbox.LeaseToken != first.Token || held.Sandbox.Generation != 1 {
		t.Fatalf("HeldError carries %+v, want the first lease", *held.Sandbox)
	}
	e.wantCalls(t, map[string]int64{"GetItem": 1})
	e.checkInvariants(t)
}

func TestStore_Acquire_AfterStop(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	l1 := mustAcquire(t, e.store, "user_a")
	if err := stopFully(ctx, e.store, l1); err != nil {
		t.Fatal(err)
	}
	if e.checkInvariants(t) != 0 {
		t.Fatal("stopped sandbox still counted")
	}
	e.calls.Reset()
	l2 := mustAcquire(t, e.store, "user_a")
	e.wantCalls(t, map[string]int64{"GetItem": 1, "TransactWriteItems": 1}) // a fresh slot
	if l2.Generation != 2 || l2.Token == l1.Token {
		t.Fatalf("second lease %+v after %+v", l2, l1)
	}
	if sb := mustGet(t, e.store, "user_a"); sb.TaskARN != "" || sb.Reason != "" || sb.State != state.Starting {
		t.Fatalf("record after re-acquire keeps old fields: %+v", *sb)
	}
	e.checkInvariants(t)
}

func TestStore_Acquire_TakeoverKeepsCapacity(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	old := mustAcquire(t, e.store, "user_a")
	if err := e.store.SetTask(ctx, old, "arn:task/1"); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(state.DefaultStartTTL) // the deadline itself counts as expired
	var logs testkit.Logs
	e.store.Logger = logs.Logger()
	e.calls.Reset()
	l := mustAcquire(t, e.store, "user_a")
	e.wantCalls(t, map[string]int64{"GetItem": 1, "UpdateItem": 1}) // no capacity transaction
	// One warning naming the user, the state taken over and the new generation; no token.
	lines := logs.Lines(t)
	if len(lines) != 1 || lines[0][slog.LevelKey] != slog.LevelWarn.String() || lines[0][logging.UserID] != "user_a" ||
		lines[0][logging.State] != string(state.Starting) || lines[0]["generation"] != float64(l.Generation) ||
		strings.Contains(logs.String(), old.Token) || strings.Contains(logs.String(), l.Token) {
		t.Fatalf("takeover log %q: want one warning with the user, the old state, the new generation and no token", logs.String())
	}
	if l.Generation != 2 || l.Token == old.Token {
		t.Fatalf("takeover lease %+v", l)
	}
	if sb := mustGet(t, e.store, "user_a"); sb.TaskARN != "" || sb.LeaseToken != l.Token {
		t.Fatalf("record after takeover %+v", *sb)
	}
	if e.checkInvariants(t) != 1 {
		t.Fatal("takeover changed the count")
	}
	// The dead holder wakes up: every write it tries is fenced off.
	if _, err := e.store.Heartbeat(ctx, old, time.Time{}); !errors.Is(err, state.ErrLeaseLost) {
		t.Fatalf("old holder's Heartbeat = %v, want ErrLeaseLost", err)
	}
}

func TestStore_Acquire_Purging(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	p, err := e.store.AcquirePurge(ctx, "user_a")
	if err != nil {
		t.Fatal(err)
	}
	_, err = e.store.Acquire(ctx, "user_a")
	wantErr(t, err, state.ErrPurging)
	if e.checkInvariants(t) != 0 {
		t.Fatal("purge counted")
	}
	// Once the lock expires, its purge is presumed dead, perhaps halfway through the
	// prefix: a start is still refused, and nothing is written.
	e.clock.Advance(state.DefaultPurgeTTL)
	e.calls.Reset()
	_, err = e.store.Acquire(ctx, "user_a")
	wantErr(t, err, state.ErrPurging)
	e.wantCalls(t, map[string]int64{"GetItem": 1})
	if sb := mustGet(t, e.store, "user_a"); sb.State != state.Purging || sb.LeaseToken != p.Token {
		t.Fatalf("record after a refused start on an expired purge %+v", *sb)
	}
	// Only the purge's own end admits starts again.
	if err := e.store.ReleasePurge(ctx, p); err != nil {
		t.Fatal(err)
	}
	l := mustAcquire(t, e.store, "user_a")
	if l.Generation != p.Generation+1 {
		t.Fatalf("generation %d after purge generation %d", l.Generation, p.Generation)
	}
	if e.checkInvariants(t) != 1 {
		t.Fatal("start after released purge not counted")
	}
	wantErr(t, e.store.FinishPurge(ctx, p), state.ErrLeaseLost)
}

func TestStore_Acquire_BadInput(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	_, err := e.store.Acquire(ctx, "")
	wantErr(t, err, state.ErrInvalid)
	_, err = e.store.Get(ctx, "")
	wantErr(t, err, state.ErrInvalid)
	wantErr(t, e.store.Stop(ctx, state.Lease{UserID: "user_a"}), state.ErrInvalid)
	wantErr(t, e.store.SetTask(ctx, state.Lease{UserID: "user_a", Token: "t"}, ""), state.ErrInvalid)
	_, err = e.store.MarkReady(ctx, state.Lease{UserID: "user_a", Token: "t"}, "", "gw")
	wantErr(t, err, state.ErrInvalid)
	e.wantCalls(t, map[string]int64{})
}

func TestStore_Get(t *testing.T) {
	e := newEnv(t)
	_, err := e.store.Get(context.Background(), "user_nobody")
	wantErr(t, err, state.ErrNotFound)
	e.wantCalls(t, map[string]int64{"GetItem": 1})
	mustAcquire(t, e.store, "user_a")
	e.calls.Reset()
	mustGet(t, e.store, "user_a")
	e.wantCalls(t, map[string]int64{"GetItem": 1}) // the warm path: one read, no write
}

func TestStore_Lifecycle(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	l := mustAcquire(t, e.store, "user_a")
	if err := e.store.SetTask(ctx, l, "arn:aws:ecs:task/abc"); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(40 * time.Second)
	ready, err := e.store.MarkReady(ctx, l, "http://10.0.0.1:8080", "gw-secret")
	if err != nil {
		t.Fatal(err)
	}
	now := e.clock.Now()
	if !ready.Deadline.Equal(now.Add(state.DefaultLeaseTTL)) || ready.Token != l.Token {
		t.Fatalf("MarkReady lease %+v", ready)
	}
	sb := mustGet(t, e.store, "user_a")
	if sb.State != state.Running || sb.Endpoint != "http://10.0.0.1:8080" || sb.GatewayToken != "gw-secret" ||
		sb.TaskARN != "arn:aws:ecs:task/abc" || !sb.LeaseDeadline.Equal(ready.Deadline) || !sb.HeartbeatAt.Equal(now) {
		t.Fatalf("after MarkReady %+v", *sb)
	}
	e.clock.Advance(20 * time.Second)
	activity := e.clock.Now().Add(-time.Second)
	e.calls.Reset()
	hb, err := e.store.Heartbeat(ctx, ready, activity)
	if err != nil {
		t.Fatal(err)
	}
	e.wantCalls(t, map[string]int64{"UpdateItem": 1})
	sb = mustGet(t, e.store, "user_a")
	if !hb.Deadline.Equal(e.clock.Now().Add(state.DefaultLeaseTTL)) || !sb.LeaseDeadline.Equal(hb.Deadline) || !sb.LastActivity.Equal(activity) {
		t.Fatalf("after Heartbeat: lease %+v, record %+v", hb, *sb)
	}
	if err := e.store.MarkStopping(ctx, hb); err != nil {
		t.Fatal(err)
	}
	if _, err := e.store.MarkReady(ctx, hb, "http://x", "y"); !errors.Is(err, state.ErrState) || errors.Is(err, state.ErrLeaseLost) {
		t.Fatalf("MarkReady while STOPPING = %v, want ErrState", err)
	}
	if _, err := e.store.Heartbeat(ctx, hb, time.Time{}); err != nil {
		t.Fatalf("Heartbeat while STOPPING (final sync) = %v", err)
	}
	e.calls.Reset()
	if err := e.store.Stop(ctx, hb); err != nil {
		t.Fatal(err)
	}
	// The holder's own record only: the agent never writes the capacity counter.
	e.wantCalls(t, map[string]int64{"UpdateItem": 1})
	sb = mustGet(t, e.store, "user_a")
	if sb.State != state.Stopped || sb.Endpoint != "" || sb.GatewayToken != "" || sb.Reason != state.ReasonStopped || sb.Slot != hb.Generation {
		t.Fatalf("after Stop %+v", *sb)
	}
	// A repeated Stop (a lost response retried) succeeds and changes nothing.
	if err := e.store.Stop(ctx, hb); err != nil {
		t.Fatalf("second Stop = %v", err)
	}
	if e.checkInvariants(t) != 1 {
		t.Fatal("the stopped sandbox's slot went back before its task stopped")
	}
	// Its task stops: the slot goes back, once.
	e.calls.Reset()
	if end := taskStopped(t, e.store, hb); end.Ended != "" || !end.SlotReturned {
		t.Fatalf("task stopped = %+v, want the slot back and no lease ended", end)
	}
	e.wantCalls(t, map[string]int64{"GetItem": 1, "TransactWriteItems": 1})
	if end := taskStopped(t, e.store, hb); end != (state.TaskEnd{}) {
		t.Fatalf("task stopped again = %+v, want nothing", end)
	}
	e.wantCalls(t, map[string]int64{"GetItem": 1})
	if e.checkInvariants(t) != 0 {
		t.Fatal("stopped sandbox counted")
	}
	if _, err := e.store.Heartbeat(ctx, hb, time.Time{}); !errors.Is(err, state.ErrState) {
		t.Fatalf("Heartbeat after Stop = %v, want ErrState", err)
	}
}

func TestStore_Release_RecordsReason(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	l := mustAcquire(t, e.store, "user_a")
	if err := e.store.Release(ctx, l, "run task: capacity unavailable"); err != nil {
		t.Fatal(err)
	}
	sb := mustGet(t, e.store, "user_a")
	if sb.State != state.Stopped || sb.Reason != "run task: capacity unavailable" {
		t.Fatalf("after Release %+v", *sb)
	}
	if e.checkInvariants(t) != 0 {
		t.Fatal("released sandbox counted")
	}
}

// Every fenced write with a stale token fails with ErrLeaseLost and changes nothing.
func TestStore_FencedWrites_StaleToken(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	stale := mustAcquire(t, e.store, "user_a")
	e.clock.Advance(state.DefaultStartTTL + time.Second)
	current := mustAcquire(t, e.store, "user_a")
	if _, err := e.store.MarkReady(ctx, current, "http://10.0.0.2:8080", "gw"); err != nil {
		t.Fatal(err)
	}
	before := mustGet(t, e.store, "user_a")
	writes := map[string]func() error{
		"SetTask":      func() error { return e.store.SetTask(ctx, stale, "arn:stale") },
		"MarkReady":    func() error { _, err := e.store.MarkReady(ctx, stale, "http://stale", "gw-stale"); return err },
		"Heartbeat":    func() error { _, err := e.store.Heartbeat(ctx, stale, e.clock.Now()); return err },
		"MarkStopping": func() error { return e.store.MarkStopping(ctx, stale) },
		"Stop":         func() error { return e.store.Stop(ctx, stale) },
		"Release":      func() error { return e.store.Release(ctx, stale, "x") },
		"UnknownUser": func() error {
			return e.store.Stop(ctx, state.Lease{UserID: "user_nobody", Token: stale.Token})
		},
	}
	for name, write := range writes {
		err := write()
		var lost *state.LeaseLostError
		if !errors.As(err, &lost) || !errors.Is(err, state.ErrLeaseLost) {
			t.Errorf("%s with a stale token = %v, want *LeaseLostError", name, err)
			continue
		}
		if name != "UnknownUser" && (lost.Current == nil || lost.Current.LeaseToken != current.Token) {
			t.Errorf("%s: LeaseLostError.Current = %+v, want the current record", name, lost.Current)
		}
	}
	after := mustGet(t, e.store, "user_a")
	if *after != *before {
		t.Fatalf("stale writes changed the record:\nbefore %+v\nafter  %+v", *before, *after)
	}
	if e.checkInvariants(t) != 1 {
		t.Fatal("stale writes changed the count")
	}
}

func TestSandbox_LogValue_NoSecrets(t *testing.T) {
	sb := &state.Sandbox{UserID: "user_a", State: state.Running, LeaseToken: "lease-secret", GatewayToken: "gw-secret"}
	v := sb.LogValue().String() + sb.Lease().LogValue().String()
	for _, secret := range []string{"lease-secret", "gw-secret"} {
		if strings.Contains(v, secret) {
			t.Fatalf("log value %q contains %q", v, secret)
		}
	}
	if !strings.Contains(v, "user_a") {
		t.Fatalf("log value %q lacks the user", v)
	}
}

// A restart is requested once per stopping generation, whoever asks first; never for a
// sandbox that is not stopping, nor for another generation.
func TestStore_RequestRestart_OncePerStoppingGeneration(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	l, err := e.store.Acquire(ctx, "user_a")
	if err != nil {
		t.Fatal(err)
	}
	if first, err := e.store.RequestRestart(ctx, "user_a", l.Generation); err != nil || first {
		t.Fatalf("while STARTING: %v, %v; want false", first, err)
	}
	if l, err = e.store.MarkReady(ctx, l, "http://10.0.0.1:8080", "gw"); err != nil {
		t.Fatal(err)
	}
	if err := e.store.MarkStopping(ctx, l); err != nil {
		t.Fatal(err)
	}
	if first, err := e.store.RequestRestart(ctx, "user_a", l.Generation+1); err != nil || first {
		t.Fatalf("another generation: %v, %v; want false", first, err)
	}
	// Many frames at once: exactly one is first.
	var wins atomic.Int32
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			first, err := e.store.RequestRestart(ctx, "user_a", l.Generation)
			if err != nil {
				t.Error(err)
			}
			if first {
				wins.Add(1)
			}
		})
	}
	wg.Wait()
	if wins.Load() != 1 {
		t.Fatalf("%d first requests, want exactly 1", wins.Load())
	}
	// A stop that completes in the meantime still gets its one request.
	if err := e.store.Stop(ctx, l); err != nil {
		t.Fatal(err)
	}
	if first, err := e.store.RequestRestart(ctx, "user_a", l.Generation); err != nil || first {
		t.Fatalf("after the stop, already requested: %v, %v; want false", first, err)
	}
	// The next sandbox's stop is a new generation: one request again.
	next, err := e.store.Acquire(ctx, "user_a")
	if err != nil {
		t.Fatal(err)
	}
	if err := e.store.MarkStopping(ctx, next); err != nil {
		t.Fatal(err)
	}
	if err := e.store.Stop(ctx, next); err != nil {
		t.Fatal(err)
	}
	if first, err := e.store.RequestRestart(ctx, "user_a", next.Generation); err != nil || !first {
		t.Fatalf("next generation, stopped before anyone asked: %v, %v; want true", first, err)
	}
	if _, err := e.store.RequestRestart(ctx, "", 1); !errors.Is(err, state.ErrInvalid) {
		t.Fatalf("empty user id: %v", err)
	}
}
