package connect_test

import (
	"context"
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
	"github.com/aws/aws-sdk-go-v2/service/apigatewaymanagementapi"

	"github.com/sandgate/sandgate/infra/local/dynamodblocal"
	"github.com/sandgate/sandgate/infra/local/ecslocal"
	"github.com/sandgate/sandgate/infra/local/testkit"
	"github.com/sandgate/sandgate/internal/agentapi"
	"github.com/sandgate/sandgate/internal/connect"
	"github.com/sandgate/sandgate/internal/disconnect"
	"github.com/sandgate/sandgate/internal/ensure"
	"github.com/sandgate/sandgate/internal/frames"
	"github.com/sandgate/sandgate/internal/logging"
	"github.com/sandgate/sandgate/internal/metrics"
	"github.com/sandgate/sandgate/internal/notice"
	"github.com/sandgate/sandgate/internal/relay"
	"github.com/sandgate/sandgate/internal/state"
	"github.com/sandgate/sandgate/internal/taskenv"
)

func TestMain(m *testing.M) { os.Exit(dynamodblocal.RunTests(m)) }

const fnName = "ConnectFunction"

type env struct {
	db       *testkit.DB
	store    *state.Store
	ecs      *testkit.ECS
	gw       *testkit.Gateway
	inv      *testkit.Invoker
	h        *connect.Handler
	logs     *testkit.Logs
	connects *testkit.Recorder
}

type options struct {
	ecs     []func(*ecslocal.Server)
	wrapFn  func(testkit.Func) testkit.Func // wraps the $connect integration
	wrapAPI func(connect.Management) connect.Management
	// disconnect routes $disconnect to the Disconnect function's handler.
	disconnect bool
}

func newEnv(t *testing.T, o options) *env {
	t.Helper()
	e := &env{logs: &testkit.Logs{}, connects: testkit.NewRecorder()}
	log := e.logs.Logger()
	e.db = testkit.NewDB(t)
	e.store = e.db.Store()
	e.ecs = testkit.StartECS(t, log, o.ecs...)
	fn := func(ctx context.Context, p []byte) ([]byte, error) { return testkit.Handler(e.h.Handle)(ctx, p) }
	route := e.connects.Wrap(fn)
	if o.wrapFn != nil {
		route = o.wrapFn(route)
	}
	routes, fns := testkit.Routes{Connect: "connect"}, testkit.Funcs{"connect": route}
	if o.disconnect {
		d := &disconnect.Handler{Store: e.store, Agent: &agentapi.Client{}, Log: log}
		routes.Disconnect, fns["disconnect"] = "disconnect", testkit.Handler(d.Handle)
	}
	e.gw = testkit.StartGateway(t, log, routes, fns)
	e.inv = testkit.NewInvoker(t, testkit.Funcs{fnName: fn})
	var mgmt connect.Management = e.gw.Mgmt
	if o.wrapAPI != nil {
		mgmt = o.wrapAPI(mgmt)
	}
	e.h = &connect.Handler{
		Store:        e.store,
		Ensurer:      &ensure.Ensurer{Store: e.store, Launcher: e.ecs.Launcher(log, e.db.Table, e.gw.Server.ManagementEndpoint()), Log: log},
		Mgmt:         mgmt,
		Agent:        &agentapi.Client{},
		Notifier:     &notice.Notifier{API: e.inv, Function: fnName},
		Metrics:      metrics.New(e.logs),
		Log:          log,
		Now:          e.db.Clock.Now,
		PollInterval: 20 * time.Millisecond,
	}
	// The invoker's goroutines post through the gateway: wait for them before it closes.
	t.Cleanup(e.inv.Wait)
	return e
}

// slow keeps every task in PROVISIONING for the whole test: nothing here waits for it.
func slow(s *ecslocal.Server) { s.LaunchDelay = time.Hour }

func (e *env) connections(t *testing.T, user string) []string {
	t.Helper()
	cs, err := e.store.Connections(context.Background(), user)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, c := range cs {
		ids = append(ids, c.ConnectionID)
	}
	return ids
}

