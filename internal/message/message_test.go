package message_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/service/apigatewaymanagementapi"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/lambda/types"

	"github.com/sandgate/sandgate/infra/local/dynamodblocal"
	"github.com/sandgate/sandgate/infra/local/ecslocal"
	"github.com/sandgate/sandgate/infra/local/testkit"
	"github.com/sandgate/sandgate/internal/agentapi"
	"github.com/sandgate/sandgate/internal/awsconf"
	"github.com/sandgate/sandgate/internal/connect"
	"github.com/sandgate/sandgate/internal/ensure"
	"github.com/sandgate/sandgate/internal/frames"
	"github.com/sandgate/sandgate/internal/logging"
	"github.com/sandgate/sandgate/internal/message"
	"github.com/sandgate/sandgate/internal/metrics"
	"github.com/sandgate/sandgate/internal/notice"
	"github.com/sandgate/sandgate/internal/relay"
	"github.com/sandgate/sandgate/internal/state"
)

func TestMain(m *testing.M) { os.Exit(dynamodblocal.RunTests(m)) }

const connectFn = "ConnectFunction"

type env struct {
	db       *testkit.DB
	store    *state.Store
	ecs      *testkit.ECS
	gw       *testkit.Gateway
	inv      *testkit.Invoker
	h        *message.Handler
	connect  *connect.Handler
	logs     *testkit.Logs
	handled  *testkit.Tracker
	connects *testkit.Recorder
}

func newEnv(t *testing.T, configure ...func(*ecslocal.Server)) *env {
	t.Helper()
	e := &env{logs: &testkit.Logs{}, handled: testkit.NewTracker(), connects: testkit.NewRecorder()}
	log := e.logs.Logger()
	e.db = testkit.NewDB(t)
	e.store = e.db.Store()
	e.ecs = testkit.StartECS(t, log, append([]func(*ecslocal.Server){func(s *ecslocal.Server) { s.LaunchDelay = time.Hour }}, configure...)...)
	fn := func(ctx context.Context, p []byte) ([]byte, error) { return testkit.Handler(e.h.Handle)(ctx, p) }
	e.gw = testkit.StartGateway(t, log, testkit.Routes{Connect: "accept", Default: "message"},
		testkit.Funcs{"accept": e.connects.Wrap(testkit.Accept()), "message": e.handled.Wrap(fn)})
	// The Connect function, which alone may start tasks, answers ensure notices here
	// as in AWS; restart notices are only recorded (the connect package runs them).
	e.connect = &connect.Handler{
		Store:   e.store,
		Ensurer: &ensure.Ensurer{Store: e.store, Launcher: e.ecs.Launcher(log, e.db.Table, e.gw.Server.ManagementEndpoint()), Log: log},
		Mgmt:    e.gw.Mgmt,
		Agent:   &agentapi.Client{Timeout: time.Second},
		Metrics: metrics.New(e.logs),
		Log:     log,
		Now:     e.db.Clock.Now,
	}
	e.inv = testkit.NewInvoker(t, testkit.Funcs{connectFn: func(ctx context.Context, p []byte) ([]byte, error) {
		if n := decodeNotice(t, p); n.Kind != notice.KindEnsure {
			return nil, nil
		}
		return testkit.Handler(e.connect.Handle)(ctx, p)
	}})
	e.h = &message.Handler{
		Store:    e.store,
		Ensurer:  &notice.Ensurer{API: e.inv, Function: connectFn},
		Agent:    &agentapi.Client{Timeout: time.Second},
		Relay:    &relay.Relay{API: e.gw.Mgmt, Conns: e.store, Log: log},
		Notifier: &notice.Notifier{API: e.inv, Function: connectFn},
		Log:      log,
		Now:      e.db.Clock.Now,
	}
	return e
}

func decodeNotice(t *testing.T, p []byte) notice.Notice {
	t.Helper()
	var env notice.Envelope
	if err := json.Unmarshal(p, &env); err != nil || env.Notice == nil {
		t.Errorf("invocation %s is not a notice: %v", p, err)
		return notice.Notice{}
	}
	return *env.Notice
}

// notices returns the notices of kind sent to the Connect function, in order.
func (e *env) notices(t *testing.T, kind string) []notice.Notice {
	t.Helper()
	var out []notice.Notice
	for _, c := range e.inv.Calls() {
		if c.Function != connectFn {
			t.Fatalf("invocation of %s", c.Function)
		}
		if n := decodeNotice(t, c.Payload); n.Kind == kind {
			out = append(out, n)
		}
	}
	return out
}

