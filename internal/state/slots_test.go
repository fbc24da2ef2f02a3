package state_test

import (
	"context"
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/sandgate/sandgate/infra/local/dynamodblocal"
	"github.com/sandgate/sandgate/internal/state"
)

// The capacity counter's arithmetic, path by path: what each write does to the
// counter and to the record's slot. Every test ends with the counter equal to the
// records that hold a slot (checkInvariants).

// counter is the capacity counter now.
func counter(tb testing.TB, e *env) int {
	tb.Helper()
	n, err := e.store.Capacity(context.Background())
	if err != nil {
		tb.Fatal(err)
	}
	return n
}

// wantSlot asserts the user's record is in st and holds generation slot's slot (0: none).
func wantSlot(tb testing.TB, e *env, user string, st state.State, slot int64) *state.Sandbox {
	tb.Helper()
	sb := mustGet(tb, e.store, user)
	if sb.State != st || sb.Slot != slot {
		tb.Fatalf("%s: %s holding slot %d, want %s holding %d", user, sb.State, sb.Slot, st, slot)
	}
	return sb
}

func ref(l state.Lease) state.TaskRef {
	return state.TaskRef{UserID: l.UserID, Generation: l.Generation}
}

// Fresh start +1; the agent's Stop 0 (the slot waits for the task); the task's stop
// event -1; the same event delivered again 0.
func TestSlots_NormalStop(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	l := mustAcquire(t, e.store, "user_a")
	wantSlot(t, e, "user_a", state.Starting, 1)
	if counter(t, e) != 1 {
		t.Fatal("fresh start not counted")
	}
	if err := e.store.Stop(ctx, l); err != nil {
		t.Fatal(err)
	}
	wantSlot(t, e, "user_a", state.Stopped, 1)
	if e.checkInvariants(t) != 1 {
		t.Fatal("the slot went back before the task stopped")
	}
	if end := taskStopped(t, e.store, l); end != (state.TaskEnd{SlotReturned: true}) {
		t.Fatalf("stop event = %+v", end)
	}
	wantSlot(t, e, "user_a", state.Stopped, 0)
	for range 3 { // redelivered
		if end := taskStopped(t, e.store, l); end != (state.TaskEnd{}) {
			t.Fatalf("redelivered stop event = %+v", end)
		}
	}
	if e.checkInvariants(t) != 0 {
		t.Fatal("slot not given back exactly once")
	}
}

// A task that dies before it is ready: the first event (its container exited, or it
// failed to start) ends the STARTING lease at once and keeps the slot (0); the
// STOPPED event gives it back (-1). Either event alone, or both in either order, give
// it back once.
func TestSlots_StartFailure(t *testing.T) {
	for _, order := range []string{"exited then stopped", "stopped then exited", "stopped only"} {
		t.Run(order, func(t *testing.T) {
			e := newEnv(t)
			ctx := context.Background()
			l := mustAcquire(t, e.store, "user_a")
			if err := e.store.SetTask(ctx, l, "arn:task/1"); err != nil {
				t.Fatal(err)
			}
			r := ref(l)
			r.TaskARN, r.Token = "arn:task/1", l.Token
			exited := func() state.TaskEnd {
				end, err := e.store.TaskExited(ctx, r, "start failed: CannotPullContainerError")
				if err != nil {
					t.Fatal(err)
				}
				return end
			}
			stopped := func() state.TaskEnd {
				end, err := e.store.TaskStopped(ctx, r, "start failed: CannotPullContainerError")
				if err != nil {
					t.Fatal(err)
				}
				return end
			}
			var ends []state.TaskEnd
			switch order {
			case "exited then stopped":
				ends = append(ends, exited())
				wantSlot(t, e, "user_a", state.Stopped, 1)
				if e.checkInvariants(t) != 1 {
					t.Fatal("slot went back before the task stopped")
				}
				ends = append(ends, stopped())
			case "stopped then exited":
				ends = append(ends, stopped(), exited())
			default:
				ends = append(ends, stopped())
			}
			if ends[0].Ended != state.Starting {
				t.Fatalf("first event = %+v, want the STARTING lease ended", ends[0])
			}
			returned := 0
			for _, end := range ends {
				if end.SlotReturned {
					returned++
				}
			}
			if returned != 1 {
				t.Fatalf("events %+v gave back %d slots, want 1", ends, returned)
			}
			sb := wantSlot(t, e, "user_a", state.Stopped, 0)
			if sb.Reason != "start failed: CannotPullContainerError" || sb.LeaseToken != l.Token {
				t.Fatalf("record %+v", *sb)
			}
			if e.checkInvariants(t) != 0 {
				t.Fatal("counted after the task stopped")
			}
			// The user starts again at once, on a fresh slot.
			if l2 := mustAcquire(t, e.store, "user_a"); l2.Generation != 2 || e.checkInvariants(t) != 1 {
				t.Fatalf("restart %+v", l2)
			}
		})
	}
}