// connectionIDs returns the connection ids of the $connect events the gateway sent.
func (e *env) connectionIDs(t *testing.T) []string {
	t.Helper()
	var ids []string
	for _, p := range e.connects.Events() {
		var ev events.APIGatewayWebsocketProxyRequest
		if err := json.Unmarshal(p, &ev); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, ev.RequestContext.ConnectionID)
	}
	return ids
}

// noticeEvent is the Connect function's event carrying n.
func noticeEvent(n notice.Notice) connect.Event {
	return connect.Event{Envelope: notice.Envelope{Notice: &n}}
}

func wantFrame(t *testing.T, got frames.Frame, typ, stateOrReason string) {
	t.Helper()
	if got.Type != typ || (got.State != stateOrReason && got.Reason != stateOrReason) {
		t.Fatalf("frame = %+v, want %s %s", got, typ, stateOrReason)
	}
}

// $connect records the connection, starts the sandbox and returns without waiting
// for the task: the client is connected and told "starting" while the task is still
// being provisioned.
func TestHandler_Handle_ConnectStartsWithoutWaiting(t *testing.T) {
	e := newEnv(t, options{ecs: []func(*ecslocal.Server){slow}})
	c := e.gw.Dial(t, "user_a")
	wantFrame(t, c.NextFrame(), frames.TypeStatus, frames.Starting)
	tasks := e.ecs.Server.Tasks()
	if len(tasks) != 1 || tasks[0].LastStatus != "PROVISIONING" || tasks[0].Pid != 0 {
		t.Fatalf("tasks = %+v; the task must still be provisioning", tasks)
	}
	ids := e.connectionIDs(t)
	if got := e.connections(t, "user_a"); len(ids) != 1 || fmt.Sprint(got) != fmt.Sprint(ids) {
		t.Fatalf("connection records %v, connections %v", got, ids)
	}
	sb, err := e.store.Get(context.Background(), "user_a")
	if err != nil || sb.State != state.Starting || sb.TaskARN != tasks[0].ARN {
		t.Fatalf("record %+v, %v", sb, err)
	}
	calls := e.inv.Calls()
	if len(calls) != 1 || calls[0].Function != fnName || !strings.Contains(string(calls[0].Payload), `"sandgateNotice"`) {
		t.Fatalf("invocations = %+v", calls)
	}
	// One status frame, not one per retry: once the notice has ended it has posted
	// everything it would.
	e.inv.Wait()
	if extra := c.Pending(); len(extra) != 0 {
		t.Fatalf("unexpected frames %q", extra)
	}
}

// Fifty connections of one user at once start exactly one task, and each is told.
func TestHandler_Handle_FiftyConnectsOneTask(t *testing.T) {
	e := newEnv(t, options{ecs: []func(*ecslocal.Server){slow}})
	const n = 50
	// Within the user's limits: fifty at once (the defaults allow twenty).
	e.store.ConnectLimits = state.ConnectLimits{MaxConnections: n, Interval: time.Millisecond, Burst: n}
	clients := make([]*testkit.Client, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := e.gw.TryDial(t, "user_a")
			if err != nil {
				t.Error(err)
				return
			}
			clients[i] = c
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	for _, c := range clients {
		wantFrame(t, c.NextFrame(), frames.TypeStatus, frames.Starting)
	}
	if runs := e.ecs.RunTasks(); len(runs) != 1 {
		t.Fatalf("%d RunTask calls for one user", len(runs))
	}
	if got := e.connections(t, "user_a"); len(got) != n {
		t.Fatalf("%d connection records", len(got))
	}
	if cap, _ := e.store.Capacity(context.Background()); cap != 1 {
		t.Fatalf("capacity = %d", cap)
	}
}

// Two users connecting at once get two sandboxes with separate prefixes.
func TestHandler_Handle_TwoUsersTwoSandboxes(t *testing.T) {
	e := newEnv(t, options{ecs: []func(*ecslocal.Server){slow}})
	var wg sync.WaitGroup
	for _, u := range []string{"user_a", "user_b"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := e.gw.TryDial(t, u)
			if err != nil {
				t.Error(err)
				return
			}
			if f := c.NextFrame(); f.State != frames.Starting {
				t.Errorf("%s: %+v", u, f)
			}
		}()
	}
	wg.Wait()
	prefixes := map[string]string{}
	for _, r := range e.ecs.RunTasks() {
		env := testkit.TaskEnv(r)
		prefixes[env[taskenv.UserID]] = env[taskenv.Prefix]
	}
	if len(prefixes) != 2 || prefixes["user_a"] != "users/user_a/" || prefixes["user_b"] != "users/user_b/" {
		t.Fatalf("prefixes = %v", prefixes)
	}
}