// send sends msg and waits until the Message function has handled it.
func (e *env) send(t *testing.T, c *testkit.Client, msg string) {
	t.Helper()
	c.Send(msg)
	e.handled.Wait(t, 1)
}

// connectionID returns the id of the nth connection the gateway accepted.
func (e *env) connectionID(t *testing.T, n int) string {
	t.Helper()
	evs := e.connects.Events()
	if len(evs) <= n {
		t.Fatalf("%d connections", len(evs))
	}
	var ev events.APIGatewayWebsocketProxyRequest
	if err := json.Unmarshal(evs[n], &ev); err != nil {
		t.Fatal(err)
	}
	return ev.RequestContext.ConnectionID
}

// running makes the user's sandbox RUNNING behind agent.
func (e *env) running(t *testing.T, agent *testkit.Agent) state.Lease {
	t.Helper()
	ctx := context.Background()
	l, err := e.store.Acquire(ctx, agent.UserID)
	if err != nil {
		t.Fatal(err)
	}
	if l, err = e.store.MarkReady(ctx, l, agent.URL, agent.Token); err != nil {
		t.Fatal(err)
	}
	return l
}

func (e *env) inbox(t *testing.T, user string) string {
	t.Helper()
	items, err := e.store.Inbox(context.Background(), user)
	if err != nil {
		t.Fatal(err)
	}
	var p []string
	for _, it := range items {
		p = append(p, string(it.Payload))
	}
	return strings.Join(p, ",")
}

func wantFrame(t *testing.T, got frames.Frame, typ, stateOrReason string) {
	t.Helper()
	if got.Type != typ || (got.State != stateOrReason && got.Reason != stateOrReason) {
		t.Fatalf("frame = %+v, want %s %s", got, typ, stateOrReason)
	}
}

func noMore(t *testing.T, c *testkit.Client) {
	t.Helper()
	if p := c.Pending(); len(p) != 0 {
		t.Fatalf("unexpected frames %q", p)
	}
}

// The warm path: at most one DynamoDB GetItem and no write per frame, then the agent.
// The first frame reads the record; the next ones, within the record's TTL, reuse it.
func TestHandler_Handle_WarmPathOneRead(t *testing.T) {
	e := newEnv(t)
	agent := testkit.StartAgent(t, "user_a")
	e.running(t, agent)
	c := e.gw.Dial(t, "user_a")
	id := e.connectionID(t, 0)
	e.db.Calls.Reset()
	const n = 10
	for i := range n {
		e.send(t, c, "frame-"+string(rune('0'+i)))
		got := agent.Next(t)
		if got.Op != "deliver" || got.ConnectionID != id || string(got.Frame) != "frame-"+string(rune('0'+i)) {
			t.Fatalf("agent got %+v", got)
		}
	}
	if reads, writes := e.db.Calls.Calls("DynamoDB", "GetItem"), e.db.Writes(); reads != 1 || writes != 0 ||
		e.db.Calls.Calls("DynamoDB", "") != 1 {
		t.Fatalf("%d frames: DynamoDB calls %+v, want the one read of the first", n, e.db.Calls.Snapshot())
	}
	// Past the TTL, the next frame reads the record again.
	e.db.Clock.Advance(message.DefaultRecordTTL)
	e.send(t, c, "later")
	agent.Next(t)
	if reads := e.db.Calls.Calls("DynamoDB", "GetItem"); reads != 2 {
		t.Fatalf("after the TTL: %d reads, want 2", reads)
	}
	noMore(t, c)
}

// A cached record that went stale (its agent died and another took over at a new
// address and token) is noticed by the agent's silence and read again: the frame
// reaches the new agent, and nothing is refused.
func TestHandler_Handle_CachedRecordStale(t *testing.T) {
	e := newEnv(t)
	e.h.RecordTTL = time.Hour
	old := testkit.StartAgent(t, "user_a")
	e.running(t, old)
	c := e.gw.Dial(t, "user_a")
	e.send(t, c, "one")
	old.Next(t)
	old.Stop()
	e.db.Clock.Advance(state.DefaultLeaseTTL)
	next := testkit.StartAgent(t, "user_a")
	e.running(t, next) // takes the expired lease over, at the new agent's address
	e.send(t, c, "two")
	if got := next.Next(t); got.Op != "deliver" || string(got.Frame) != "two" {
		t.Fatalf("new agent got %+v", got)
	}
	noMore(t, c)
}