// A RUNNING sandbox whose task died (no Stop of its own): the stop event ends the
// lease and gives the slot back (-1) in one transaction.
func TestSlots_Crash(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	l := mustAcquire(t, e.store, "user_a")
	if _, err := e.store.MarkReady(ctx, l, "http://10.0.0.1:8080", "gw"); err != nil {
		t.Fatal(err)
	}
	e.calls.Reset()
	end, err := e.store.TaskStopped(ctx, ref(l), "task stopped: EssentialContainerExited")
	if err != nil || end != (state.TaskEnd{Ended: state.Running, SlotReturned: true}) {
		t.Fatalf("stop event = %+v, %v", end, err)
	}
	e.wantCalls(t, map[string]int64{"GetItem": 1, "TransactWriteItems": 1})
	sb := wantSlot(t, e, "user_a", state.Stopped, 0)
	if sb.Endpoint != "" || sb.GatewayToken != "" {
		t.Fatalf("a dead agent's endpoint kept: %+v", *sb)
	}
	if e.checkInvariants(t) != 0 {
		t.Fatal("dead sandbox counted")
	}
	// The dead agent's own writes are refused: its lease has ended.
	if _, err := e.store.Heartbeat(ctx, l, time.Time{}); !errors.Is(err, state.ErrState) {
		t.Fatalf("heartbeat after the crash = %v", err)
	}
}

// A takeover of an expired lease keeps the dead sandbox's slot (0) for the new
// generation: the old task's stop event gives nothing back, the new one's does.
func TestSlots_TakeoverKeepsTheSlot(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	old := mustAcquire(t, e.store, "user_a")
	e.clock.Advance(state.DefaultStartTTL)
	l := mustAcquire(t, e.store, "user_a")
	wantSlot(t, e, "user_a", state.Starting, 2)
	if e.checkInvariants(t) != 1 {
		t.Fatal("takeover changed the count")
	}
	for _, f := range []func() (state.TaskEnd, error){
		func() (state.TaskEnd, error) { return e.store.TaskExited(ctx, ref(old), "old task exited") },
		func() (state.TaskEnd, error) { return e.store.TaskStopped(ctx, ref(old), "old task stopped") },
	} {
		if end, err := f(); err != nil || end != (state.TaskEnd{}) {
			t.Fatalf("the old task's event = %+v, %v; want nothing", end, err)
		}
	}
	wantSlot(t, e, "user_a", state.Starting, 2)
	if back, err := e.store.ReturnSlot(ctx, "user_a", old.Generation); err != nil || back {
		t.Fatalf("ReturnSlot of the old generation = %v, %v", back, err)
	}
	if err := stopFully(ctx, e.store, l); err != nil {
		t.Fatal(err)
	}
	if e.checkInvariants(t) != 0 {
		t.Fatal("slot not given back by the new task")
	}
}

// A start over a STOPPED record whose task has not yet been seen to stop takes its
// slot over (0, no admission needed even at the bound); the old task's event is then
// about nothing the record holds.
func TestSlots_StartOverAStoppingTask(t *testing.T) {
	e := newEnv(t)
	e.store.MaxSandboxes = 1
	ctx := context.Background()
	old := mustAcquire(t, e.store, "user_a")
	if err := e.store.Stop(ctx, old); err != nil {
		t.Fatal(err)
	}
	e.calls.Reset()
	l := mustAcquire(t, e.store, "user_a")
	e.wantCalls(t, map[string]int64{"GetItem": 1, "UpdateItem": 1})
	wantSlot(t, e, "user_a", state.Starting, 2)
	if e.checkInvariants(t) != 1 {
		t.Fatal("the slot was taken twice")
	}
	if end := taskStopped(t, e.store, old); end != (state.TaskEnd{}) {
		t.Fatalf("the old task's stop event = %+v, want nothing", end)
	}
	if e.checkInvariants(t) != 1 {
		t.Fatal("the old task's event gave back the new one's slot")
	}
	// Another user is still refused: one slot, one task.
	_, err := e.store.Acquire(ctx, "user_b")
	wantErr(t, err, state.ErrCapacity)
	if err := stopFully(ctx, e.store, l); err != nil {
		t.Fatal(err)
	}
	mustAcquire(t, e.store, "user_b")
	e.checkInvariants(t)
}

