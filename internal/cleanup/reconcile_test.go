package cleanup_test

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/sandgate/sandgate/infra/local/testkit"
	"github.com/sandgate/sandgate/internal/cleanup"
	"github.com/sandgate/sandgate/internal/metrics"
	"github.com/sandgate/sandgate/internal/state"
)

// stoppedByAgent starts user's sandbox and stops it as its agent does: the record
// STOPPED, its slot kept for the task's stop event. It returns the task's ARN and the
// lease.
func (e *env) stoppedByAgent(t *testing.T, user string) (string, state.Lease) {
	t.Helper()
	ctx := context.Background()
	res, err := e.ens.Ensure(ctx, user)
	if err != nil {
		t.Fatal(err)
	}
	sb, err := e.store.Get(ctx, user)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.store.Stop(ctx, sb.Lease()); err != nil {
		t.Fatal(err)
	}
	return res.Sandbox.TaskARN, sb.Lease()
}

// taskGone stops the task in ECS and waits until ECS no longer runs it, without any
// stop event reaching the store: the event is lost.
func (e *env) taskGone(t *testing.T, arn string) {
	t.Helper()
	if err := e.launcher.Stop(context.Background(), arn, "test: the task ends"); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 10*time.Second, func() bool {
		for _, ti := range e.ecs.Server.Tasks() {
			if ti.ARN == arn {
				return false
			}
		}
		return true
	}, func() string { return "the task never stopped" })
}

// metric returns the value of name in the pass's metrics line.
func metric(t *testing.T, logs *testkit.Logs, name string) float64 {
	t.Helper()
	var v float64 = -1
	for _, l := range logs.Lines(t) {
		if _, ok := l["_aws"]; ok {
			if x, ok := l[name].(float64); ok {
				v = x
			}
		}
	}
	return v
}

// A stop event that never came: the agent stopped, its task is gone from ECS, and the
// slot is still held. The next pass past the grace gives it back, counts it a
// correction (metric and summary), and the event arriving late gives nothing back.
func TestCleaner_Run_LostStopEventCorrected(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	arn, l := e.stoppedByAgent(t, "user_a")
	e.taskGone(t, arn)
	if n, _ := e.store.Capacity(ctx); n != 1 {
		t.Fatalf("counter %d before the pass, want the lost event's slot still counted", n)
	}
	// Within the grace the event may still come.
	if sum := e.run(t); sum.Corrections != 0 || sum.Capacity != 1 {
		t.Fatalf("pass within the grace: %+v", sum)
	}
	e.db.Clock.Advance(cleanup.DefaultStopEventGrace)
	sum := e.run(t)
	if sum.Corrections != 1 || sum.Capacity != 0 {
		t.Fatalf("summary %+v, want one correction and no slot held", sum)
	}
	if got := metric(t, e.logs, metrics.CapacityCorrections); got != 1 {
		t.Fatalf("CapacityCorrections metric %v, want 1", got)
	}
	if len(e.logs.With(t, "msg", "capacity slot given back: ECS runs no such task and its stop event never came")) != 1 {
		t.Fatal("no warning for the lost event")
	}
	if sb, _ := e.store.Get(ctx, "user_a"); sb.State != state.Stopped || sb.Slot != 0 {
		t.Fatalf("record %+v", sb)
	}
	end, err := e.store.TaskStopped(ctx, state.TaskRef{UserID: "user_a", Generation: l.Generation, TaskARN: arn}, "late")
	if err != nil || end != (state.TaskEnd{}) {
		t.Fatalf("late event = %+v, %v", end, err)
	}
	if sum := e.run(t); sum.Corrections != 0 || sum.Capacity != 0 {
		t.Fatalf("next pass %+v", sum)
	}
}

// A STOPPED record whose task ECS still runs (it is on its way out) keeps its slot,
// however long: its stop event will come. A live lease is never touched.
func TestCleaner_Run_SlotOfRunningTaskKept(t *testing.T) {
	e := newEnv(t)
	e.c.OrphanGrace = time.Hour // the stand-in task ignores its lease; keep it running
	ctx := context.Background()
	e.stoppedByAgent(t, "user_a")
	if _, err := e.ens.Ensure(ctx, "user_live"); err != nil {
		t.Fatal(err)
	}
	e.db.Clock.Advance(cleanup.DefaultStopEventGrace)
	sum := e.run(t)
	if sum.Corrections != 0 || sum.Capacity != 2 {
		t.Fatalf("summary %+v", sum)
	}
	if sb, _ := e.store.Get(ctx, "user_a"); sb.Slot == 0 {
		t.Fatalf("slot of a running task given back: %+v", sb)
	}
}

// A counter that drifted from the records is set back to them by the pass, conditional
// on the value read, with the correction counted and logged.
func TestCleaner_Run_CounterDriftCorrected(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	for _, u := range []string{"user_a", "user_b"} {
		if _, err := e.ens.Ensure(ctx, u); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := e.db.Raw.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName: aws.String(e.db.Table),
		Key: map[string]types.AttributeValue{
			state.AttrPK: &types.AttributeValueMemberS{Value: "CAPACITY"}, state.AttrSK: &types.AttributeValueMemberS{Value: "SANDBOXES"}},
		UpdateExpression:          aws.String("SET live = :n"),
		ExpressionAttributeValues: map[string]types.AttributeValue{":n": &types.AttributeValueMemberN{Value: strconv.Itoa(5)}},
	}); err != nil {
		t.Fatal(err)
	}
	sum := e.run(t)
	if sum.Corrections != 3 || sum.Capacity != 2 {
		t.Fatalf("summary %+v, want the counter moved by 3 to 2", sum)
	}
	lines := e.logs.With(t, "msg", "capacity counter corrected to the records that hold a slot")
	if len(lines) != 1 || lines[0]["level"] != slog.LevelWarn.String() || lines[0]["counterDrift"] != -3.0 {
		t.Fatalf("correction log %v", lines)
	}
	if got := metric(t, e.logs, metrics.CapacityCorrections); got != 3 {
		t.Fatalf("CapacityCorrections metric %v, want 3", got)
	}
}

// Reconcile is the same repair on its own, for an operator: the lost event's slot
// back, then the counter checked.
func TestCleaner_Reconcile_OnDemand(t *testing.T) {
	e := newEnv(t)
	e.c.StopEventGrace = -1
	ctx := context.Background()
	arn, _ := e.stoppedByAgent(t, "user_a")
	e.taskGone(t, arn)
	r, err := e.c.Reconcile(ctx)
	if err != nil || r.SlotsReturned != 1 || r.Counter.Corrected || r.Counter.Held != 0 || r.Corrections() != 1 {
		t.Fatalf("Reconcile = %+v, %v", r, err)
	}
	r, err = e.c.Reconcile(ctx)
	if err != nil || r.Corrections() != 0 || fmt.Sprint(r.Counter) != fmt.Sprint(state.CapacityCheck{}) {
		t.Fatalf("second Reconcile = %+v, %v", r, err)
	}
}