// An agent that takes a frame but answers too late may have delivered it: the sender
// hears no_answer and the frame is not sent a second time, cached record or not.
func TestHandler_Handle_NoAnswerNotResent(t *testing.T) {
	e := newEnv(t)
	e.h.Agent = &agentapi.Client{Timeout: 200 * time.Millisecond}
	agent := testkit.StartAgent(t, "user_a")
	release := make(chan struct{})
	agent.Hook = func(c testkit.Call) error {
		if string(c.Frame) == "slow" {
			<-release // answered after the Message function gave up
		}
		return nil
	}
	e.running(t, agent)
	c := e.gw.Dial(t, "user_a")
	e.send(t, c, "warm") // reads and caches the record
	agent.Next(t)
	e.send(t, c, "slow")
	wantFrame(t, c.NextFrame(), frames.TypeError, frames.ReasonNoAnswer)
	close(release)
	if got := agent.Next(t); string(got.Frame) != "slow" {
		t.Fatalf("agent got %+v", got)
	}
	e.send(t, c, "after")
	if got := agent.Next(t); string(got.Frame) != "after" {
		t.Fatalf("agent got %+v after the slow frame, want the next frame, not the slow one again", got)
	}
	noMore(t, c)
}

// A user over the agent's rate limit hears rate_limited; another user is unaffected.
func TestHandler_Handle_RateLimitedUserOnly(t *testing.T) {
	e := newEnv(t)
	a, b := testkit.StartAgent(t, "user_a"), testkit.StartAgent(t, "user_b")
	e.running(t, a)
	e.running(t, b)
	a.SetErr(agentapi.ErrRateLimited)
	ca, cb := e.gw.Dial(t, "user_a"), e.gw.Dial(t, "user_b")
	e.send(t, ca, "too fast")
	wantFrame(t, ca.NextFrame(), frames.TypeError, frames.ReasonRateLimited)
	e.send(t, cb, "fine")
	if got := b.Next(t); string(got.Frame) != "fine" {
		t.Fatalf("user_b's agent got %+v", got)
	}
	noMore(t, cb)
	if refused := e.logs.With(t, logging.Reason, frames.ReasonRateLimited); len(refused) != 1 || refused[0][logging.UserID] != "user_a" {
		t.Fatalf("refusal log %v", refused)
	}
}

// While the sandbox starts, frames are queued in order and the sender hears
// "starting" once, not once per frame.
func TestHandler_Handle_StartingQueuesInOrderTellsOnce(t *testing.T) {
	e := newEnv(t)
	if _, err := e.store.Acquire(context.Background(), "user_a"); err != nil {
		t.Fatal(err)
	}
	c := e.gw.Dial(t, "user_a")
	for _, m := range []string{"one", "two", "three"} {
		e.send(t, c, m)
	}
	wantFrame(t, c.NextFrame(), frames.TypeStatus, frames.Starting)
	noMore(t, c)
	if got := e.inbox(t, "user_a"); got != "one,two,three" {
		t.Fatalf("inbox %q", got)
	}
	if len(e.ecs.RunTasks()) != 0 {
		t.Fatal("a start under way was started again")
	}
}

