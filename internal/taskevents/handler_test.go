package taskevents_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/apigatewaymanagementapi"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/sandgate/sandgate/infra/local/dynamodblocal"
	"github.com/sandgate/sandgate/infra/local/testkit"
	"github.com/sandgate/sandgate/internal/frames"
	"github.com/sandgate/sandgate/internal/launcher"
	"github.com/sandgate/sandgate/internal/metrics"
	"github.com/sandgate/sandgate/internal/relay"
	"github.com/sandgate/sandgate/internal/state"
	"github.com/sandgate/sandgate/internal/taskenv"
	"github.com/sandgate/sandgate/internal/taskevents"
)

func TestMain(m *testing.M) { os.Exit(dynamodblocal.RunTests(m)) }

const (
	cluster    = "sandgate-cluster"
	clusterARN = "arn:aws:ecs:us-east-1:000000000000:cluster/" + cluster
)

type env struct {
	db    *testkit.DB
	store *state.Store
	gw    *testkit.Gateway
	logs  *testkit.Logs
	h     *taskevents.Handler
}

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{logs: &testkit.Logs{}}
	log := e.logs.Logger()
	e.db = testkit.NewDB(t)
	e.store = e.db.Store()
	e.gw = testkit.StartGateway(t, log, testkit.Routes{Connect: "record"}, testkit.Funcs{"record": testkit.Recording(e.store)})
	e.h = &taskevents.Handler{
		Store: e.store, Relay: &relay.Relay{API: e.gw.Mgmt, Conns: e.store, Log: log},
		Metrics: metrics.New(e.logs), Log: log,
		Cluster: cluster, StartedBy: launcher.DefaultStartedBy, Stage: "test",
	}
	return e
}

// task is what an event says of one task.
type task struct {
	user             string
	gen              int64
	token            string
	arn              string
	last, desired    string
	stopCode, reason string
	exitCode         *int
	cluster, starter string
	noUser           bool
	pool             string // a warm pool task's id: no user in its overrides
}

func taskOf(l state.Lease) task {
	return task{user: l.UserID, gen: l.Generation, token: l.Token, arn: "arn:aws:ecs:us-east-1:000000000000:task/" + cluster + "/" + strconv.FormatInt(l.Generation, 10) + "0123456789abcdef0123456789abcde"}
}

func (tk task) with(last, desired, stopCode, reason string) task {
	tk.last, tk.desired, tk.stopCode, tk.reason = last, desired, stopCode, reason
	return tk
}

// event is the ECS Task State Change EventBridge delivers for tk.
func event(tk task) events.CloudWatchEvent {
	env := []map[string]string{}
	if tk.pool != "" {
		env = append(env, map[string]string{"name": taskenv.PoolID, "value": tk.pool})
	} else if !tk.noUser {
		env = append(env,
			map[string]string{"name": taskenv.UserID, "value": tk.user},
			map[string]string{"name": taskenv.LeaseToken, "value": tk.token},
			map[string]string{"name": taskenv.Generation, "value": strconv.FormatInt(tk.gen, 10)})
	}
	c := map[string]any{"name": "agent", "lastStatus": tk.last, "taskArn": tk.arn}
	if tk.exitCode != nil {
		c["exitCode"] = *tk.exitCode
	}
	d := map[string]any{
		"clusterArn": clusterARN, "taskArn": tk.arn, "lastStatus": tk.last, "desiredStatus": tk.desired,
		"startedBy": launcher.DefaultStartedBy, "group": "family:sandbox", "version": 3,
		"taskDefinitionArn": "arn:aws:ecs:us-east-1:000000000000:task-definition/sandbox:1",
		"containers":        []any{c},
		"overrides":         map[string]any{"containerOverrides": []any{map[string]any{"name": "agent", "environment": env}}},
	}
	if tk.stopCode != "" {
		d["stopCode"], d["stoppedReason"] = tk.stopCode, tk.reason
	}
	if tk.cluster != "" {
		d["clusterArn"] = tk.cluster
	}
	if tk.starter != "" {
		d["startedBy"] = tk.starter
	}
	b, _ := json.Marshal(d)
	return events.CloudWatchEvent{Version: "0", ID: "ev-" + tk.last, DetailType: taskevents.DetailType, Source: taskevents.Source,
		AccountID: "000000000000", Time: time.Now(), Region: "us-east-1", Resources: []string{tk.arn}, Detail: b}
}

func (e *env) handle(t *testing.T, ev events.CloudWatchEvent) {
	t.Helper()
	if err := e.h.Handle(context.Background(), ev); err != nil {
		t.Fatalf("Handle: %v", err)
	}
}

