package state_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/sandgate/sandgate/infra/local/dynamodblocal"
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

// An expired purge lock is not a dead sandbox: its purge may have deleted part of
// the prefix, so Reap refuses it and writes nothing, and the lock keeps refusing
// starts until cleanup resumes it.
func TestStore_Reap_ExpiredPurge(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	p, err := e.store.AcquirePurge(ctx, "user_a")
	if err != nil {
		t.Fatal(err)
	}
	if err := e.store.BeginPurge(ctx, p); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(state.DefaultPurgeTTL)
	sb := mustGet(t, e.store, "user_a")
	if sb.Expired(e.clock.Now()) || !sb.StalePurge(e.clock.Now()) {
		t.Fatalf("expired purge lock: Expired %v, StalePurge %v", sb.Expired(e.clock.Now()), sb.StalePurge(e.clock.Now()))
	}
	e.calls.Reset()
	wantErr(t, e.store.Reap(ctx, sb), state.ErrPurging)
	e.wantCalls(t, map[string]int64{})
	if after := mustGet(t, e.store, "user_a"); after.State != state.Purging || after.Version != sb.Version {
		t.Fatalf("after reaping a purge %+v", *after)
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

// The user came back before anything was deleted: the lock goes back at once,
// STOPPED with the return recorded as activity and the lock's generation kept, so
// the next start is admitted and later passes see the user as active.
func TestStore_ReleasePurge_BeforeDeletion(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	if err := stopFully(ctx, e.store, mustAcquire(t, e.store, "user_a")); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(91 * 24 * time.Hour)
	p, err := e.store.AcquirePurge(ctx, "user_a")
	if err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(time.Minute)
	now := e.clock.Now()
	e.calls.Reset()
	if err := e.store.ReleasePurge(ctx, p); err != nil {
		t.Fatal(err)
	}
	e.wantCalls(t, map[string]int64{"UpdateItem": 1})
	sb := mustGet(t, e.store, "user_a")
	if sb.State != state.Stopped || sb.Generation != p.Generation || !sb.LastActivity.Equal(now) || !sb.StateSince.Equal(now) ||
		sb.Reason != state.ReasonPurgeReleased || !sb.PurgeStarted.IsZero() {
		t.Fatalf("after ReleasePurge %+v", *sb)
	}
	if e.checkInvariants(t) != 0 {
		t.Fatal("a released purge counted")
	}
	if err := e.store.ReleasePurge(ctx, p); err != nil {
		t.Fatalf("second ReleasePurge = %v", err)
	}
	l := mustAcquire(t, e.store, "user_a")
	if l.Generation != p.Generation+1 {
		t.Fatalf("generation %d after purge generation %d", l.Generation, p.Generation)
	}
	wantErr(t, e.store.ReleasePurge(ctx, p), state.ErrLeaseLost)
	if e.checkInvariants(t) != 1 {
		t.Fatal("count after the start")
	}
}

// Once BeginPurge has run, the lock can only be finished: not released (the data
// would come back half deleted), not by its own holder and not by the pass that
// resumes it after it expired, which keeps the first mark.
func TestStore_ReleasePurge_AfterBeginPurge(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	p, err := e.store.AcquirePurge(ctx, "user_a")
	if err != nil {
		t.Fatal(err)
	}
	began := e.clock.Now()
	if err := e.store.BeginPurge(ctx, p); err != nil {
		t.Fatal(err)
	}
	if sb := mustGet(t, e.store, "user_a"); !sb.PurgeStarted.Equal(began) {
		t.Fatalf("after BeginPurge %+v", *sb)
	}
	wantErr(t, e.store.ReleasePurge(ctx, p), state.ErrPurgeStarted)

	e.clock.Advance(state.DefaultPurgeTTL + time.Minute)
	p2, err := e.store.AcquirePurge(ctx, "user_a")
	if err != nil {
		t.Fatalf("resume = %v", err)
	}
	if p2.Generation != p.Generation+1 {
		t.Fatalf("resumed generation %d after %d", p2.Generation, p.Generation)
	}
	wantErr(t, e.store.ReleasePurge(ctx, p2), state.ErrPurgeStarted)
	wantErr(t, e.store.BeginPurge(ctx, p), state.ErrLeaseLost) // the dead purge is fenced off
	if err := e.store.BeginPurge(ctx, p2); err != nil {
		t.Fatal(err)
	}
	if sb := mustGet(t, e.store, "user_a"); sb.State != state.Purging || !sb.PurgeStarted.Equal(began) {
		t.Fatalf("resumed lock %+v: want the first mark kept", *sb)
	}
	if err := e.store.FinishPurge(ctx, p2); err != nil {
		t.Fatal(err)
	}
	mustAcquire(t, e.store, "user_a")
	if sb := mustGet(t, e.store, "user_a"); sb.Generation != 1 || !sb.PurgeStarted.IsZero() {
		t.Fatalf("start after the purge %+v", *sb)
	}
	if e.checkInvariants(t) != 1 {
		t.Fatal("count after the start")
	}
}

// The scan judged the user inactive; they started and stopped a sandbox before the
// lock: the lock is refused with an *ActiveError, and nothing is written.
func TestStore_AcquirePurgeIfInactive_ActiveSinceCutoff(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	for _, u := range []string{"user_a", "user_b"} {
		if err := stopFully(ctx, e.store, mustAcquire(t, e.store, u)); err != nil {
			t.Fatal(err)
		}
	}
	e.clock.Advance(91 * 24 * time.Hour)
	cutoff := e.clock.Now().Add(-90 * 24 * time.Hour)
	if err := stopFully(ctx, e.store, mustAcquire(t, e.store, "user_a")); err != nil {
		t.Fatal(err)
	}
	before := mustGet(t, e.store, "user_a")
	e.calls.Reset()
	_, err := e.store.AcquirePurgeIfInactive(ctx, "user_a", cutoff)
	var active *state.ActiveError
	if !errors.As(err, &active) || !errors.Is(err, state.ErrActive) || !active.Sandbox.LastActivity.Equal(e.clock.Now()) {
		t.Fatalf("AcquirePurgeIfInactive(active user) = %v, want *ActiveError", err)
	}
	e.wantCalls(t, map[string]int64{"GetItem": 1})
	if sb := mustGet(t, e.store, "user_a"); sb.State != state.Stopped || sb.Version != before.Version {
		t.Fatalf("record after refused lock %+v", *sb)
	}
	// The inactive one is locked.
	if _, err := e.store.AcquirePurgeIfInactive(ctx, "user_b", cutoff); err != nil {
		t.Fatal(err)
	}
	if sb := mustGet(t, e.store, "user_b"); sb.State != state.Purging {
		t.Fatalf("inactive user's record %+v", *sb)
	}
}

// The user comes back between the lock's read and its write: the write's condition
// refuses it, and the caller learns why from the record DynamoDB returns.
func TestStore_AcquirePurgeIfInactive_ActiveBetweenReadAndWrite(t *testing.T) {
	srv := dynamodblocal.StartForTest(t)
	proxy := newConflictProxy(t, srv.Endpoint(), 0)
	e := newEnvOn(t, srv, func(o *dynamodb.Options) { o.BaseEndpoint = aws.String(proxy.URL) })
	ctx := context.Background()
	if err := stopFully(ctx, e.store, mustAcquire(t, e.store, "user_a")); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(91 * 24 * time.Hour)
	cutoff := e.clock.Now().Add(-90 * 24 * time.Hour)
	// The other writer goes around the proxy, so its own UpdateItems do not trip it.
	direct := state.New(e.client, e.table)
	direct.Now = e.clock.Now
	back := func() {
		l, err := direct.Acquire(ctx, "user_a")
		if err == nil {
			err = stopFully(ctx, direct, l)
		}
		if err != nil {
			t.Error(err)
		}
	}
	proxy.before.Store(&back)
	_, err := e.store.AcquirePurgeIfInactive(ctx, "user_a", cutoff)
	wantErr(t, err, state.ErrActive)
	if proxy.before.Load() != nil {
		t.Fatal("the user never came back")
	}
	if sb := mustGet(t, e.store, "user_a"); sb.State != state.Stopped {
		t.Fatalf("record %+v", *sb)
	}
}

// Without a last activity (records older than the attribute), the time the record
// entered its state decides; a record with neither is never judged inactive.
func TestStore_AcquirePurgeIfInactive_StateSinceWithoutActivity(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	now := e.clock.Now()
	cutoff := now.Add(-90 * 24 * time.Hour)
	put := func(user string, since time.Time) {
		item := map[string]types.AttributeValue{
			state.AttrPK: &types.AttributeValueMemberS{Value: "USER#" + user},
			state.AttrSK: &types.AttributeValueMemberS{Value: "SANDBOX"},
			"userId":     &types.AttributeValueMemberS{Value: user},
			"state":      &types.AttributeValueMemberS{Value: string(state.Stopped)},
			"leaseToken": &types.AttributeValueMemberS{Value: "old-token-" + user},
			"generation": &types.AttributeValueMemberN{Value: "3"},
			"version":    &types.AttributeValueMemberN{Value: "7"},
		}
		if !since.IsZero() {
			item["stateSince"] = &types.AttributeValueMemberN{Value: strconv.FormatInt(since.UnixMilli(), 10)}
		}
		if _, err := e.client.PutItem(ctx, &dynamodb.PutItemInput{TableName: aws.String(e.table), Item: item}); err != nil {
			t.Fatal(err)
		}
	}
	put("user_old", cutoff.Add(-time.Millisecond))
	put("user_recent", cutoff)
	put("user_unknown", time.Time{})
	if p, err := e.store.AcquirePurgeIfInactive(ctx, "user_old", cutoff); err != nil || p.Generation != 4 {
		t.Fatalf("old record: %+v, %v", p, err)
	}
	for _, u := range []string{"user_recent", "user_unknown"} {
		_, err := e.store.AcquirePurgeIfInactive(ctx, u, cutoff)
		wantErr(t, err, state.ErrActive)
	}
}

// A stale purge lock is retaken whatever the user's activity, since its purge may
// have begun deleting; a live one is refused; a user without a record has nothing to
// lock.
func TestStore_AcquirePurgeIfInactive_StalePurgeAndNoRecord(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	if err := stopFully(ctx, e.store, mustAcquire(t, e.store, "user_a")); err != nil {
		t.Fatal(err)
	}
	p, err := e.store.AcquirePurge(ctx, "user_a") // recent activity: an explicit erasure
	if err != nil {
		t.Fatal(err)
	}
	cutoff := e.clock.Now().Add(-90 * 24 * time.Hour)
	_, err = e.store.AcquirePurgeIfInactive(ctx, "user_a", cutoff)
	wantErr(t, err, state.ErrPurging)
	e.clock.Advance(state.DefaultPurgeTTL)
	p2, err := e.store.AcquirePurgeIfInactive(ctx, "user_a", cutoff)
	if err != nil || p2.Generation != p.Generation+1 {
		t.Fatalf("resume = %+v, %v", p2, err)
	}
	e.calls.Reset()
	_, err = e.store.AcquirePurgeIfInactive(ctx, "user_none", cutoff)
	wantErr(t, err, state.ErrNotFound)
	e.wantCalls(t, map[string]int64{"GetItem": 1})
	_, err = e.store.AcquirePurgeIfInactive(ctx, "user_a", time.Time{})
	wantErr(t, err, state.ErrInvalid)
	if e.checkInvariants(t) != 0 {
		t.Fatal("purge counted")
	}
}