// A client whose first frame races its connect notice hears `starting` once,
// whichever tells it first: the Message function queuing the frame, or the Connect
// function's notice to the new connection.
func TestHandler_Handle_StartingOnceBesideTheConnectNotice(t *testing.T) {
	for _, noticeFirst := range []bool{true, false} {
		t.Run(fmt.Sprintf("notice first %v", noticeFirst), func(t *testing.T) {
			e := newEnv(t)
			ctx := context.Background()
			if _, err := e.store.Acquire(ctx, "user_a"); err != nil {
				t.Fatal(err)
			}
			c := e.gw.Dial(t, "user_a")
			id := e.connectionID(t, 0)
			if _, err := e.store.AddConnection(ctx, "user_a", id); err != nil { // as $connect does
				t.Fatal(err)
			}
			greet := func() {
				p, err := json.Marshal(notice.Envelope{Notice: &notice.Notice{Kind: notice.KindConnect, UserID: "user_a",
					ConnectionID: id, Stage: testkit.Stage, Sent: time.Now().UnixMilli()}})
				if err != nil {
					t.Fatal(err)
				}
				if _, err := testkit.Handler(e.connect.Handle)(ctx, p); err != nil {
					t.Fatal(err)
				}
			}
			if noticeFirst {
				greet()
			}
			e.send(t, c, "one")
			e.send(t, c, "two")
			if !noticeFirst {
				greet()
			}
			// Every post is made; a last one marks the end of what the client will get.
			if _, err := e.gw.Mgmt.PostToConnection(ctx, &apigatewaymanagementapi.PostToConnectionInput{
				ConnectionId: aws.String(id), Data: []byte("end"),
			}); err != nil {
				t.Fatal(err)
			}
			got := c.Until(testkit.Wait, "the end", func(f string) bool { return f == "end" })
			var starting int
			for _, f := range got {
				if fr, ok := testkit.Platform(f); ok && fr.Type == frames.TypeStatus && fr.State == frames.Starting {
					starting++
				}
			}
			if starting != 1 {
				t.Fatalf("the client heard `starting` %d times: %q", starting, got)
			}
		})
	}
}

// A full inbox refuses with inbox_full and keeps what it holds.
func TestHandler_Handle_InboxFull(t *testing.T) {
	e := newEnv(t)
	e.store.InboxMaxItems = 2
	if _, err := e.store.Acquire(context.Background(), "user_a"); err != nil {
		t.Fatal(err)
	}
	c := e.gw.Dial(t, "user_a")
	for _, m := range []string{"one", "two", "three"} {
		e.send(t, c, m)
	}
	wantFrame(t, c.NextFrame(), frames.TypeStatus, frames.Starting)
	wantFrame(t, c.NextFrame(), frames.TypeError, frames.ReasonInboxFull)
	if got := e.inbox(t, "user_a"); got != "one,two" {
		t.Fatalf("inbox %q", got)
	}
}

// A frame over 128 KB is refused with too_large before any read or write.
func TestHandler_Handle_TooLarge(t *testing.T) {
	e := newEnv(t)
	c := e.gw.Dial(t, "user_a")
	ev := events.APIGatewayWebsocketProxyRequest{
		Body: strings.Repeat("x", agentapi.MaxFrameBytes+1),
		RequestContext: events.APIGatewayWebsocketProxyRequestContext{EventType: "MESSAGE", RouteKey: "$default",
			ConnectionID: e.connectionID(t, 0), Stage: testkit.Stage, Authorizer: map[string]any{"userId": "user_a"}},
	}
	e.db.Calls.Reset()
	resp, err := e.h.Handle(context.Background(), ev)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("response %d, %v", resp.StatusCode, err)
	}
	wantFrame(t, c.NextFrame(), frames.TypeError, frames.ReasonTooLarge)
	if n := e.db.Calls.Calls("DynamoDB", ""); n != 0 || len(e.ecs.RunTasks()) != 0 {
		t.Fatalf("%d DynamoDB calls, %d tasks for a refused frame", n, len(e.ecs.RunTasks()))
	}
}

// No sandbox: the frame has the Connect function start one, and waits in the inbox.
func TestHandler_Handle_NoSandboxStartsAndQueues(t *testing.T) {
	e := newEnv(t)
	c := e.gw.Dial(t, "user_a")
	e.send(t, c, "hello")
	wantFrame(t, c.NextFrame(), frames.TypeStatus, frames.Starting)
	if got := e.inbox(t, "user_a"); got != "hello" || len(e.ecs.RunTasks()) != 1 {
		t.Fatalf("inbox %q, RunTask %d", got, len(e.ecs.RunTasks()))
	}
	ns := e.notices(t, notice.KindEnsure)
	if len(ns) != 1 || ns[0].UserID != "user_a" || ns[0].ConnectionID != e.connectionID(t, 0) || ns[0].Stage != testkit.Stage {
		t.Fatalf("ensure notices %+v", ns)
	}
	if calls := e.inv.Calls(); len(calls) != 1 || calls[0].Type != types.InvocationTypeRequestResponse {
		t.Fatalf("invocations %+v: want one synchronous ensure", calls)
	}
	if l := e.logs.With(t, "msg", "sandbox starting for a frame"); len(l) != 1 || l[0]["generation"] != 1.0 {
		t.Fatalf("log %v", l)
	}
	// The next frame finds the start under way: queued, no second ensure, no second
	// "starting".
	e.send(t, c, "again")
	noMore(t, c)
	if got, ns := e.inbox(t, "user_a"), e.notices(t, notice.KindEnsure); got != "hello,again" || len(ns) != 1 {
		t.Fatalf("inbox %q, ensure notices %d", got, len(ns))
	}
}

