package connrelay_test

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/apigatewaymanagementapi"
	"github.com/aws/aws-sdk-go-v2/service/apigatewaymanagementapi/types"

	"github.com/sandgate/sandgate/infra/local/dynamodblocal"
	"github.com/sandgate/sandgate/infra/local/testkit"
	"github.com/sandgate/sandgate/internal/connrelay"
	"github.com/sandgate/sandgate/internal/state"
)

func TestMain(m *testing.M) { os.Exit(dynamodblocal.RunTests(m)) }

const (
	account     = "123456789012"
	cluster     = "sandgate-Cluster-1ABC"
	sandboxRole = "sandgate-SandboxRole-1ABC"
	taskA       = "0123456789abcdef0123456789abcdef"
	taskB       = "fedcba9876543210fedcba9876543210"
)

func taskARN(id string) string {
	return "arn:aws:ecs:eu-west-1:" + account + ":task/" + cluster + "/" + id
}

func sandboxCaller(task string) string {
	return "arn:aws:sts::" + account + ":assumed-role/" + sandboxRole + "/" + task
}

// fakeAPI is the management API: it records each call and answers 410 for the
// connections in gone.
type fakeAPI struct {
	mu    sync.Mutex
	calls []string // "op connection data"
	gone  map[string]bool
}

func (f *fakeAPI) record(op, id string, data []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, op+" "+id+" "+string(data))
	if f.gone[id] {
		return &types.GoneException{Message: aws.String("gone")}
	}
	return nil
}

func (f *fakeAPI) PostToConnection(_ context.Context, in *apigatewaymanagementapi.PostToConnectionInput, _ ...func(*apigatewaymanagementapi.Options)) (*apigatewaymanagementapi.PostToConnectionOutput, error) {
	return &apigatewaymanagementapi.PostToConnectionOutput{}, f.record("post", aws.ToString(in.ConnectionId), in.Data)
}

func (f *fakeAPI) GetConnection(_ context.Context, in *apigatewaymanagementapi.GetConnectionInput, _ ...func(*apigatewaymanagementapi.Options)) (*apigatewaymanagementapi.GetConnectionOutput, error) {
	return &apigatewaymanagementapi.GetConnectionOutput{}, f.record("get", aws.ToString(in.ConnectionId), nil)
}

func (f *fakeAPI) DeleteConnection(_ context.Context, in *apigatewaymanagementapi.DeleteConnectionInput, _ ...func(*apigatewaymanagementapi.Options)) (*apigatewaymanagementapi.DeleteConnectionOutput, error) {
	return &apigatewaymanagementapi.DeleteConnectionOutput{}, f.record("delete", aws.ToString(in.ConnectionId), nil)
}

func (f *fakeAPI) reset() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = nil
}

func (f *fakeAPI) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

type env struct {
	db    *testkit.DB
	store *state.Store
	api   *fakeAPI
	logs  *testkit.Logs
	h     *connrelay.Handler
}

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{db: testkit.NewDB(t), logs: &testkit.Logs{}, api: &fakeAPI{gone: map[string]bool{}}}
	e.store = e.db.Store()
	e.h = &connrelay.Handler{Store: e.store, API: e.api, SandboxRole: sandboxRole, Account: account,
		Cluster: cluster, Log: e.logs.Logger(), Now: e.db.Clock.Now}
	return e
}

// start gives user a sandbox run by task, and records the connections conns.
func (e *env) start(t *testing.T, user, task string, conns ...string) state.Lease {
	t.Helper()
	ctx := context.Background()
	l, err := e.store.Acquire(ctx, user)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.store.SetTask(ctx, l, taskARN(task)); err != nil {
		t.Fatal(err)
	}
	for _, c := range conns {
		if _, err := e.store.AddConnection(ctx, user, c); err != nil {
			t.Fatal(err)
		}
	}
	return l
}

func (e *env) send(t *testing.T, caller string, req connrelay.Request) events.LambdaFunctionURLResponse {
	t.Helper()
	b, _ := json.Marshal(req)
	ev := events.LambdaFunctionURLRequest{RawPath: connrelay.PathBatch, Body: string(b)}
	ev.RequestContext.HTTP.Method = http.MethodPost
	if caller != "" {
		ev.RequestContext.Authorizer = &events.LambdaFunctionURLRequestContextAuthorizerDescription{
			IAM: &events.LambdaFunctionURLRequestContextAuthorizerIAMDescription{UserARN: caller},
		}
	}
	resp, err := e.h.Handle(context.Background(), ev)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// results sends req and returns the statuses of its operations, failing unless the
// batch was answered.
func (e *env) results(t *testing.T, caller string, req connrelay.Request) []int {
	t.Helper()
	resp := e.send(t, caller, req)
	var out connrelay.Response
	if err := json.Unmarshal([]byte(resp.Body), &out); err != nil || resp.StatusCode != http.StatusOK || len(out.Results) != len(req.Ops) {
		t.Fatalf("answer %d %s", resp.StatusCode, resp.Body)
	}
	var st []int
	for _, r := range out.Results {
		st = append(st, r.Status)
	}
	return st
}

func post(conn, data string) connrelay.Operation {
	return connrelay.Operation{Op: connrelay.OpPost, ConnectionID: conn, Data: []byte(data)}
}

func (e *env) refused(t *testing.T, resp events.LambdaFunctionURLResponse, reason string) {
	t.Helper()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("answer %d %s, want 403", resp.StatusCode, resp.Body)
	}
	if len(e.logs.With(t, "reason", reason)) == 0 {
		t.Errorf("no log line with reason %s:\n%s", reason, e.logs.String())
	}
	if calls := e.api.Calls(); len(calls) > 0 {
		t.Errorf("management API called for a refused batch: %v", calls)
	}
}