// A failed launch reaches the client as start_failed, the lease is released and the
// failure is counted.
func TestHandler_Handle_LaunchFailure(t *testing.T) {
	e := newEnv(t, options{})
	e.ecs.Server.FailRunTask(ecslocal.ServerException, -1)
	c := e.gw.Dial(t, "user_a")
	wantFrame(t, c.NextFrame(), frames.TypeError, frames.ReasonStartFailed)
	sb, err := e.store.Get(context.Background(), "user_a")
	if err != nil || sb.State != state.Stopped {
		t.Fatalf("record %+v, %v", sb, err)
	}
	if cap, _ := e.store.Capacity(context.Background()); cap != 0 {
		t.Fatalf("capacity = %d after a failed start", cap)
	}
	metric := e.logs.With(t, metrics.StartFailures, 1.0)
	if len(metric) != 1 || metric[0]["Stage"] != testkit.Stage {
		t.Fatalf("metric lines %v", metric)
	}
	// The connection stands: a handshake refusal would have told the browser nothing.
	if got := e.connections(t, "user_a"); len(got) != 1 {
		t.Fatalf("connection records %v", got)
	}
}

// Capacity full reaches the client as a capacity error frame and is counted.
func TestHandler_Handle_Capacity(t *testing.T) {
	e := newEnv(t, options{ecs: []func(*ecslocal.Server){slow}})
	e.store.MaxSandboxes = 1
	a := e.gw.Dial(t, "user_a")
	wantFrame(t, a.NextFrame(), frames.TypeStatus, frames.Starting)
	b := e.gw.Dial(t, "user_b")
	wantFrame(t, b.NextFrame(), frames.TypeError, frames.ReasonCapacity)
	if len(e.logs.With(t, metrics.CapacityRefusals, 1.0)) != 1 || len(e.ecs.RunTasks()) != 1 {
		t.Fatalf("metrics %v, RunTask %d", e.logs.With(t, metrics.CapacityRefusals, 1.0), len(e.ecs.RunTasks()))
	}
}

// A running sandbox: the client is told "ready" and the agent that it connected.
func TestHandler_Handle_RunningSandboxReadyAndOpen(t *testing.T) {
	e := newEnv(t, options{})
	ctx := context.Background()
	agent := testkit.StartAgent(t, "user_a")
	l, err := e.store.Acquire(ctx, "user_a")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.store.MarkReady(ctx, l, agent.URL, agent.Token); err != nil {
		t.Fatal(err)
	}
	c := e.gw.Dial(t, "user_a")
	wantFrame(t, c.NextFrame(), frames.TypeStatus, frames.Ready)
	call := agent.Next(t)
	if ids := e.connectionIDs(t); call.Op != "open" || len(ids) != 1 || call.ConnectionID != ids[0] {
		t.Fatalf("agent call %+v, connections %v", call, ids)
	}
	if len(e.ecs.RunTasks()) != 0 {
		t.Fatal("a running sandbox was launched again")
	}
	if strings.Contains(e.logs.String(), agent.Token) || strings.Contains(e.logs.String(), l.Token) {
		t.Fatal("a token reached the log")
	}
}

func TestHandler_Handle_Purging(t *testing.T) {
	e := newEnv(t, options{})
	if _, err := e.store.AcquirePurge(context.Background(), "user_a"); err != nil {
		t.Fatal(err)
	}
	c := e.gw.Dial(t, "user_a")
	wantFrame(t, c.NextFrame(), frames.TypeError, frames.ReasonPurging)
	if len(e.ecs.RunTasks()) != 0 {
		t.Fatal("launched during a purge")
	}
}