// The Connect function cannot be invoked, or fails: the sender hears unavailable, and
// nothing is queued or started.
func TestHandler_Handle_ConnectUnavailable(t *testing.T) {
	for name, fn := range map[string]string{"missing": "NoSuchFunction", "failing": "Failing"} {
		t.Run(name, func(t *testing.T) {
			e := newEnv(t)
			e.inv.Funcs["Failing"] = func(context.Context, []byte) ([]byte, error) { return nil, errors.New("Task timed out") }
			e.h.Ensurer = &notice.Ensurer{API: e.inv, Function: fn}
			c := e.gw.Dial(t, "user_a")
			e.send(t, c, "hello")
			wantFrame(t, c.NextFrame(), frames.TypeError, frames.ReasonUnavailable)
			noMore(t, c)
			if got := e.inbox(t, "user_a"); got != "" || len(e.ecs.RunTasks()) != 0 {
				t.Fatalf("inbox %q, RunTask %d", got, len(e.ecs.RunTasks()))
			}
			if l := e.logs.With(t, logging.Reason, frames.ReasonUnavailable); len(l) != 1 ||
				!strings.Contains(fmt.Sprint(l[0][logging.Error]), fn) {
				t.Fatalf("log %v", l)
			}
		})
	}
}

// The sandbox became ready between the frame's read and the ensure: Connect answers
// RUNNING without the gateway token, and the frame goes to the agent the record names.
func TestHandler_Handle_EnsureFindsRunning(t *testing.T) {
	e := newEnv(t)
	agent := testkit.StartAgent(t, "user_a")
	var once sync.Once
	e.h.Store = racingStore{Store: e.store, after: func() {
		once.Do(func() { e.running(t, agent) })
	}}
	c := e.gw.Dial(t, "user_a")
	e.send(t, c, "hello")
	if got := agent.Next(t); got.Op != "deliver" || string(got.Frame) != "hello" {
		t.Fatalf("agent got %+v", got)
	}
	noMore(t, c)
	if ns := e.notices(t, notice.KindEnsure); len(ns) != 1 || len(e.ecs.RunTasks()) != 0 {
		t.Fatalf("ensure notices %+v, RunTask %d", ns, len(e.ecs.RunTasks()))
	}
	if got := e.inbox(t, "user_a"); got != "" {
		t.Fatalf("inbox %q", got)
	}
}

// Capacity full: the sender hears capacity, the refusal is counted, nothing is queued.
func TestHandler_Handle_Capacity(t *testing.T) {
	e := newEnv(t)
	e.store.MaxSandboxes = 1
	if _, err := e.store.Acquire(context.Background(), "user_b"); err != nil {
		t.Fatal(err)
	}
	c := e.gw.Dial(t, "user_a")
	e.send(t, c, "hello")
	wantFrame(t, c.NextFrame(), frames.TypeError, frames.ReasonCapacity)
	if m := e.logs.With(t, metrics.CapacityRefusals, 1.0); len(m) != 1 || m[0]["Stage"] != testkit.Stage {
		t.Fatalf("metric %v", m)
	}
	if got := e.inbox(t, "user_a"); got != "" {
		t.Fatalf("inbox %q", got)
	}
}

// A launch failure reaches the sender as start_failed and is counted.
func TestHandler_Handle_StartFailed(t *testing.T) {
	e := newEnv(t)
	e.ecs.Server.FailRunTask(ecslocal.ClientException, -1)
	c := e.gw.Dial(t, "user_a")
	e.send(t, c, "hello")
	wantFrame(t, c.NextFrame(), frames.TypeError, frames.ReasonStartFailed)
	if m := e.logs.With(t, metrics.StartFailures, 1.0); len(m) != 1 {
		t.Fatalf("metric %v", m)
	}
}

