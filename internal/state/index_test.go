package state_test

import (
	"context"
	"fmt"
	"reflect"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/sandgate/sandgate/infra/local/testkit"
	"github.com/sandgate/sandgate/internal/state"
)

// The indexed listing yields every sandbox record once and nothing else — not the
// connections, inbox items, access items or the counter beside them — reading the
// leases whole (more than one BatchGetItem's hundred keys here) and the STOPPED
// records as the index projects them; it never scans the table.
func TestStore_ListSandboxesIndexed_OnlySandboxRecords(t *testing.T) {
	e := newEnv(t)
	e.store.MaxSandboxes = 1000
	e.store.ScanPageSize = 40
	ctx := context.Background()
	const leases, stopped = 130, 20
	for i := range leases + stopped {
		u := user(i)
		l := mustAcquire(t, e.store, u)
		if _, err := e.store.AddConnection(ctx, u, "c-"+u); err != nil {
			t.Fatal(err)
		}
		if i >= leases {
			if err := stopFully(ctx, e.store, l); err != nil {
				t.Fatal(err)
			}
			continue
		}
		enqueue(t, e.store, u, "queued while starting")
		if i%2 == 0 {
			if _, err := e.store.MarkReady(ctx, l, "http://10.0.0.1:8080", "gw"); err != nil {
				t.Fatal(err)
			}
		}
	}
	if _, err := e.store.AcquirePurge(ctx, "user_gone"); err != nil { // a purge lock from no record
		t.Fatal(err)
	}
	e.checkInvariants(t) // every record, whatever wrote it, is in the index
	e.calls.Reset()
	got := map[string]*state.Sandbox{}
	if err := e.store.ListSandboxesIndexed(ctx, func(sb *state.Sandbox) error {
		if got[sb.UserID] != nil {
			t.Errorf("%s listed twice", sb.UserID)
		}
		got[sb.UserID] = sb
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	calls := e.ddbCalls()
	// 151 index items in pages of 40 (the last page tells the end), the 131 leases
	// and purge lock read whole in two batches, and no Scan of the table.
	if calls["Scan"] != 4 || calls["BatchGetItem"] != 2 || len(calls) != 2 {
		t.Errorf("calls %v; want 4 Scans of the index and 2 BatchGetItems", calls)
	}
	if len(got) != leases+stopped+1 {
		t.Fatalf("listed %d records, want %d", len(got), leases+stopped+1)
	}
	for id, sb := range got {
		want := mustGet(t, e.store, id)
		if sb.State != want.State || sb.Generation != want.Generation || sb.LeaseToken != want.LeaseToken ||
			sb.Slot != want.Slot || !sb.StateSince.Equal(want.StateSince) || sb.TaskARN != want.TaskARN {
			t.Errorf("%s listed %+v, the record is %+v", id, *sb, *want)
		}
		if sb.State == state.Stopped {
			// As the index projects it: nothing a heartbeat writes.
			if !sb.LeaseDeadline.IsZero() || !sb.LastActivity.IsZero() || sb.Version != 0 {
				t.Errorf("STOPPED %s carries what the index leaves out: %+v", id, *sb)
			}
			continue
		}
		if *sb != *want { // a lease or a purge lock, whole
			t.Errorf("%s listed %+v, the record is %+v", id, *sb, *want)
		}
	}
}

// Records written before the index (no sandboxOf) are put into it by the backfill,
// which changes nothing else of them; the backfill ends only when a scan that began
// the settle time after the first finds nothing left, and then costs one GetItem.
func TestStore_BackfillSandboxIndex(t *testing.T) {
	e := newEnv(t)
	e.store.BackfillSettle = time.Hour
	ctx := context.Background()
	now := e.clock.Now()
	legacy := map[string]string{"user_old": string(state.Stopped), "user_dead": string(state.Running), "user_slot": string(state.Stopped)}
	for u, st := range legacy {
		item := map[string]types.AttributeValue{
			state.AttrPK:    &types.AttributeValueMemberS{Value: "USER#" + u},
			state.AttrSK:    &types.AttributeValueMemberS{Value: "SANDBOX"},
			"userId":        &types.AttributeValueMemberS{Value: u},
			"state":         &types.AttributeValueMemberS{Value: st},
			"leaseToken":    &types.AttributeValueMemberS{Value: "old-token-" + u},
			"leaseDeadline": &types.AttributeValueMemberN{Value: strconv.FormatInt(now.Add(-time.Minute).UnixMilli(), 10)},
			"generation":    &types.AttributeValueMemberN{Value: "3"},
			"stateSince":    &types.AttributeValueMemberN{Value: strconv.FormatInt(now.Add(-time.Hour).UnixMilli(), 10)},
			"version":       &types.AttributeValueMemberN{Value: "7"},
		}
		if u != "user_old" {
			item["slot"] = &types.AttributeValueMemberN{Value: "3"}
		}
		if _, err := e.client.PutItem(ctx, &dynamodb.PutItemInput{TableName: aws.String(e.table), Item: item}); err != nil {
			t.Fatal(err)
		}
	}
	mustAcquire(t, e.store, "user_new")
	listed := func() []string {
		var ids []string
		if err := e.store.ListSandboxesIndexed(ctx, func(sb *state.Sandbox) error {
			ids = append(ids, sb.UserID)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return ids
	}
	if ids := listed(); len(ids) != 1 {
		t.Fatalf("before the backfill the index shows %v, want user_new alone", ids)
	}
	before := map[string]map[string]types.AttributeValue{}
	for u := range legacy {
		before[u] = e.raw(t, "USER#"+u, "SANDBOX")
	}

	b, err := e.store.BackfillSandboxIndex(ctx)
	if err != nil || b != (state.Backfill{Added: 3}) {
		t.Fatalf("first backfill: %+v, %v", b, err)
	}
	if ids := listed(); len(ids) != 4 {
		t.Fatalf("after the backfill the index shows %v", ids)
	}
	for u := range legacy {
		after := e.raw(t, "USER#"+u, "SANDBOX")
		if fmt.Sprint(after[state.AttrSandboxOf]) != fmt.Sprint(&types.AttributeValueMemberS{Value: u}) {
			t.Errorf("%s: sandboxOf = %v", u, after[state.AttrSandboxOf])
		}
		delete(after, state.AttrSandboxOf)
		if !reflect.DeepEqual(after, before[u]) {
			t.Errorf("%s changed beyond its index key:\n%v\n%v", u, before[u], after)
		}
	}
	e.checkIndexed(t)

	// Nothing left, but too soon after the first scan to call it done: code that
	// writes records without the key may still be running.
	e.clock.Advance(30 * time.Minute)
	if b, err := e.store.BackfillSandboxIndex(ctx); err != nil || b != (state.Backfill{}) {
		t.Fatalf("second backfill: %+v, %v", b, err)
	}
	e.clock.Advance(30 * time.Minute)
	if b, err := e.store.BackfillSandboxIndex(ctx); err != nil || b != (state.Backfill{Finished: true}) {
		t.Fatalf("backfill after the settle time: %+v, %v", b, err)
	}
	e.calls.Reset()
	if b, err := e.store.BackfillSandboxIndex(ctx); err != nil || b != (state.Backfill{Done: true}) {
		t.Fatalf("backfill once done: %+v, %v", b, err)
	}
	e.wantCalls(t, map[string]int64{"GetItem": 1})
}

// frozenIndex answers Scans of the Sandboxes index from a snapshot taken when frozen,
// as a global secondary index that trails the table would; every other call reaches
// DynamoDB Local.
type frozenIndex struct {
	state.API
	mu    sync.Mutex
	pages []*dynamodb.ScanOutput
}

func (f *frozenIndex) freeze(tb testing.TB, table string) {
	tb.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	f.pages = nil
	in := &dynamodb.ScanInput{TableName: aws.String(table), IndexName: aws.String(state.SandboxIndex)}
	out, err := f.API.Scan(context.Background(), in)
	if err != nil || len(out.LastEvaluatedKey) != 0 {
		tb.Fatalf("freeze the index: %v (one page expected)", err)
	}
	f.pages = []*dynamodb.ScanOutput{out}
}

func (f *frozenIndex) thaw() { f.mu.Lock(); f.pages = nil; f.mu.Unlock() }

func (f *frozenIndex) Scan(ctx context.Context, in *dynamodb.ScanInput, opts ...func(*dynamodb.Options)) (*dynamodb.ScanOutput, error) {
	f.mu.Lock()
	pages := f.pages
	f.mu.Unlock()
	if pages != nil && aws.ToString(in.IndexName) == state.SandboxIndex {
		return pages[0], nil
	}
	return f.API.Scan(ctx, in, opts...)
}

// The index trails the table, so its count never decides a write. An index behind a
// start disagrees with an exact counter: the records are counted exactly and nothing
// is written. An index behind a stop can agree with a counter that drifted: nothing is
// written that pass, and once the index has caught up the drift is corrected.
func TestStore_ReconcileCapacity_StaleIndexNeverMiscorrects(t *testing.T) {
	db := testkit.NewDB(t)
	plain := db.Store()
	f := &frozenIndex{API: db.Client}
	s := state.New(f, db.Table)
	s.Now = db.Clock.Now
	ctx := context.Background()
	a := mustAcquire(t, plain, "user_a")
	mustAcquire(t, plain, "user_b")

	f.freeze(t, db.Table) // shows user_a and user_b
	mustAcquire(t, plain, "user_c")
	c, err := s.ReconcileCapacity(ctx)
	if err != nil || c != (state.CapacityCheck{Counter: 3, Held: 3, Recounted: true}) {
		t.Fatalf("index behind a start: %+v, %v; want a recount and no correction", c, err)
	}

	f.freeze(t, db.Table) // shows three holders
	if err := stopFully(ctx, plain, a); err != nil {
		t.Fatal(err)
	}
	setCounterTo(t, db, 3) // drifted: two records hold a slot
	c, err = s.ReconcileCapacity(ctx)
	if err != nil || c != (state.CapacityCheck{Counter: 3, Held: 3}) {
		t.Fatalf("index behind a stop, agreeing with the drifted counter: %+v, %v; want nothing written", c, err)
	}
	f.thaw()
	c, err = s.ReconcileCapacity(ctx)
	if err != nil || c != (state.CapacityCheck{Counter: 3, Held: 2, Recounted: true, Corrected: true}) {
		t.Fatalf("index caught up: %+v, %v; want the drift corrected", c, err)
	}
	if n, err := plain.Capacity(ctx); err != nil || n != 2 {
		t.Fatalf("counter %d, %v; want 2", n, err)
	}
}

func setCounterTo(tb testing.TB, db *testkit.DB, live int) {
	tb.Helper()
	if _, err := db.Raw.UpdateItem(context.Background(), &dynamodb.UpdateItemInput{
		TableName: aws.String(db.Table), Key: key("CAPACITY", "SANDBOXES"),
		UpdateExpression:          aws.String("SET live = :n"),
		ExpressionAttributeValues: map[string]types.AttributeValue{":n": &types.AttributeValueMemberN{Value: strconv.Itoa(live)}},
	}); err != nil {
		tb.Fatal(err)
	}
}

// A table made before the index (the local stack's persisted one) gets it, and its
// records from before are put into it by the backfill; a table that has it is left
// as it is.
func TestEnsureSandboxIndex_AddsTheIndexToAnOlderTable(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	older := e.table + "-older"
	in := state.CreateTableInput(older)
	in.GlobalSecondaryIndexes = nil
	in.AttributeDefinitions = in.AttributeDefinitions[:2]
	if _, err := e.client.CreateTable(ctx, in); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = e.client.DeleteTable(context.Background(), &dynamodb.DeleteTableInput{TableName: aws.String(older)})
	})
	s := state.New(e.client, older)
	s.Now = e.clock.Now
	l := mustAcquire(t, s, "user_a")
	if _, err := e.client.UpdateItem(ctx, &dynamodb.UpdateItemInput{ // as an older version wrote it
		TableName: aws.String(older), Key: key("USER#user_a", "SANDBOX"),
		UpdateExpression: aws.String("REMOVE " + state.AttrSandboxOf),
	}); err != nil {
		t.Fatal(err)
	}
	for range 2 { // adds it, then finds it there
		if err := state.EnsureSandboxIndex(ctx, e.client, older); err != nil {
			t.Fatal(err)
		}
	}
	if b, err := s.BackfillSandboxIndex(ctx); err != nil || b.Added != 1 {
		t.Fatalf("backfill: %+v, %v", b, err)
	}
	var got []*state.Sandbox
	if err := s.ListSandboxesIndexed(ctx, func(sb *state.Sandbox) error { got = append(got, sb); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].UserID != "user_a" || got[0].LeaseToken != l.Token {
		t.Fatalf("listed %+v", got)
	}
}
