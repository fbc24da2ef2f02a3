package state_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/sandgate/sandgate/internal/state"
)

func TestStore_Reap_Expired(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	l := mustAcquire(t, e.store, "user_a")
	if _, err := e.store.MarkReady(ctx, l, "http://10.0.0.1:1", "gw"); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(state.DefaultLeaseTTL + time.Millisecond)
	sb := mustGet(t, e.store, "user_a")
	e.calls.Reset()
	if err := e.store.Reap(ctx, sb); err != nil {
		t.Fatal(err)
	}
	e.wantCalls(t, map[string]int64{"TransactWriteItems": 1})
	after := mustGet(t, e.store, "user_a")
	if after.State != state.Stopped || after.Reason != state.ReasonExpired || after.GatewayToken != "" {
		t.Fatalf("after Reap %+v", *after)
	}
	if e.checkInvariants(t) != 0 {
		t.Fatal("reaped sandbox counted")
	}
	// Reaping again (a second cleanup run with the old listing) changes nothing.
	if err := e.store.Reap(ctx, sb); err != nil {
		t.Fatalf("second Reap = %v", err)
	}
	if e.checkInvariants(t) != 0 {
		t.Fatal("second reap changed the count")
	}
}

func TestStore_Reap_NotExpired(t *testing.T) {
	e := newEnv(t)
	mustAcquire(t, e.store, "user_a")
	sb := mustGet(t, e.store, "user_a")
	e.calls.Reset()
	wantErr(t, e.store.Reap(context.Background(), sb), state.ErrHeld)
	e.wantCalls(t, map[string]int64{}) // decided from the listing, nothing written
	if e.checkInvariants(t) != 1 {
		t.Fatal("count changed")
	}
}

// Cleanup read an expired record, then the holder renewed: the reap must lose.
func TestStore_Reap_RenewedMeanwhile(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	l := mustAcquire(t, e.store, "user_a")
	e.clock.Advance(state.DefaultStartTTL + time.Second)
	seen := mustGet(t, e.store, "user_a")
	if _, err := e.store.Heartbeat(ctx, l, time.Time{}); err != nil {
		t.Fatal(err)
	}
	var held *state.HeldError
	if err := e.store.Reap(ctx, seen); !errors.As(err, &held) || held.Sandbox.LeaseToken != l.Token {
		t.Fatalf("Reap after renewal = %v, want *HeldError with the renewed lease", err)
	}
	if sb := mustGet(t, e.store, "user_a"); sb.State != state.Starting {
		t.Fatalf("record after lost reap %+v", *sb)
	}
	if e.checkInvariants(t) != 1 {
		t.Fatal("count changed")
	}
}

// Cleanup read an expired record, then a caller took it over: the reap must lose.
func TestStore_Reap_TakenOverMeanwhile(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	mustAcquire(t, e.store, "user_a")
	e.clock.Advance(state.DefaultStartTTL + time.Second)
	seen := mustGet(t, e.store, "user_a")
	l2 := mustAcquire(t, e.store, "user_a")
	var lost *state.LeaseLostError
	if err := e.store.Reap(ctx, seen); !errors.As(err, &lost) || lost.Current.LeaseToken != l2.Token {
		t.Fatalf("Reap after takeover = %v, want *LeaseLostError with the new lease", err)
	}
	if e.checkInvariants(t) != 1 {
		t.Fatal("count changed")
	}
}

func TestStore_Reap_ExpiredPurge(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	if _, err := e.store.AcquirePurge(ctx, "user_a"); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(state.DefaultPurgeTTL)
	if err := e.store.Reap(ctx, mustGet(t, e.store, "user_a")); err != nil {
		t.Fatal(err)
	}
	if sb := mustGet(t, e.store, "user_a"); sb.State != state.Stopped {
		t.Fatalf("after reaping a purge %+v", *sb)
	}
	if e.checkInvariants(t) != 0 {
		t.Fatal("reaping a purge changed the count")
	}
}