// Frames for a STOPPING sandbox are queued; the sender hears "stopping" once and one
// restart is requested.
func TestHandler_Handle_StoppingQueuesAndRestarts(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	l, err := e.store.Acquire(ctx, "user_a")
	if err != nil {
		t.Fatal(err)
	}
	if err := e.store.MarkStopping(ctx, l); err != nil {
		t.Fatal(err)
	}
	c := e.gw.Dial(t, "user_a")
	e.send(t, c, "one")
	e.send(t, c, "two")
	wantFrame(t, c.NextFrame(), frames.TypeStatus, frames.Stopping)
	noMore(t, c)
	ns := e.notices(t, notice.KindRestart)
	if len(ns) != 1 || ns[0].Kind != notice.KindRestart || ns[0].UserID != "user_a" || ns[0].ConnectionID != e.connectionID(t, 0) ||
		ns[0].Until <= time.Now().UnixMilli() || ns[0].Stage != testkit.Stage {
		t.Fatalf("notices %+v", ns)
	}
	if got := e.inbox(t, "user_a"); got != "one,two" || len(e.ecs.RunTasks()) != 0 {
		t.Fatalf("inbox %q, RunTask %d", got, len(e.ecs.RunTasks()))
	}
}

// Frames left in the inbox from before (never delivered, or delivered and not yet
// acknowledged) do not stop a restart from being requested: the first frame that finds
// this generation stopping asks, once.
func TestHandler_Handle_StoppingRestartDespiteLeftovers(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	l, err := e.store.Acquire(ctx, "user_a")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.store.Enqueue(ctx, "user_a", "old-connection", []byte("leftover")); err != nil {
		t.Fatal(err)
	}
	if err := e.store.MarkStopping(ctx, l); err != nil {
		t.Fatal(err)
	}
	c := e.gw.Dial(t, "user_a")
	e.send(t, c, "one")
	e.send(t, c, "two")
	wantFrame(t, c.NextFrame(), frames.TypeStatus, frames.Stopping)
	noMore(t, c)
	if ns := e.notices(t, notice.KindRestart); len(ns) != 1 || ns[0].Kind != notice.KindRestart {
		t.Fatalf("notices %+v, want one restart", ns)
	}
	if got := e.inbox(t, "user_a"); got != "leftover,one,two" {
		t.Fatalf("inbox %q", got)
	}
}

// An agent that answers "stopping" (it has begun its final sync) gets no frame: the
// frame waits for the next sandbox and a restart is requested.
func TestHandler_Handle_AgentStopping(t *testing.T) {
	e := newEnv(t)
	agent := testkit.StartAgent(t, "user_a")
	l := e.running(t, agent)
	agent.Hook = func(testkit.Call) error {
		if err := e.store.MarkStopping(context.Background(), l); err != nil {
			t.Error(err)
		}
		return agentapi.ErrStopping
	}
	c := e.gw.Dial(t, "user_a")
	e.send(t, c, "late")
	wantFrame(t, c.NextFrame(), frames.TypeStatus, frames.Stopping)
	if got, ns := e.inbox(t, "user_a"), e.notices(t, notice.KindRestart); got != "late" || len(ns) != 1 {
		t.Fatalf("inbox %q, notices %+v", got, ns)
	}
}

// An agent that does not answer while its lease lives: the sender hears unavailable,
// nothing is started or queued.
func TestHandler_Handle_AgentSilentLeaseLive(t *testing.T) {
	e := newEnv(t)
	agent := testkit.StartAgent(t, "user_a")
	e.running(t, agent)
	agent.Stop()
	c := e.gw.Dial(t, "user_a")
	e.send(t, c, "hello")
	wantFrame(t, c.NextFrame(), frames.TypeError, frames.ReasonUnavailable)
	if got := e.inbox(t, "user_a"); got != "" || len(e.ecs.RunTasks()) != 0 {
		t.Fatalf("inbox %q, RunTask %d", got, len(e.ecs.RunTasks()))
	}
}