// Release (RunTask failed: no task will ever stop) gives the slot back at once (-1); a
// stop event of a task that ran after all finds nothing. Reap does the same for an
// expired lease, and its dead task's later event finds nothing.
func TestSlots_ReleaseAndReapGiveBackAtOnce(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	l := mustAcquire(t, e.store, "user_a")
	if err := e.store.Release(ctx, l, "run task failed"); err != nil {
		t.Fatal(err)
	}
	wantSlot(t, e, "user_a", state.Stopped, 0)
	if end := taskStopped(t, e.store, l); end != (state.TaskEnd{}) {
		t.Fatalf("stop event after Release = %+v", end)
	}
	// A repeated Release succeeds and changes nothing.
	if err := e.store.Release(ctx, l, "run task failed"); err != nil {
		t.Fatal(err)
	}
	if e.checkInvariants(t) != 0 {
		t.Fatal("released slot counted")
	}

	l2 := mustAcquire(t, e.store, "user_b")
	e.clock.Advance(state.DefaultStartTTL)
	if err := e.store.Reap(ctx, mustGet(t, e.store, "user_b")); err != nil {
		t.Fatal(err)
	}
	wantSlot(t, e, "user_b", state.Stopped, 0)
	if e.checkInvariants(t) != 0 {
		t.Fatal("reaped slot counted")
	}
	for _, f := range []func() (state.TaskEnd, error){
		func() (state.TaskEnd, error) { return e.store.TaskExited(ctx, ref(l2), "x") },
		func() (state.TaskEnd, error) { return e.store.TaskStopped(ctx, ref(l2), "x") },
	} {
		if end, err := f(); err != nil || end != (state.TaskEnd{}) {
			t.Fatalf("event after Reap = %+v, %v", end, err)
		}
	}
	if back, err := e.store.ReturnSlot(ctx, "user_b", l2.Generation); err != nil || back {
		t.Fatalf("ReturnSlot after Reap = %v, %v", back, err)
	}
	e.checkInvariants(t)
}

// A lost stop event: cleanup gives the slot back (-1); the event, arriving late after
// all, finds nothing. ReturnSlot never touches a lease, live or dead.
func TestSlots_LostEventReturnedOnce(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	l := mustAcquire(t, e.store, "user_a")
	if back, err := e.store.ReturnSlot(ctx, "user_a", l.Generation); err != nil || back {
		t.Fatalf("ReturnSlot of a lease = %v, %v", back, err)
	}
	e.clock.Advance(state.DefaultStartTTL) // dead, still a lease: Reap's, not ReturnSlot's
	if back, err := e.store.ReturnSlot(ctx, "user_a", l.Generation); err != nil || back {
		t.Fatalf("ReturnSlot of a dead lease = %v, %v", back, err)
	}
	l2 := mustAcquire(t, e.store, "user_a") // a takeover
	if err := e.store.Stop(ctx, l2); err != nil {
		t.Fatal(err)
	}
	if back, err := e.store.ReturnSlot(ctx, "user_a", l2.Generation); err != nil || !back {
		t.Fatalf("ReturnSlot = %v, %v", back, err)
	}
	if back, err := e.store.ReturnSlot(ctx, "user_a", l2.Generation); err != nil || back {
		t.Fatalf("second ReturnSlot = %v, %v", back, err)
	}
	if end := taskStopped(t, e.store, l2); end != (state.TaskEnd{}) {
		t.Fatalf("late stop event = %+v", end)
	}
	if e.checkInvariants(t) != 0 {
		t.Fatal("counted")
	}
}

// The agent's own Abort ends the lease first (it tells the clients itself): the
// exited event then ends nothing, and the stop event gives the slot back.
func TestSlots_AbortThenEvents(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	l := mustAcquire(t, e.store, "user_a")
	e.calls.Reset()
	if err := e.store.Abort(ctx, l, "start failed: restore"); err != nil {
		t.Fatal(err)
	}
	e.wantCalls(t, map[string]int64{"UpdateItem": 1})
	wantSlot(t, e, "user_a", state.Stopped, 1)
	if end, err := e.store.TaskExited(ctx, ref(l), "exited"); err != nil || end != (state.TaskEnd{}) {
		t.Fatalf("exited after Abort = %+v, %v", end, err)
	}
	if end := taskStopped(t, e.store, l); end != (state.TaskEnd{SlotReturned: true}) {
		t.Fatalf("stopped after Abort = %+v", end)
	}
	if sb := mustGet(t, e.store, "user_a"); sb.Reason != "start failed: restore" {
		t.Fatalf("the agent's reason was overwritten: %q", sb.Reason)
	}
	e.checkInvariants(t)
}

