package state_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/sandgate/sandgate/infra/local/dynamodblocal"
	"github.com/sandgate/sandgate/infra/local/testkit"
	"github.com/sandgate/sandgate/internal/state"
)

func TestMain(m *testing.M) { os.Exit(dynamodblocal.RunTests(m)) }

// env is one test's table on DynamoDB Local, a Store over it on a clock the test
// moves, and a call counter on the Store's client.
type env struct {
	store  *state.Store
	client *dynamodb.Client // uncounted, for inspecting raw items
	calls  *testkit.CallCounter
	clock  *testkit.Clock
	table  string
}

// newEnv is an env on the test binary's shared DynamoDB Local.
func newEnv(tb testing.TB) *env {
	tb.Helper()
	db := testkit.NewDB(tb)
	return &env{store: db.Store(), client: db.Raw, calls: db.Calls, clock: db.Clock, table: db.Table}
}

// newEnvOn is an env on srv whose Store's client also takes optFns: a proxy in front
// of the emulator, a quicker retryer, a server the test stops and restarts.
func newEnvOn(tb testing.TB, srv *dynamodblocal.Server, optFns ...func(*dynamodb.Options)) *env {
	tb.Helper()
	db := testkit.NewDBOn(tb, srv, optFns...)
	return &env{store: db.Store(), client: db.Raw, calls: db.Calls, clock: db.Clock, table: db.Table}
}

// ddbCalls returns DynamoDB calls per operation since the last reset, as "Op=n" pairs.
func (e *env) ddbCalls() map[string]int64 {
	m := map[string]int64{}
	for _, c := range e.calls.Snapshot() {
		if c.Service == "DynamoDB" && c.Calls > 0 {
			m[c.Operation] = c.Calls
		}
	}
	return m
}

func (e *env) wantCalls(tb testing.TB, want map[string]int64) {
	tb.Helper()
	got := e.ddbCalls()
	if fmt.Sprint(got) != fmt.Sprint(want) {
		tb.Fatalf("DynamoDB calls = %v, want %v", got, want)
	}
	e.calls.Reset()
}

// raw returns an item as stored.
func (e *env) raw(tb testing.TB, pk, sk string) map[string]types.AttributeValue {
	tb.Helper()
	out, err := e.client.GetItem(context.Background(), &dynamodb.GetItemInput{
		TableName: aws.String(e.table), ConsistentRead: aws.Bool(true),
		Key: map[string]types.AttributeValue{state.AttrPK: &types.AttributeValueMemberS{Value: pk}, state.AttrSK: &types.AttributeValueMemberS{Value: sk}},
	})
	if err != nil {
		tb.Fatal(err)
	}
	return out.Item
}