func TestStore_AcquirePurge(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()

	// Live sandbox: refused, with the holder.
	l := mustAcquire(t, e.store, "user_live")
	_, err := e.store.AcquirePurge(ctx, "user_live")
	wantErr(t, err, state.ErrHeld)
	// Dead sandbox: still refused until reaped, so its slot is given back first.
	e.clock.Advance(state.DefaultStartTTL)
	_, err = e.store.AcquirePurge(ctx, "user_live")
	wantErr(t, err, state.ErrHeld)
	if err := e.store.Reap(ctx, mustGet(t, e.store, "user_live")); err != nil {
		t.Fatal(err)
	}
	p, err := e.store.AcquirePurge(ctx, "user_live")
	if err != nil {
		t.Fatal(err)
	}
	if p.Generation != l.Generation+1 {
		t.Fatalf("purge generation %d after %d", p.Generation, l.Generation)
	}
	// Exclusion: neither a start nor a second purge while it runs.
	_, err = e.store.Acquire(ctx, "user_live")
	wantErr(t, err, state.ErrPurging)
	_, err = e.store.AcquirePurge(ctx, "user_live")
	wantErr(t, err, state.ErrPurging)
	if e.checkInvariants(t) != 0 {
		t.Fatal("purge counted")
	}
	// A purge of a user without a record also locks.
	p2, err := e.store.AcquirePurge(ctx, "user_never")
	if err != nil || p2.Generation != 1 {
		t.Fatalf("AcquirePurge(no record) = %+v, %v", p2, err)
	}
	e.calls.Reset()
	if err := e.store.FinishPurge(ctx, p); err != nil {
		t.Fatal(err)
	}
	e.wantCalls(t, map[string]int64{"DeleteItem": 1})
	_, err = e.store.Get(ctx, "user_live")
	wantErr(t, err, state.ErrNotFound)
	if err := e.store.FinishPurge(ctx, p); err != nil {
		t.Fatalf("second FinishPurge = %v", err)
	}
	// A stale purge lease cannot delete a newer lock.
	e.clock.Advance(state.DefaultPurgeTTL)
	p3, err := e.store.AcquirePurge(ctx, "user_never")
	if err != nil {
		t.Fatal(err)
	}
	wantErr(t, e.store.FinishPurge(ctx, p2), state.ErrLeaseLost)
	if err := e.store.FinishPurge(ctx, p3); err != nil {
		t.Fatal(err)
	}
	// After the purge the user starts afresh.
	mustAcquire(t, e.store, "user_live")
	if e.checkInvariants(t) != 1 {
		t.Fatal("count after purge")
	}
}

func TestStore_ListSandboxes_Paginates(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	want := map[string]bool{}
	for i := range 23 {
		user := fmt.Sprintf("user_%02d", i)
		mustAcquire(t, e.store, user)
		if _, err := e.store.AddConnection(ctx, user, "conn"+user); err != nil {
			t.Fatal(err)
		}
		want[user] = true
	}
	e.store.ScanPageSize = 10
	e.calls.Reset()
	got := map[string]bool{}
	if err := e.store.ListSandboxes(ctx, func(sb *state.Sandbox) error {
		if got[sb.UserID] {
			return fmt.Errorf("%s listed twice", sb.UserID)
		}
		got[sb.UserID] = true
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("listed %d sandboxes, want %d", len(got), len(want))
	}
	if n := e.calls.Calls("DynamoDB", "Scan"); n < 5 { // 47 items (+capacity) in pages of 10
		t.Fatalf("%d Scan calls, want paging", n)
	}
	stop := errors.New("stop")
	if err := e.store.ListSandboxes(ctx, func(*state.Sandbox) error { return stop }); !errors.Is(err, stop) {
		t.Fatalf("ListSandboxes = %v, want the callback's error", err)
	}
}