// An agent that does not answer and whose lease expired is dead: the frame takes the
// sandbox over and waits for the new one.
func TestHandler_Handle_DeadAgentTakenOver(t *testing.T) {
	e := newEnv(t)
	agent := testkit.StartAgent(t, "user_a")
	l := e.running(t, agent)
	agent.Stop()
	e.db.Clock.Advance(state.DefaultLeaseTTL)
	c := e.gw.Dial(t, "user_a")
	e.send(t, c, "hello")
	wantFrame(t, c.NextFrame(), frames.TypeStatus, frames.Starting)
	sb, err := e.store.Get(context.Background(), "user_a")
	if err != nil || sb.State != state.Starting || sb.Generation != l.Generation+1 || len(e.ecs.RunTasks()) != 1 {
		t.Fatalf("record %+v, %v, RunTask %d", sb, err, len(e.ecs.RunTasks()))
	}
	if got := e.inbox(t, "user_a"); got != "hello" {
		t.Fatalf("inbox %q", got)
	}
}

// racingStore makes the sandbox ready right after the handler read it as STARTING.
type racingStore struct {
	*state.Store
	after func()
}

func (r racingStore) Get(ctx context.Context, userID string) (*state.Sandbox, error) {
	sb, err := r.Store.Get(ctx, userID)
	r.after()
	return sb, err
}

// The sandbox became ready between the read and the enqueue: the inbox refuses (the
// agent has drained it) and the frame goes to the agent directly.
func TestHandler_Handle_ReadyDuringEnqueue(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	agent := testkit.StartAgent(t, "user_a")
	l, err := e.store.Acquire(ctx, "user_a")
	if err != nil {
		t.Fatal(err)
	}
	e.h.Store = racingStore{Store: e.store, after: func() {
		if _, err := e.store.MarkReady(ctx, l, agent.URL, agent.Token); err != nil {
			t.Error(err)
		}
	}}
	c := e.gw.Dial(t, "user_a")
	e.send(t, c, "hello")
	if got := agent.Next(t); string(got.Frame) != "hello" {
		t.Fatalf("agent got %+v", got)
	}
	if got := e.inbox(t, "user_a"); got != "" {
		t.Fatalf("inbox %q", got)
	}
	noMore(t, c)
}

func TestHandler_Handle_Purging(t *testing.T) {
	e := newEnv(t)
	if _, err := e.store.AcquirePurge(context.Background(), "user_a"); err != nil {
		t.Fatal(err)
	}
	c := e.gw.Dial(t, "user_a")
	e.send(t, c, "hello")
	wantFrame(t, c.NextFrame(), frames.TypeError, frames.ReasonPurging)
	if got := e.inbox(t, "user_a"); got != "" || len(e.ecs.RunTasks()) != 0 {
		t.Fatalf("inbox %q, RunTask %d", got, len(e.ecs.RunTasks()))
	}
}

// DynamoDB unreachable: the sender hears unavailable (the frame was not delivered).
func TestHandler_Handle_StoreUnavailable(t *testing.T) {
	e := newEnv(t)
	cfg, err := awsconf.Load(context.Background(), awsconf.Loopback("http://127.0.0.1:1")...)
	if err != nil {
		t.Fatal(err)
	}
	down := state.New(dynamodb.NewFromConfig(cfg, func(o *dynamodb.Options) {
		o.Retryer = retry.AddWithMaxAttempts(o.Retryer, 1)
	}), e.db.Table)
	e.h.Store = down
	c := e.gw.Dial(t, "user_a")
	e.send(t, c, "hello")
	wantFrame(t, c.NextFrame(), frames.TypeError, frames.ReasonUnavailable)
}

// A base64 body (a binary frame) reaches the agent decoded.
func TestHandler_Handle_Base64Body(t *testing.T) {
	e := newEnv(t)
	agent := testkit.StartAgent(t, "user_a")
	e.running(t, agent)
	e.gw.Dial(t, "user_a")
	raw := []byte{0, 1, 2, 0xff}
	ev := events.APIGatewayWebsocketProxyRequest{
		Body: base64.StdEncoding.EncodeToString(raw), IsBase64Encoded: true,
		RequestContext: events.APIGatewayWebsocketProxyRequestContext{EventType: "MESSAGE", RouteKey: "$default",
			ConnectionID: e.connectionID(t, 0), Authorizer: map[string]any{"userId": "user_a"}},
	}
	if resp, err := e.h.Handle(context.Background(), ev); err != nil || resp.StatusCode != 200 {
		t.Fatalf("response %d, %v", resp.StatusCode, err)
	}
	if got := agent.Next(t); string(got.Frame) != string(raw) {
		t.Fatalf("agent got %q", got.Frame)
	}
}