// A connect to a STOPPING sandbox hears "stopping"; once the old sandbox has stopped,
// a new one starts and the client hears "starting".
func TestHandler_Handle_StoppingRestarts(t *testing.T) {
	e := newEnv(t, options{ecs: []func(*ecslocal.Server){slow}})
	ctx := context.Background()
	l, err := e.store.Acquire(ctx, "user_a")
	if err != nil {
		t.Fatal(err)
	}
	if l, err = e.store.MarkReady(ctx, l, "http://127.0.0.1:9", "gw"); err != nil {
		t.Fatal(err)
	}
	if err := e.store.MarkStopping(ctx, l); err != nil {
		t.Fatal(err)
	}
	c := e.gw.Dial(t, "user_a")
	wantFrame(t, c.NextFrame(), frames.TypeStatus, frames.Stopping)
	if len(e.ecs.RunTasks()) != 0 {
		t.Fatal("launched while the old sandbox was still stopping")
	}
	if err := e.store.Stop(ctx, l); err != nil { // the old agent's final sync is done
		t.Fatal(err)
	}
	wantFrame(t, c.NextFrame(), frames.TypeStatus, frames.Starting)
	sb, err := e.store.Get(ctx, "user_a")
	if err != nil || sb.State != state.Starting || sb.Generation != l.Generation+1 || len(e.ecs.RunTasks()) != 1 {
		t.Fatalf("record %+v, %v, RunTask %d", sb, err, len(e.ecs.RunTasks()))
	}
}

// A restart whose invocation would end before the sandbox stops hands the wait over to
// a fresh invocation, which then restarts the sandbox.
func TestHandler_Handle_RestartHandsOver(t *testing.T) {
	e := newEnv(t, options{ecs: []func(*ecslocal.Server){slow}})
	ctx := context.Background()
	l, err := e.store.Acquire(ctx, "user_a")
	if err != nil {
		t.Fatal(err)
	}
	if err := e.store.MarkStopping(ctx, l); err != nil {
		t.Fatal(err)
	}
	e.h.InvokeMargin = 100 * time.Millisecond
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	n := notice.Notice{Kind: notice.KindRestart, UserID: "user_a", ConnectionID: "c-gone", Stage: "test",
		Until: time.Now().Add(time.Minute).UnixMilli()}
	if _, err := e.h.Handle(short, noticeEvent(n)); err != nil {
		t.Fatal(err)
	}
	calls := e.inv.Calls()
	if len(calls) != 1 {
		t.Fatalf("%d hand-overs", len(calls))
	}
	var got notice.Envelope
	if err := json.Unmarshal(calls[0].Payload, &got); err != nil || got.Notice == nil || *got.Notice != n {
		t.Fatalf("handed over %s (%v), want %+v", calls[0].Payload, err, n)
	}
	if err := e.store.Stop(ctx, l); err != nil {
		t.Fatal(err)
	}
	e.inv.Wait()
	if len(e.ecs.RunTasks()) != 1 {
		t.Fatalf("%d RunTask calls after the hand-over", len(e.ecs.RunTasks()))
	}
}

// A restart whose deadline passes while the sandbox still stops gives up and says so.
func TestHandler_Handle_RestartGivesUp(t *testing.T) {
	e := newEnv(t, options{})
	ctx := context.Background()
	l, err := e.store.Acquire(ctx, "user_a")
	if err != nil {
		t.Fatal(err)
	}
	if err := e.store.MarkStopping(ctx, l); err != nil {
		t.Fatal(err)
	}
	c := e.gw.Dial(t, "user_b") // any open connection to hear the outcome
	wantFrame(t, c.NextFrame(), frames.TypeStatus, frames.Starting)
	ids := e.connectionIDs(t)
	n := notice.Notice{Kind: notice.KindRestart, UserID: "user_a", ConnectionID: ids[0], Until: time.Now().UnixMilli() - 1}
	if _, err := e.h.Handle(ctx, noticeEvent(n)); err != nil {
		t.Fatal(err)
	}
	wantFrame(t, c.NextFrame(), frames.TypeError, frames.ReasonUnavailable)
	if sb, _ := e.store.Get(ctx, "user_a"); sb.State != state.Stopping || len(e.ecs.RunTasks()) != 1 {
		t.Fatalf("record %+v, RunTask %d", sb, len(e.ecs.RunTasks()))
	}
}