// The user's recorded task posts to, reads and closes its user's connections, in the
// order asked for each connection.
func TestHandler_Handle_RecordedTask_OwnConnections(t *testing.T) {
	e := newEnv(t)
	e.start(t, "user_alice", taskA, "c1", "c2")
	got := e.results(t, sandboxCaller(taskA), connrelay.Request{UserID: "user_alice", Ops: []connrelay.Operation{
		post("c1", "one"), post("c2", "x"), post("c1", "two"),
		{Op: connrelay.OpGet, ConnectionID: "c2"}, {Op: connrelay.OpDelete, ConnectionID: "c1"},
	}})
	for i, st := range got {
		if st != http.StatusOK {
			t.Errorf("operation %d: %d", i, st)
		}
	}
	var c1 []string
	for _, c := range e.api.Calls() {
		if strings.Contains(c, " c1 ") {
			c1 = append(c1, c)
		}
	}
	if len(c1) != 3 || c1[0] != "post c1 one" || c1[1] != "post c1 two" || c1[2] != "delete c1 " {
		t.Errorf("c1's calls %q, want in the order asked", c1)
	}
}

// A connection of another user, or one never recorded, is answered as gone and never
// reaches the management API; the user's own in the same batch go through.
func TestHandler_Handle_AnotherUsersConnection_NotTouched(t *testing.T) {
	e := newEnv(t)
	e.start(t, "user_alice", taskA, "c1")
	e.start(t, "user_bob", taskB, "bob1")
	got := e.results(t, sandboxCaller(taskA), connrelay.Request{UserID: "user_alice", Ops: []connrelay.Operation{
		post("bob1", "hostile"), {Op: connrelay.OpDelete, ConnectionID: "bob1"}, {Op: connrelay.OpGet, ConnectionID: "bob1"},
		post("nobody", "x"), post("c1", "mine"),
	}})
	if want := []int{410, 410, 410, 410, 200}; !equal(got, want) {
		t.Errorf("statuses %v, want %v", got, want)
	}
	if calls := e.api.Calls(); len(calls) != 1 || calls[0] != "post c1 mine" {
		t.Errorf("management API calls %q", calls)
	}
	if len(e.logs.With(t, "reason", connrelay.ReasonNotOwner)) != 4 {
		t.Errorf("refusals not logged:\n%s", e.logs.String())
	}
	// Bob's records are untouched.
	if _, err := e.store.Connection(context.Background(), "user_bob", "bob1"); err != nil {
		t.Errorf("bob's connection record: %v", err)
	}
}

// A batch is refused whole unless its caller is the user's recorded task with a live
// lease, a session of the sandbox role.
func TestHandler_Handle_NotTheUsersTask_Refused(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.start(t, "user_alice", taskA, "c1")
	bob := e.start(t, "user_bob", taskB, "bob1")
	req := func(user string) connrelay.Request {
		return connrelay.Request{UserID: user, Ops: []connrelay.Operation{post("bob1", "x")}}
	}
	// Task A claiming to act for bob.
	e.refused(t, e.send(t, sandboxCaller(taskA), req("user_bob")), connrelay.ReasonOtherTask)
	e.refused(t, e.send(t, sandboxCaller(taskA), req("user_carol")), connrelay.ReasonNoRecord)
	// Not a sandbox session: the task role's, another role's, none.
	for _, caller := range []string{"arn:aws:sts::" + account + ":assumed-role/sandgate-TaskRole-1ABC/" + taskB,
		"arn:aws:sts::999999999999:assumed-role/" + sandboxRole + "/" + taskB, ""} {
		e.refused(t, e.send(t, caller, req("user_bob")), connrelay.ReasonNotSandbox)
	}
	// Bob's own task, once his sandbox has stopped.
	if err := e.store.Stop(ctx, bob); err != nil {
		t.Fatal(err)
	}
	e.refused(t, e.send(t, sandboxCaller(taskB), req("user_bob")), connrelay.ReasonNotLive)
}