// An event that names another task than the record, or a launch with another lease
// token (same generation), changes nothing; nor does one for a user without a record.
// Bad input is refused unwritten.
func TestSlots_EventsForOtherTasks(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	l := mustAcquire(t, e.store, "user_a")
	if err := e.store.SetTask(ctx, l, "arn:task/mine"); err != nil {
		t.Fatal(err)
	}
	other := state.TaskRef{UserID: "user_a", Generation: l.Generation, TaskARN: "arn:task/other"}
	staleToken := state.TaskRef{UserID: "user_a", Generation: l.Generation, Token: "another-token"}
	for _, f := range []func(state.TaskRef) (state.TaskEnd, error){
		func(r state.TaskRef) (state.TaskEnd, error) { return e.store.TaskExited(ctx, r, "x") },
		func(r state.TaskRef) (state.TaskEnd, error) { return e.store.TaskStopped(ctx, r, "x") },
	} {
		if end, err := f(other); err != nil || end != (state.TaskEnd{}) {
			t.Fatalf("event of another task = %+v, %v", end, err)
		}
		if end, err := f(staleToken); err != nil || end != (state.TaskEnd{}) {
			t.Fatalf("event of a launch with another token = %+v, %v", end, err)
		}
		if end, err := f(state.TaskRef{UserID: "user_none", Generation: 1}); err != nil || end != (state.TaskEnd{}) {
			t.Fatalf("event of a user without a record = %+v, %v", end, err)
		}
		_, err := f(state.TaskRef{UserID: "user_a"})
		wantErr(t, err, state.ErrInvalid)
		_, err = f(state.TaskRef{Generation: 1})
		wantErr(t, err, state.ErrInvalid)
	}
	wantSlot(t, e, "user_a", state.Starting, 1)
	e.checkInvariants(t)
}

// No purge lock over a record whose task has not been seen to stop.
func TestSlots_NoPurgeWhileTheSlotIsHeld(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	l := mustAcquire(t, e.store, "user_a")
	if err := e.store.Stop(ctx, l); err != nil {
		t.Fatal(err)
	}
	_, err := e.store.AcquirePurge(ctx, "user_a")
	wantErr(t, err, state.ErrHeld)
	taskStopped(t, e.store, l)
	if _, err := e.store.AcquirePurge(ctx, "user_a"); err != nil {
		t.Fatal(err)
	}
	e.checkInvariants(t)
}

// A record written before slots were recorded (a lease without "slot"): it still
// counts, Stop gives it its generation's slot, and its task's event gives it back.
func TestSlots_RecordWithoutSlotAttribute(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	l := mustAcquire(t, e.store, "user_a")
	if _, err := e.client.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName: aws.String(e.table), Key: key("USER#user_a", "SANDBOX"),
		UpdateExpression: aws.String("REMOVE slot"),
	}); err != nil {
		t.Fatal(err)
	}
	if sb := mustGet(t, e.store, "user_a"); sb.Slot != 0 || !sb.HoldsSlot() {
		t.Fatalf("legacy lease %+v", *sb)
	}
	if err := e.store.Stop(ctx, l); err != nil {
		t.Fatal(err)
	}
	wantSlot(t, e, "user_a", state.Stopped, l.Generation)
	if end := taskStopped(t, e.store, l); !end.SlotReturned {
		t.Fatalf("stop event = %+v", end)
	}
	if counter(t, e) != 0 {
		t.Fatal("legacy slot not given back")
	}
}

func key(pk, sk string) map[string]types.AttributeValue {
	return map[string]types.AttributeValue{state.AttrPK: &types.AttributeValueMemberS{Value: pk}, state.AttrSK: &types.AttributeValueMemberS{Value: sk}}
}

// setCounter writes the capacity counter behind the Store's back, as drift would.
func setCounter(tb testing.TB, e *env, live int) {
	tb.Helper()
	if _, err := e.client.UpdateItem(context.Background(), &dynamodb.UpdateItemInput{
		TableName: aws.String(e.table), Key: key("CAPACITY", "SANDBOXES"),
		UpdateExpression:          aws.String("SET live = :n"),
		ExpressionAttributeValues: map[string]types.AttributeValue{":n": &types.AttributeValueMemberN{Value: strconv.Itoa(live)}},
	}); err != nil {
		tb.Fatal(err)
	}
}