// Events without an authorized user, of another route, or with a corrupt body are
// refused with 500 before anything is read or written.
func TestHandler_Handle_BadEvents(t *testing.T) {
	e := newEnv(t)
	msg := func(mod func(*events.APIGatewayWebsocketProxyRequest)) events.APIGatewayWebsocketProxyRequest {
		ev := events.APIGatewayWebsocketProxyRequest{Body: "hi", RequestContext: events.APIGatewayWebsocketProxyRequestContext{
			EventType: "MESSAGE", RouteKey: "$default", ConnectionID: "c1", Authorizer: map[string]any{"userId": "user_a"}}}
		mod(&ev)
		return ev
	}
	for name, ev := range map[string]events.APIGatewayWebsocketProxyRequest{
		"no authorizer": msg(func(ev *events.APIGatewayWebsocketProxyRequest) { ev.RequestContext.Authorizer = nil }),
		"user in the body": msg(func(ev *events.APIGatewayWebsocketProxyRequest) {
			ev.RequestContext.Authorizer = nil
			ev.Body = `{"userId":"user_a"}`
		}),
		"malformed user": msg(func(ev *events.APIGatewayWebsocketProxyRequest) {
			ev.RequestContext.Authorizer = map[string]any{"userId": "bob"}
		}),
		"no connection":     msg(func(ev *events.APIGatewayWebsocketProxyRequest) { ev.RequestContext.ConnectionID = "" }),
		"a connect event":   msg(func(ev *events.APIGatewayWebsocketProxyRequest) { ev.RequestContext.EventType = "CONNECT" }),
		"corrupt base64":    msg(func(ev *events.APIGatewayWebsocketProxyRequest) { ev.IsBase64Encoded = true; ev.Body = "%%%" }),
		"empty event shape": {},
	} {
		resp, err := e.h.Handle(context.Background(), ev)
		if err != nil || resp.StatusCode != 500 {
			t.Errorf("%s: %d, %v", name, resp.StatusCode, err)
		}
	}
	if n := e.db.Calls.Calls("DynamoDB", ""); n != 0 || len(e.ecs.RunTasks()) != 0 || len(e.inv.Calls()) != 0 {
		t.Fatalf("bad events made %d DynamoDB calls, %d tasks, %d invocations", n, len(e.ecs.RunTasks()), len(e.inv.Calls()))
	}
	refused := e.logs.With(t, slog.LevelKey, "ERROR")
	for _, l := range refused {
		if l[logging.Error] == nil {
			t.Errorf("refusal logged without its error: %v", l)
		}
	}
	if len(refused) != 7 {
		t.Fatalf("%d refusals logged at ERROR, want 7", len(refused))
	}
}

func TestLoadConfig_Defaults(t *testing.T) {
	m := map[string]string{"TABLE_NAME": "t", "MANAGEMENT_ENDPOINT": "https://x/prod", "CONNECT_FUNCTION": "sandgate-connect"}
	cfg := loadOK(t, m)
	if cfg.Table != "t" || cfg.ManagementEndpoint != "https://x/prod" || cfg.InboxMaxFrames != state.DefaultInboxMaxItems ||
		cfg.InboxMaxBytes != state.DefaultInboxMaxBytes || cfg.AgentTimeout != agentapi.DefaultTimeout || cfg.ConnectFunction != "sandgate-connect" {
		t.Fatalf("config %+v", cfg)
	}
	m["INBOX_MAX_FRAMES"], m["INBOX_MAX_BYTES"], m["AGENT_TIMEOUT"] = "100", "1048576", "2"
	if cfg = loadOK(t, m); cfg.AgentTimeout != 2*time.Second || cfg.InboxMaxBytes != 1<<20 {
		t.Fatalf("config %+v", cfg)
	}
	delete(m, "CONNECT_FUNCTION")
	delete(m, "TABLE_NAME")
	delete(m, "MANAGEMENT_ENDPOINT")
	m["INBOX_MAX_BYTES"] = "10"
	env := newEnvFrom(m)
	message.LoadConfig(env)
	err := env.Err()
	for _, k := range []string{"CONNECT_FUNCTION", "TABLE_NAME", "MANAGEMENT_ENDPOINT", "INBOX_MAX_BYTES"} {
		if err == nil || !strings.Contains(err.Error(), k) {
			t.Errorf("err = %v, want it to name %s", err, k)
		}
	}
}