// The warm path reads nothing: both checks are reused, the task's for OwnerTTL, so a
// task replaced by a takeover is refused once it passes.
func TestHandler_Handle_ChecksCached(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.start(t, "user_alice", taskA, "c1")
	req := connrelay.Request{UserID: "user_alice", Ops: []connrelay.Operation{post("c1", "x")}}
	e.results(t, sandboxCaller(taskA), req)
	e.db.Calls.Reset()
	for range 5 {
		e.results(t, sandboxCaller(taskA), req)
	}
	if n := e.db.Calls.Calls("DynamoDB", "GetItem"); n != 0 {
		t.Errorf("%d GetItem calls on the warm path", n)
	}
	// A takeover: the record now names task B.
	e.db.Clock.Advance(state.DefaultStartTTL + time.Second)
	nl, err := e.store.Acquire(ctx, "user_alice")
	if err != nil {
		t.Fatal(err)
	}
	if err := e.store.SetTask(ctx, nl, taskARN(taskB)); err != nil {
		t.Fatal(err)
	}
	e.api.reset()
	e.refused(t, e.send(t, sandboxCaller(taskA), req), connrelay.ReasonOtherTask)
	if got := e.results(t, sandboxCaller(taskB), req); got[0] != http.StatusOK {
		t.Errorf("the new task: %v", got)
	}
}

// A 410 forgets the connection; its record is removed once past its $connect, kept
// while the connection may still be in its handshake.
func TestHandler_Handle_Gone_RemovesOldRecord(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.start(t, "user_alice", taskA, "old")
	e.db.Clock.Advance(connrelay.DefaultConnectGrace + time.Second)
	if _, err := e.store.AddConnection(ctx, "user_alice", "young"); err != nil {
		t.Fatal(err)
	}
	e.api.gone["young"], e.api.gone["old"] = true, true
	got := e.results(t, sandboxCaller(taskA), connrelay.Request{UserID: "user_alice", Ops: []connrelay.Operation{post("young", "x"), post("old", "y")}})
	if !equal(got, []int{410, 410}) {
		t.Fatalf("statuses %v", got)
	}
	if _, err := e.store.Connection(ctx, "user_alice", "old"); err == nil {
		t.Error("the old connection's record was kept")
	}
	if _, err := e.store.Connection(ctx, "user_alice", "young"); err != nil {
		t.Errorf("the young connection's record: %v", err)
	}
	// Forgotten: the next post reads the record again (and finds it gone).
	e.api.gone["old"] = false
	if got := e.results(t, sandboxCaller(taskA), connrelay.Request{UserID: "user_alice", Ops: []connrelay.Operation{post("old", "z")}}); got[0] != http.StatusGone {
		t.Errorf("after removal: %v", got)
	}
}

// Anything that is not a batch of valid operations is refused before any read.
func TestHandler_Handle_BadRequests(t *testing.T) {
	e := newEnv(t)
	e.start(t, "user_alice", taskA, "c1")
	big := make([]connrelay.Operation, connrelay.MaxOps+1)
	for i := range big {
		big[i] = post("c1", "x")
	}
	for _, req := range []connrelay.Request{
		{UserID: "alice", Ops: []connrelay.Operation{post("c1", "x")}},
		{UserID: "user_alice"},
		{UserID: "user_alice", Ops: big},
		{UserID: "user_alice", Ops: []connrelay.Operation{{Op: "scan", ConnectionID: "c1"}}},
		{UserID: "user_alice", Ops: []connrelay.Operation{post("", "x")}},
		{UserID: "user_alice", Ops: []connrelay.Operation{{Op: connrelay.OpGet, ConnectionID: "c1", Data: []byte("x")}}},
		{UserID: "user_alice", Ops: []connrelay.Operation{post("c1", string(make([]byte, connrelay.MaxDataBytes+1)))}},
	} {
		if resp := e.send(t, sandboxCaller(taskA), req); resp.StatusCode != http.StatusBadRequest {
			t.Errorf("%d ops for %q: %d %s", len(req.Ops), req.UserID, resp.StatusCode, resp.Body)
		}
	}
	if calls := e.api.Calls(); len(calls) > 0 {
		t.Errorf("management API calls %v", calls)
	}
}

func equal(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// The sample event (events/relay.json, make invoke) is a sandbox session's batch as
// Lambda delivers it: refused here, since user_alice has no sandbox.
func TestHandler_Handle_SampleEvent(t *testing.T) {
	e := newEnv(t)
	b, err := os.ReadFile("../../events/relay.json")
	if err != nil {
		t.Fatal(err)
	}
	var ev events.LambdaFunctionURLRequest
	if err := json.Unmarshal(b, &ev); err != nil {
		t.Fatal(err)
	}
	e.h.SandboxRole = "sandgate-SandboxRole-1ABCDEFGHIJK"
	resp, err := e.h.Handle(context.Background(), ev)
	if err != nil {
		t.Fatal(err)
	}
	e.refused(t, resp, connrelay.ReasonNoRecord)
}