// A counter that drifted (either way) is set to the records that hold a slot; an
// exact one is only read.
func TestStore_ReconcileCapacity_CorrectsDrift(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	for _, u := range []string{"user_a", "user_b"} {
		mustAcquire(t, e.store, u)
	}
	l := mustAcquire(t, e.store, "user_c")
	if err := e.store.Stop(ctx, l); err != nil { // still holds its slot
		t.Fatal(err)
	}
	e.calls.Reset()
	c, err := e.store.ReconcileCapacity(ctx)
	if err != nil || c != (state.CapacityCheck{Counter: 3, Held: 3}) {
		t.Fatalf("exact counter: %+v, %v", c, err)
	}
	// An agreeing index is all a check reads: the counter, the index, the pool.
	e.wantCalls(t, map[string]int64{"GetItem": 1, "Scan": 1, "Query": 1})
	for _, drifted := range []int{7, 0, -2} {
		setCounter(t, e, drifted)
		e.calls.Reset()
		c, err := e.store.ReconcileCapacity(ctx)
		if err != nil || !c.Recounted || !c.Corrected || c.Moved || c.Counter != drifted || c.Held != 3 || c.Drift() != 3-drifted {
			t.Fatalf("counter %d: %+v, %v", drifted, c, err)
		}
		// A disagreeing one: the counter again, then the consistent count and the write.
		e.wantCalls(t, map[string]int64{"GetItem": 2, "Scan": 2, "Query": 1, "UpdateItem": 1})
		if e.checkInvariants(t) != 3 {
			t.Fatal("not corrected")
		}
	}
}

// A correction that races a start does not undercount: the start moves the counter
// between the check's read and its write, the condition fails and nothing is written;
// the next check corrects. So does a start and a stop that bring the counter back to
// the value read (the counter's write count tells).
func TestStore_ReconcileCapacity_RaceWithStart(t *testing.T) {
	for _, race := range []string{"start", "start and stop"} {
		t.Run(race, func(t *testing.T) {
			srv := dynamodblocal.StartForTest(t)
			proxy := newConflictProxy(t, srv.Endpoint(), 0)
			e := newEnvOn(t, srv, func(o *dynamodb.Options) { o.BaseEndpoint = aws.String(proxy.URL) })
			ctx := context.Background()
			mustAcquire(t, e.store, "user_a")
			setCounter(t, e, 5) // drift the check will want to correct: 1 held
			direct := state.New(e.client, e.table)
			direct.Now = e.clock.Now
			raced := func() {
				l, err := direct.Acquire(ctx, "user_b")
				if err == nil && race == "start and stop" {
					if err = direct.Release(ctx, l, "run task failed"); err == nil {
						var l2 state.Lease
						if l2, err = direct.Acquire(ctx, "user_c"); err == nil {
							err = direct.Release(ctx, l2, "run task failed")
						}
					}
				}
				if err != nil {
					t.Error(err)
				}
			}
			proxy.before.Store(&raced)
			c, err := e.store.ReconcileCapacity(ctx)
			if err != nil || c.Corrected || !c.Moved {
				t.Fatalf("check raced by %s = %+v, %v; want Moved", race, c, err)
			}
			want := 6 // the drifted 5, plus the start
			if race != "start" {
				want = 5
			}
			if n := counter(t, e); n != want {
				t.Fatalf("counter %d after the raced check, want %d (untouched by it)", n, want)
			}
			c, err = e.store.ReconcileCapacity(ctx)
			if err != nil || !c.Corrected {
				t.Fatalf("next check = %+v, %v", c, err)
			}
			e.checkInvariants(t)
		})
	}
}

// TaskExited's UpdateItem commits but its answer is lost; the SDK's retry finds the
// record already ended by this call and reports it so (the handler tells the clients).
func TestStore_TaskExited_AnswerLost(t *testing.T) {
	e, proxy := newLossyEnv(t)
	ctx := context.Background()
	l := mustAcquire(t, e.store, "user_a")
	proxy.lostAnswers.Store(1)
	end, err := e.store.TaskExited(ctx, ref(l), "start failed: no route")
	if err != nil || proxy.lost.Load() == 0 || end.Ended != state.Starting {
		t.Fatalf("TaskExited with a lost answer = %+v, %v (%d lost)", end, err, proxy.lost.Load())
	}
	wantSlot(t, e, "user_a", state.Stopped, 1)
	e.checkInvariants(t)
}