// checkInvariants asserts what must hold between operations: the capacity counter
// equals the number of records that hold a slot plus the pool items and is never
// negative, a lease holds its own generation's slot, a STOPPED record at most its own
// generation's, a purge lock none, and every counted or PURGING record is a complete
// lease (no half-acquired state). It returns what holds a slot.
func (e *env) checkInvariants(tb testing.TB) (held int) {
	tb.Helper()
	ctx := context.Background()
	n := 0
	err := e.store.ListSandboxes(ctx, func(sb *state.Sandbox) error {
		if sb.HoldsSlot() {
			n++
		}
		switch {
		case sb.State.Counted() && sb.Slot != sb.Generation,
			sb.State == state.Stopped && sb.Slot != 0 && sb.Slot != sb.Generation,
			sb.State == state.Purging && sb.Slot != 0:
			return fmt.Errorf("record of %q in %s at generation %d holds the slot of generation %d", sb.UserID, sb.State, sb.Generation, sb.Slot)
		}
		switch sb.State {
		case state.Stopped, state.Starting, state.Running, state.Stopping, state.Purging:
		default:
			return fmt.Errorf("record of %q has state %q", sb.UserID, sb.State)
		}
		if sb.State != state.Stopped && (sb.LeaseToken == "" || sb.LeaseDeadline.IsZero() || sb.Generation < 1 || sb.Version < 1 || sb.UserID == "") {
			return fmt.Errorf("incomplete lease record: %+v", *sb)
		}
		if sb.State == state.Running && (sb.Endpoint == "" || sb.GatewayToken == "") {
			return fmt.Errorf("RUNNING without endpoint: %+v", *sb)
		}
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
	// Every pool item holds a slot too.
	pool, err := e.store.PoolTasks(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	n += len(pool)
	c, err := e.store.Capacity(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	if c != n || c < 0 {
		tb.Fatalf("capacity counter %d, records holding a slot %d", c, n)
	}
	e.checkIndexed(tb)
	return n
}

// checkIndexed asserts that every sandbox record in the table is in the Sandboxes
// index, keyed on its own user and with the projected attributes it has in the table:
// whatever write created it, cleanup sees it. (DynamoDB Local updates its indexes with
// the write, so the index here never trails the table.)
func (e *env) checkIndexed(tb testing.TB) {
	tb.Helper()
	ctx := context.Background()
	table := map[string]map[string]types.AttributeValue{}
	in := &dynamodb.ScanInput{TableName: aws.String(e.table), ConsistentRead: aws.Bool(true)}
	for {
		out, err := e.client.Scan(ctx, in)
		if err != nil {
			tb.Fatal(err)
		}
		for _, it := range out.Items {
			if sk, _ := it[state.AttrSK].(*types.AttributeValueMemberS); sk != nil && sk.Value == "SANDBOX" {
				table[it[state.AttrPK].(*types.AttributeValueMemberS).Value] = it
			}
		}
		if len(out.LastEvaluatedKey) == 0 {
			break
		}
		in.ExclusiveStartKey = out.LastEvaluatedKey
	}
	index := map[string]map[string]types.AttributeValue{}
	ix := &dynamodb.ScanInput{TableName: aws.String(e.table), IndexName: aws.String(state.SandboxIndex)}
	for {
		out, err := e.client.Scan(ctx, ix)
		if err != nil {
			tb.Fatal(err)
		}
		for _, it := range out.Items {
			index[it[state.AttrPK].(*types.AttributeValueMemberS).Value] = it
		}
		if len(out.LastEvaluatedKey) == 0 {
			break
		}
		ix.ExclusiveStartKey = out.LastEvaluatedKey
	}
	if len(index) != len(table) {
		tb.Errorf("index %s holds %d records, the table %d", state.SandboxIndex, len(index), len(table))
	}
	for pk, rec := range table {
		got, ok := index[pk]
		if !ok {
			tb.Errorf("record %s is not in the index %s: %v", pk, state.SandboxIndex, rec)
			continue
		}
		if of, _ := got[state.AttrSandboxOf].(*types.AttributeValueMemberS); of == nil || "USER#"+of.Value != pk {
			tb.Errorf("record %s indexed as %v", pk, got[state.AttrSandboxOf])
		}
		for _, a := range state.SandboxIndexProjection {
			if fmt.Sprint(got[a]) != fmt.Sprint(rec[a]) {
				tb.Errorf("record %s: index has %s = %v, the table %v", pk, a, got[a], rec[a])
			}
		}
	}
}

// stopFully ends l's sandbox as a sandbox ends in production: the agent's Stop, then
// its task's stop event, which gives the slot back.
func stopFully(ctx context.Context, s *state.Store, l state.Lease) error {
	if err := s.Stop(ctx, l); err != nil {
		return err
	}
	_, err := s.TaskStopped(ctx, state.TaskRef{UserID: l.UserID, Generation: l.Generation}, "test: task stopped")
	return err
}

// taskStopped is the stop event of l's task.
func taskStopped(tb testing.TB, s *state.Store, l state.Lease) state.TaskEnd {
	tb.Helper()
	end, err := s.TaskStopped(context.Background(), state.TaskRef{UserID: l.UserID, Generation: l.Generation}, "test: task stopped")
	if err != nil {
		tb.Fatal(err)
	}
	return end
}

func mustAcquire(tb testing.TB, s *state.Store, user string) state.Lease {
	tb.Helper()
	l, err := s.Acquire(context.Background(), user)
	if err != nil {
		tb.Fatalf("Acquire(%s): %v", user, err)
	}
	return l
}

func mustGet(tb testing.TB, s *state.Store, user string) *state.Sandbox {
	tb.Helper()
	sb, err := s.Get(context.Background(), user)
	if err != nil {
		tb.Fatalf("Get(%s): %v", user, err)
	}
	return sb
}

func wantErr(tb testing.TB, err, target error) {
	tb.Helper()
	if !errors.Is(err, target) {
		tb.Fatalf("error = %v, want %v", err, target)
	}
}