// countingAPI records each post's outcome and signals the first one.
type countingAPI struct {
	connect.Management
	mu      sync.Mutex
	results []error
	first   chan struct{}
	once    sync.Once
}

func (c *countingAPI) PostToConnection(ctx context.Context, in *apigatewaymanagementapi.PostToConnectionInput, opts ...func(*apigatewaymanagementapi.Options)) (*apigatewaymanagementapi.PostToConnectionOutput, error) {
	out, err := c.Management.PostToConnection(ctx, in, opts...)
	c.mu.Lock()
	c.results = append(c.results, err)
	c.mu.Unlock()
	c.once.Do(func() { close(c.first) })
	return out, err
}

// The notice's first post meets the handshake's 410 (deterministically: $connect does
// not return before it); it retries until the handshake completes, and the
// connection record survives both that 410 and an agent's broadcast that met it too.
func TestHandler_Handle_NoticeRetriesDuringHandshake(t *testing.T) {
	api := &countingAPI{first: make(chan struct{})}
	var e *env
	e = newEnv(t, options{
		ecs:     []func(*ecslocal.Server){slow},
		wrapAPI: func(m connect.Management) connect.Management { api.Management = m; return api },
		wrapFn: func(fn testkit.Func) testkit.Func {
			return func(ctx context.Context, p []byte) ([]byte, error) {
				out, err := fn(ctx, p)
				<-api.first
				// An agent broadcasting now meets the same 410 and forgets the connection.
				r := &relay.Relay{API: e.gw.Mgmt, Conns: e.store, Log: e.logs.Logger()}
				if _, berr := r.Broadcast(ctx, "user_a", frames.Status(frames.Ready).Bytes()); berr != nil {
					t.Errorf("broadcast: %v", berr)
				}
				return out, err
			}
		},
	})
	c := e.gw.Dial(t, "user_a")
	wantFrame(t, c.NextFrame(), frames.TypeStatus, frames.Starting)
	e.inv.Wait() // the notice has finished: its post and the record's refresh
	api.mu.Lock()
	results := append([]error(nil), api.results...)
	api.mu.Unlock()
	var gone interface{ ErrorCode() string }
	if len(results) < 2 || !errors.As(results[0], &gone) || gone.ErrorCode() != "GoneException" || results[len(results)-1] != nil {
		t.Fatalf("post results %v: want a 410 first, success last", results)
	}
	if got, ids := e.connections(t, "user_a"), e.connectionIDs(t); fmt.Sprint(got) != fmt.Sprint(ids) {
		t.Fatalf("connection records %v, want %v", got, ids)
	}
}