func (e *env) capacity(t *testing.T) int {
	t.Helper()
	n, err := e.store.Capacity(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// marker posts a frame of the test's own to c's connection: once it arrives, every
// frame posted before it has arrived too, so "nothing else was said" is checked
// without waiting an arbitrary time.
func (e *env) marker(t *testing.T, c *testkit.Client, user string) {
	t.Helper()
	conns, err := e.store.Connections(context.Background(), user)
	if err != nil || len(conns) != 1 {
		t.Fatalf("connections %v, %v", conns, err)
	}
	if _, err := e.gw.Mgmt.PostToConnection(context.Background(), &apigatewaymanagementapi.PostToConnectionInput{
		ConnectionId: aws.String(conns[0].ConnectionID), Data: []byte("marker"),
	}); err != nil {
		t.Fatal(err)
	}
	if f := c.Next(testkit.Wait, "marker", testkit.Any); f != "marker" {
		t.Fatalf("client heard %q before the marker", f)
	}
}

func (e *env) startFailures(t *testing.T) int {
	t.Helper()
	n := 0
	for _, l := range e.logs.Lines(t) {
		if v, ok := l[metrics.StartFailures].(float64); ok {
			n += int(v)
		}
	}
	return n
}

func exit(code int) *int { return &code }

// A normal stop: the agent stopped its sandbox; the task's STOPPED event gives the
// slot back and tells no one; redelivered, it changes nothing.
func TestHandler_StoppedTask_SlotBackOnce(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	l, err := e.store.Acquire(ctx, "user_a")
	if err != nil {
		t.Fatal(err)
	}
	if err := e.store.Stop(ctx, l); err != nil {
		t.Fatal(err)
	}
	c := e.gw.Dial(t, "user_a")
	stopped := event(taskOf(l).with("STOPPED", "STOPPED", "EssentialContainerExited", "Essential container in task exited"))
	for range 3 {
		e.handle(t, stopped)
		if e.capacity(t) != 0 {
			t.Fatal("slot not given back")
		}
	}
	e.marker(t, c, "user_a")
	if sb, _ := e.store.Get(ctx, "user_a"); sb.State != state.Stopped || sb.Slot != 0 || sb.Reason != state.ReasonStopped {
		t.Fatalf("record %+v", sb)
	}
}

// A task that fails to start: the first event of its way down ends the STARTING lease
// and tells the user's connections start_failed at once (one frame, one StartFailures);
// the slot waits for STOPPED, which gives it back without a second frame.
func TestHandler_StartFailure_TellsAtOnce(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	l, err := e.store.Acquire(ctx, "user_a")
	if err != nil {
		t.Fatal(err)
	}
	tk := taskOf(l)
	if err := e.store.SetTask(ctx, l, tk.arn); err != nil {
		t.Fatal(err)
	}
	c := e.gw.Dial(t, "user_a")
	const why = "CannotPullContainerError: pull image manifest has been retried 5 time(s): not found"
	e.handle(t, event(tk.with("DEPROVISIONING", "STOPPED", "TaskFailedToStart", why)))
	if f := c.NextFrame(); f.Type != frames.TypeError || f.Reason != frames.ReasonStartFailed {
		t.Fatalf("client heard %+v, want start_failed", f)
	}
	sb, _ := e.store.Get(ctx, "user_a")
	if sb.State != state.Stopped || sb.Slot != l.Generation || sb.Reason != "task stopped: TaskFailedToStart: "+why {
		t.Fatalf("record after the first event %+v", sb)
	}
	if e.capacity(t) != 1 {
		t.Fatal("slot given back before the task stopped")
	}
	e.handle(t, event(tk.with("DEPROVISIONING", "STOPPED", "TaskFailedToStart", why))) // redelivered
	e.handle(t, event(tk.with("STOPPED", "STOPPED", "TaskFailedToStart", why)))
	if e.capacity(t) != 0 {
		t.Fatal("slot not given back")
	}
	e.marker(t, c, "user_a")
	if n := e.startFailures(t); n != 1 {
		t.Fatalf("StartFailures %d, want 1", n)
	}
	// The user's next start is admitted at once.
	if l2, err := e.store.Acquire(ctx, "user_a"); err != nil || l2.Generation != l.Generation+1 {
		t.Fatalf("restart %+v, %v", l2, err)
	}
}

// A container that exits before the agent marked itself ready (wrong image, a secret
// or route it cannot use, the agent crashing) is a start failure too; the STOPPED
// event alone does all of it when it is the first to arrive.
func TestHandler_ContainerExitedWhileStarting(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	l, err := e.store.Acquire(ctx, "user_a")
	if err != nil {
		t.Fatal(err)
	}
	c := e.gw.Dial(t, "user_a")
	tk := taskOf(l)
	tk.exitCode = exit(1)
	e.handle(t, event(tk.with("STOPPED", "STOPPED", "EssentialContainerExited", "Essential container in task exited")))
	if f := c.NextFrame(); f.Reason != frames.ReasonStartFailed {
		t.Fatalf("client heard %+v", f)
	}
	sb, _ := e.store.Get(ctx, "user_a")
	if sb.State != state.Stopped || sb.Slot != 0 || sb.Reason != "task stopped: EssentialContainerExited: Essential container in task exited: exit code 1" {
		t.Fatalf("record %+v", sb)
	}
	if e.capacity(t) != 0 {
		t.Fatal("slot held")
	}
}

// A RUNNING sandbox whose task died is marked stopped at once, its clients hear
// stopping, and the slot goes back with STOPPED.
func TestHandler_Crash_RunningMarkedStopped(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	l, err := e.store.Acquire(ctx, "user_a")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.store.MarkReady(ctx, l, "http://10.0.0.1:8080", "gw"); err != nil {
		t.Fatal(err)
	}
	c := e.gw.Dial(t, "user_a")
	tk := taskOf(l)
	tk.exitCode = exit(137)
	e.handle(t, event(tk.with("STOPPING", "STOPPED", "EssentialContainerExited", "Essential container in task exited")))
	if f := c.NextFrame(); f.Type != frames.TypeStatus || f.State != frames.Stopping {
		t.Fatalf("client heard %+v, want stopping", f)
	}
	if sb, _ := e.store.Get(ctx, "user_a"); sb.State != state.Stopped || sb.Endpoint != "" {
		t.Fatalf("record %+v", sb)
	}
	e.handle(t, event(tk.with("STOPPED", "STOPPED", "EssentialContainerExited", "Essential container in task exited")))
	e.marker(t, c, "user_a")
	if e.capacity(t) != 0 || e.startFailures(t) != 0 {
		t.Fatalf("capacity %d, start failures %d", e.capacity(t), e.startFailures(t))
	}
}

// A task ECS stops (StopTask, a Spot interruption) keeps its lease while its agent
// syncs: only STOPPED acts, and then the agent has already stopped its sandbox.
func TestHandler_StopTaskLeavesTheAgentToStop(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	l, err := e.store.Acquire(ctx, "user_a")
	if err != nil {
		t.Fatal(err)
	}
	l, err = e.store.MarkReady(ctx, l, "http://10.0.0.1:8080", "gw")
	if err != nil {
		t.Fatal(err)
	}
	tk := taskOf(l)
	for _, code := range []string{"UserInitiated", "SpotInterruption"} {
		e.handle(t, event(tk.with("RUNNING", "STOPPED", code, "Task stopped by user")))
		e.handle(t, event(tk.with("STOPPING", "STOPPED", code, "Task stopped by user")))
	}
	if sb, _ := e.store.Get(ctx, "user_a"); sb.State != state.Running {
		t.Fatalf("the syncing agent's lease was ended: %+v", sb)
	}
	if err := e.store.MarkStopping(ctx, l); err != nil {
		t.Fatal(err)
	}
	if err := e.store.Stop(ctx, l); err != nil {
		t.Fatal(err)
	}
	e.handle(t, event(tk.with("STOPPED", "STOPPED", "SpotInterruption", "Your Spot Task was interrupted.")))
	if sb, _ := e.store.Get(ctx, "user_a"); sb.Reason != state.ReasonStopped || sb.Slot != 0 || e.capacity(t) != 0 {
		t.Fatalf("record %+v, capacity %d", sb, e.capacity(t))
	}
}

// After a takeover the old task's events are about a generation the record no longer
// holds: the new sandbox and its slot are untouched, its clients hear nothing.
func TestHandler_OldTaskAfterTakeover(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	old, err := e.store.Acquire(ctx, "user_a")
	if err != nil {
		t.Fatal(err)
	}
	e.db.Clock.Advance(state.DefaultStartTTL)
	l, err := e.store.Acquire(ctx, "user_a")
	if err != nil {
		t.Fatal(err)
	}
	c := e.gw.Dial(t, "user_a")
	tk := taskOf(old)
	e.handle(t, event(tk.with("DEPROVISIONING", "STOPPED", "EssentialContainerExited", "Essential container in task exited")))
	e.handle(t, event(tk.with("STOPPED", "STOPPED", "EssentialContainerExited", "Essential container in task exited")))
	e.marker(t, c, "user_a")
	sb, _ := e.store.Get(ctx, "user_a")
	if sb.State != state.Starting || sb.Generation != l.Generation || sb.Slot != l.Generation || e.capacity(t) != 1 {
		t.Fatalf("record %+v, capacity %d", sb, e.capacity(t))
	}
}

// A task launched with a token that is not the record's (a stale or duplicate launch,
// claiming the record's generation) ends nothing and gives nothing back when it dies.
func TestHandler_StaleLaunchEndsNothing(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	l, err := e.store.Acquire(ctx, "user_a")
	if err != nil {
		t.Fatal(err)
	}
	stale := taskOf(l)
	stale.token = "stale-token"
	e.handle(t, event(stale.with("DEPROVISIONING", "STOPPED", "EssentialContainerExited", "Essential container in task exited")))
	e.handle(t, event(stale.with("STOPPED", "STOPPED", "EssentialContainerExited", "Essential container in task exited")))
	if sb, _ := e.store.Get(ctx, "user_a"); sb.State != state.Starting || sb.Slot != l.Generation || e.capacity(t) != 1 {
		t.Fatalf("record %+v, capacity %d", sb, e.capacity(t))
	}
}

// Events not about one of this stack's sandbox tasks, or not about an end, change
// nothing and are not retried.
func TestHandler_IgnoresWhatIsNotOurs(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	l, err := e.store.Acquire(ctx, "user_a")
	if err != nil {
		t.Fatal(err)
	}
	tk := taskOf(l).with("STOPPED", "STOPPED", "EssentialContainerExited", "Essential container in task exited")
	other := tk
	other.cluster = "arn:aws:ecs:us-east-1:000000000000:cluster/another"
	stranger := tk
	stranger.starter = "ecs-svc/123"
	anonymous := tk
	anonymous.noUser = true
	running := taskOf(l).with("RUNNING", "RUNNING", "", "")
	notECS := event(tk)
	notECS.Source = "aws.ec2"
	garbled := event(tk)
	garbled.Detail = json.RawMessage(`{"taskArn": 7}`)
	before, _ := e.store.Get(ctx, "user_a")
	for name, ev := range map[string]events.CloudWatchEvent{
		"another cluster": event(other), "not the launcher's": event(stranger), "no user": event(anonymous),
		"running": event(running), "not ECS": notECS, "garbled": garbled,
	} {
		if err := e.h.Handle(ctx, ev); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	if after, _ := e.store.Get(ctx, "user_a"); after.Version != before.Version || e.capacity(t) != 1 {
		t.Fatalf("record changed: %+v", after)
	}
}

// DynamoDB unreachable: the event fails, so Lambda retries it (the handler is
// idempotent).
func TestHandler_StoreDown_Retried(t *testing.T) {
	e := newEnv(t)
	down := state.New(e.db.Client, "no-such-table")
	e.h.Store = down
	err := e.h.Handle(context.Background(), event(taskOf(state.Lease{UserID: "user_a", Generation: 1}).with("STOPPED", "STOPPED", "UserInitiated", "x")))
	if err == nil {
		t.Fatal("Handle succeeded without a store")
	}
}

// The sample event (events/taskevents.json: a Fargate task whose image pull failed)
// decodes as the handler reads it, and does what it says for its user.
func TestHandler_SampleEvent(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "events", "taskevents.json"))
	if err != nil {
		t.Fatal(err)
	}
	var ev events.CloudWatchEvent
	if err := json.Unmarshal(b, &ev); err != nil {
		t.Fatal(err)
	}
	var d taskevents.Detail
	if err := json.Unmarshal(ev.Detail, &d); err != nil {
		t.Fatal(err)
	}
	if ev.DetailType != taskevents.DetailType || d.UserID() != "user_abc" || d.Generation() != "3" || d.StopCode != "TaskFailedToStart" ||
		d.LastStatus != "STOPPED" || len(d.Containers) != 1 || d.Containers[0].Reason == "" || len(ev.Resources) != 1 || ev.Resources[0] != d.TaskArn {
		t.Fatalf("sample event reads as %+v %+v", ev, d)
	}
	e := newEnv(t)
	e.h.Cluster = "sandgate-Cluster-aBcD1234"
	ctx := context.Background()
	for range 3 { // generations 1..3; the third is the sample's
		l, err := e.store.Acquire(ctx, "user_abc")
		if err != nil {
			t.Fatal(err)
		}
		if l.Generation < 3 {
			if err := e.store.Release(ctx, l, "test"); err != nil {
				t.Fatal(err)
			}
		}
	}
	// The sample's task was launched with its own token: make it the record's.
	if _, err := e.db.Raw.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName: aws.String(e.db.Table),
		Key: map[string]types.AttributeValue{
			state.AttrPK: &types.AttributeValueMemberS{Value: "USER#user_abc"}, state.AttrSK: &types.AttributeValueMemberS{Value: "SANDBOX"}},
		UpdateExpression:          aws.String("SET leaseToken = :t"),
		ExpressionAttributeValues: map[string]types.AttributeValue{":t": &types.AttributeValueMemberS{Value: d.LeaseToken()}},
	}); err != nil {
		t.Fatal(err)
	}
	e.handle(t, ev)
	sb, _ := e.store.Get(ctx, "user_abc")
	if sb.State != state.Stopped || sb.Slot != 0 || e.capacity(t) != 0 {
		t.Fatalf("record %+v", sb)
	}
}
