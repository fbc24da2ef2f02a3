package disconnect_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"testing"

	"github.com/aws/aws-lambda-go/events"

	"github.com/sandgate/sandgate/infra/local/dynamodblocal"
	"github.com/sandgate/sandgate/infra/local/testkit"
	"github.com/sandgate/sandgate/internal/agentapi"
	"github.com/sandgate/sandgate/internal/config"
	"github.com/sandgate/sandgate/internal/disconnect"
	"github.com/sandgate/sandgate/internal/logging"
	"github.com/sandgate/sandgate/internal/state"
)

func TestMain(m *testing.M) { os.Exit(dynamodblocal.RunTests(m)) }

type env struct {
	db       *testkit.DB
	store    *state.Store
	gw       *testkit.Gateway
	h        *disconnect.Handler
	logs     *testkit.Logs
	done     *testkit.Tracker
	connects *testkit.Recorder
}

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{logs: &testkit.Logs{}, done: testkit.NewTracker(), connects: testkit.NewRecorder()}
	log := e.logs.Logger()
	e.db = testkit.NewDB(t)
	e.store = e.db.Store()
	e.h = &disconnect.Handler{Store: e.store, Agent: &agentapi.Client{}, Log: log}
	e.gw = testkit.StartGateway(t, log, testkit.Routes{Connect: "record", Disconnect: "disconnect"}, testkit.Funcs{
		"record":     e.connects.Wrap(testkit.Recording(e.store)),
		"disconnect": e.done.Wrap(testkit.Handler(e.h.Handle)),
	})
	return e
}

func (e *env) connections(t *testing.T, user string) map[string]bool {
	t.Helper()
	cs, err := e.store.Connections(context.Background(), user)
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]bool{}
	for _, c := range cs {
		ids[c.ConnectionID] = true
	}
	return ids
}

func (e *env) connectionID(t *testing.T, n int) string {
	t.Helper()
	var ev events.APIGatewayWebsocketProxyRequest
	if err := json.Unmarshal(e.connects.Events()[n], &ev); err != nil {
		t.Fatal(err)
	}
	return ev.RequestContext.ConnectionID
}

func (e *env) running(t *testing.T, agent *testkit.Agent) {
	t.Helper()
	ctx := context.Background()
	l, err := e.store.Acquire(ctx, agent.UserID)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.store.MarkReady(ctx, l, agent.URL, agent.Token); err != nil {
		t.Fatal(err)
	}
}

// Closing a connection removes its record, and only its, and tells the agent.
func TestHandler_Handle_RemovesConnectionTellsAgent(t *testing.T) {
	e := newEnv(t)
	agent := testkit.StartAgent(t, "user_a")
	e.running(t, agent)
	first := e.gw.Dial(t, "user_a")
	e.gw.Dial(t, "user_a")
	gone, kept := e.connectionID(t, 0), e.connectionID(t, 1)
	first.Close()
	e.done.Wait(t, 1)
	if got := e.connections(t, "user_a"); got[gone] || !got[kept] || len(got) != 1 {
		t.Fatalf("records %v after %s left", got, gone)
	}
	if c := agent.Next(t); c.Op != "close" || c.ConnectionID != gone {
		t.Fatalf("agent got %+v", c)
	}
}

// An agent that does not answer does not keep the record alive.
func TestHandler_Handle_AgentUnreachable(t *testing.T) {
	e := newEnv(t)
	agent := testkit.StartAgent(t, "user_a")
	e.running(t, agent)
	agent.Stop()
	c := e.gw.Dial(t, "user_a")
	c.Close()
	e.done.Wait(t, 1)
	if got := e.connections(t, "user_a"); len(got) != 0 {
		t.Fatalf("records %v", got)
	}
	// A warning with the failure, and the disconnect says the agent was not told.
	var warnings []map[string]any
	for _, l := range e.logs.With(t, logging.UserID, "user_a") {
		if l[slog.LevelKey] == slog.LevelWarn.String() && l[logging.Error] != nil {
			warnings = append(warnings, l)
		}
	}
	if len(warnings) != 1 {
		t.Fatalf("warnings %v", warnings)
	}
	if lines := e.logs.With(t, "agent", "unreachable"); len(lines) != 1 || lines[0][logging.UserID] != "user_a" {
		t.Fatalf("log %v", lines)
	}
}

// Without a sandbox there is no one to tell; the record still goes.
func TestHandler_Handle_NoSandbox(t *testing.T) {
	e := newEnv(t)
	c := e.gw.Dial(t, "user_a")
	c.Close()
	e.done.Wait(t, 1)
	if got := e.connections(t, "user_a"); len(got) != 0 {
		t.Fatalf("records %v", got)
	}
	if lines := e.logs.With(t, "agent", "none"); len(lines) != 1 || lines[0][logging.UserID] != "user_a" {
		t.Fatalf("log %v", lines)
	}
}

// Events without an authorized user, or of another route, are refused before
// anything is written.
func TestHandler_Handle_BadEvents(t *testing.T) {
	e := newEnv(t)
	if _, err := e.store.AddConnection(context.Background(), "user_a", "c1"); err != nil {
		t.Fatal(err)
	}
	e.db.Calls.Reset()
	for name, rc := range map[string]events.APIGatewayWebsocketProxyRequestContext{
		"no authorizer":  {EventType: "DISCONNECT", RouteKey: "$disconnect", ConnectionID: "c1"},
		"other user":     {EventType: "DISCONNECT", RouteKey: "$disconnect", ConnectionID: "c1", Authorizer: map[string]any{"userId": "not-a-user"}},
		"a message":      {EventType: "MESSAGE", RouteKey: "$default", ConnectionID: "c1", Authorizer: map[string]any{"userId": "user_a"}},
		"no connection":  {EventType: "DISCONNECT", RouteKey: "$disconnect", Authorizer: map[string]any{"userId": "user_a"}},
		"nothing at all": {},
	} {
		resp, err := e.h.Handle(context.Background(), events.APIGatewayWebsocketProxyRequest{RequestContext: rc})
		if err != nil || resp.StatusCode != 500 {
			t.Errorf("%s: %d, %v", name, resp.StatusCode, err)
		}
	}
	if n := e.db.Calls.Calls("DynamoDB", ""); n != 0 || !e.connections(t, "user_a")["c1"] {
		t.Fatalf("%d DynamoDB calls; records %v", n, e.connections(t, "user_a"))
	}
}

func TestLoadConfig_Environment(t *testing.T) {
	env := config.New(config.Map(map[string]string{"TABLE_NAME": "t", "LOG_LEVEL": "WARN"}))
	if c := disconnect.LoadConfig(env); env.Err() != nil || c.Table != "t" || c.LogLevel.String() != "WARN" {
		t.Fatalf("config %+v, %v", c, env.Err())
	}
	env = config.New(config.Map(map[string]string{"LOG_LEVEL": "LOUD"}))
	disconnect.LoadConfig(env)
	if env.Err() == nil {
		t.Fatal("accepted no table and a bad level")
	}
}