// Events without an authorized user, or of another shape, are refused before
// anything is written, started or invoked.
func TestHandler_Handle_BadEvents(t *testing.T) {
	e := newEnv(t, options{})
	ctx := context.Background()
	for name, ev := range map[string]connect.Event{
		"no authorizer": {APIGatewayWebsocketProxyRequest: events.APIGatewayWebsocketProxyRequest{
			RequestContext: events.APIGatewayWebsocketProxyRequestContext{EventType: "CONNECT", RouteKey: "$connect", ConnectionID: "c1"}}},
		"user in the query only": {APIGatewayWebsocketProxyRequest: events.APIGatewayWebsocketProxyRequest{
			QueryStringParameters: map[string]string{"userId": "user_a"},
			RequestContext:        events.APIGatewayWebsocketProxyRequestContext{EventType: "CONNECT", RouteKey: "$connect", ConnectionID: "c1"}}},
		"a message event": {APIGatewayWebsocketProxyRequest: events.APIGatewayWebsocketProxyRequest{
			RequestContext: events.APIGatewayWebsocketProxyRequestContext{EventType: "MESSAGE", RouteKey: "$default", ConnectionID: "c1",
				Authorizer: map[string]any{"userId": "user_a"}}}},
		"empty": {},
	} {
		resp, err := e.h.Handle(ctx, ev)
		if err != nil || resp.StatusCode != 500 {
			t.Errorf("%s: %d, %v", name, resp.StatusCode, err)
		}
	}
	for name, n := range map[string]notice.Notice{
		"unknown kind":       {Kind: "bogus", UserID: "user_a", ConnectionID: "c1"},
		"no user":            {Kind: notice.KindConnect, ConnectionID: "c1"},
		"restart, no bound":  {Kind: notice.KindRestart, UserID: "user_a", ConnectionID: "c1"},
		"no connection":      {Kind: notice.KindConnect, UserID: "user_a"},
		"malformed user":     {Kind: notice.KindConnect, UserID: "../user_a", ConnectionID: "c1"},
		"connect, no reason": {Kind: "", UserID: "user_a", ConnectionID: "c1"},
	} {
		if _, err := e.h.Handle(ctx, noticeEvent(n)); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	if items := e.db.Items(t); len(items) != 0 || e.db.Writes() != 0 || len(e.ecs.RunTasks()) != 0 || len(e.inv.Calls()) != 0 {
		t.Fatalf("bad events wrote %d items (%d writes), ran %d tasks, invoked %d", len(items), e.db.Writes(), len(e.ecs.RunTasks()), len(e.inv.Calls()))
	}
	// Refused events are logged without a user (none was verified), refused notices
	// with the user they named.
	var badEvents, badNotices int
	for _, l := range e.logs.With(t, slog.LevelKey, "ERROR") {
		if _, named := l[logging.UserID]; named {
			badNotices++
		} else {
			badEvents++
		}
		if l[logging.Error] == nil {
			t.Errorf("refusal logged without its error: %v", l)
		}
	}
	if badEvents != 4 || badNotices != 6 {
		t.Fatalf("%d event and %d notice refusals logged at ERROR, want 4 and 6", badEvents, badNotices)
	}
}

// The sample events decode into the one Event type, which tells them apart.
func TestEvent_Decode_Samples(t *testing.T) {
	var ev connect.Event
	b, err := os.ReadFile("../../events/connect.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &ev); err != nil || ev.Notice != nil || ev.RequestContext.EventType != "CONNECT" ||
		ev.RequestContext.ConnectionID == "" || ev.RequestContext.Authorizer.(map[string]any)["userId"] != "user_alice" {
		t.Fatalf("connect.json: %+v, %v", ev, err)
	}
	ev = connect.Event{}
	if b, err = os.ReadFile("../../events/connect-notice.json"); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &ev); err != nil || ev.Notice == nil || ev.Notice.Validate() != nil ||
		ev.Notice.UserID != "user_alice" || ev.RequestContext.ConnectionID != "" {
		t.Fatalf("connect-notice.json: %+v, %v", ev, err)
	}
}

// A notice that cannot be sent costs the client its status frame, not its connection
// or its sandbox.
func TestHandler_Handle_NoticeNotSent(t *testing.T) {
	e := newEnv(t, options{ecs: []func(*ecslocal.Server){slow}})
	e.h.Notifier = &notice.Notifier{API: e.inv, Function: "NoSuchFunction"}
	e.gw.Dial(t, "user_a") // accepted
	if len(e.ecs.RunTasks()) != 1 || len(e.connections(t, "user_a")) != 1 {
		t.Fatalf("RunTask %d, records %v", len(e.ecs.RunTasks()), e.connections(t, "user_a"))
	}
	if lines := e.logs.With(t, slog.LevelKey, "ERROR"); len(lines) != 1 || lines[0][logging.UserID] != "user_a" ||
		!strings.Contains(fmt.Sprint(lines[0][logging.Error]), "NoSuchFunction") {
		t.Fatalf("log %v", lines)
	}
}
