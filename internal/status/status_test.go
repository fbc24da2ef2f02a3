package status_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"

	"github.com/sandgate/sandgate/infra/local"
	"github.com/sandgate/sandgate/infra/local/apigw"
	"github.com/sandgate/sandgate/infra/local/dynamodblocal"
	"github.com/sandgate/sandgate/infra/local/ecslocal"
	"github.com/sandgate/sandgate/infra/local/testkit"
	"github.com/sandgate/sandgate/internal/auth"
	"github.com/sandgate/sandgate/internal/authorizer"
	"github.com/sandgate/sandgate/internal/config"
	"github.com/sandgate/sandgate/internal/ensure"
	"github.com/sandgate/sandgate/internal/metrics"
	"github.com/sandgate/sandgate/internal/state"
	"github.com/sandgate/sandgate/internal/status"
)

func TestMain(m *testing.M) { os.Exit(dynamodblocal.RunTests(m)) }

type env struct {
	db      *testkit.DB
	store   *state.Store
	ecs     *testkit.ECS
	logs    *testkit.Logs
	base    string // the HTTP API's stage URL
	signer  *auth.Signer
	status  *status.StatusHandler
	prewarm *status.PrewarmHandler
}

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{logs: &testkit.Logs{}}
	log := e.logs.Logger()
	e.db = testkit.NewDB(t)
	e.store = e.db.Store()
	e.ecs = testkit.StartECS(t, log, func(s *ecslocal.Server) { s.LaunchDelay = time.Hour })
	acfg := authorizer.LoadConfig(config.New(config.Map(map[string]string{authorizer.EnvSigningSecrets: local.DevSecret})))
	v, err := acfg.NewVerifier()
	if err != nil {
		t.Fatal(err)
	}
	if e.signer, err = auth.NewSigner(local.DevSecret); err != nil {
		t.Fatal(err)
	}
	e.status = &status.StatusHandler{Verifier: v, Store: e.store, Log: log, Now: e.db.Clock.Now}
	e.prewarm = &status.PrewarmHandler{Verifier: v, Metrics: metrics.New(e.logs), Log: log, Now: e.db.Clock.Now,
		Ensurer: &ensure.Ensurer{Store: e.store, Launcher: e.ecs.Launcher(log, e.db.Table, "http://127.0.0.1:1/test"), Log: log, Now: e.db.Clock.Now}}
	gw := apigw.New(apigw.Config{HTTP: &apigw.HTTPAPI{Stage: testkit.Stage, Routes: []apigw.HTTPRoute{
		{Method: "GET", Path: "/status", Function: "status"}, {Method: "POST", Path: "/prewarm", Function: "prewarm"},
	}}}, testkit.Funcs{
		"status":  testkit.Handler(e.status.Handle),
		"prewarm": testkit.Handler(e.prewarm.Handle),
	}, log)
	if err := gw.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { gw.Close() })
	e.base = gw.HTTPURL()
	return e
}

func (e *env) query(t *testing.T, user string) string {
	t.Helper()
	s, err := e.signer.Sign(user)
	if err != nil {
		t.Fatal(err)
	}
	return s.Query()
}

// call makes one request and decodes the JSON answer.
func (e *env) call(t *testing.T, method, path, rawQuery string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(method, e.base+path+"?"+rawQuery, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("%s %s: %d %q is not JSON", method, path, resp.StatusCode, b)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("content type %q", ct)
	}
	return resp.StatusCode, m
}

func TestStatusHandler_Handle_NoSandboxStartsNothing(t *testing.T) {
	e := newEnv(t)
	code, body := e.call(t, "GET", "/status", e.query(t, "user_a"))
	if code != 200 || body["userId"] != "user_a" || body["state"] != "STOPPED" || body["ready"] != false || body["queued"] != 0.0 {
		t.Fatalf("%d %v", code, body)
	}
	if _, ok := body["since"]; ok {
		t.Fatalf("since without a sandbox: %v", body)
	}
	if e.db.Writes() != 0 || len(e.ecs.RunTasks()) != 0 || len(e.db.Items(t)) != 0 {
		t.Fatalf("status wrote %d times, ran %d tasks", e.db.Writes(), len(e.ecs.RunTasks()))
	}
}

// A starting sandbox with frames waiting: its state, since when, and how many wait,
// with two reads and no write.
func TestStatusHandler_Handle_StartingWithQueuedFrames(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	if _, err := e.store.Acquire(ctx, "user_a"); err != nil {
		t.Fatal(err)
	}
	for _, m := range []string{"a", "b"} {
		if _, err := e.store.Enqueue(ctx, "user_a", "c1", []byte(m)); err != nil {
			t.Fatal(err)
		}
	}
	e.db.Calls.Reset()
	code, body := e.call(t, "GET", "/status", e.query(t, "user_a"))
	since, _ := time.Parse(time.RFC3339Nano, body["since"].(string))
	if code != 200 || body["state"] != "STARTING" || body["ready"] != false || body["queued"] != 2.0 || !since.Equal(e.db.Clock.Now()) {
		t.Fatalf("%d %v", code, body)
	}
	if e.db.Calls.Calls("DynamoDB", "GetItem") != 2 || e.db.Calls.Calls("DynamoDB", "") != 2 {
		t.Fatalf("calls %+v", e.db.Calls.Snapshot())
	}
}

// Ready while the lease lives; a dead holder reads as STOPPED.
func TestStatusHandler_Handle_RunningThenDead(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	l, err := e.store.Acquire(ctx, "user_a")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.store.MarkReady(ctx, l, "http://127.0.0.1:9", "gw-secret-token"); err != nil {
		t.Fatal(err)
	}
	code, body := e.call(t, "GET", "/status", e.query(t, "user_a"))
	if code != 200 || body["state"] != "RUNNING" || body["ready"] != true {
		t.Fatalf("%d %v", code, body)
	}
	e.db.Clock.Advance(state.DefaultLeaseTTL)
	if code, body = e.call(t, "GET", "/status", e.query(t, "user_a")); code != 200 || body["state"] != "STOPPED" || body["ready"] != false {
		t.Fatalf("dead: %d %v", code, body)
	}
	if strings.Contains(e.logs.String(), "gw-secret-token") {
		t.Fatal("the gateway token reached the log")
	}
}

// The caller sees only the signed user's sandbox, whatever else the request names.
func TestStatusHandler_Handle_OnlyTheSignedUser(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	l, err := e.store.Acquire(ctx, "user_b")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.store.MarkReady(ctx, l, "http://127.0.0.1:9", "gw"); err != nil {
		t.Fatal(err)
	}
	code, body := e.call(t, "GET", "/status", e.query(t, "user_a")+"&user=user_b&userid=user_b")
	if code != 200 || body["userId"] != "user_a" || body["state"] != "STOPPED" {
		t.Fatalf("%d %v", code, body)
	}
}

// Every bad signature is a bare 401 from both functions; the log says why but never
// carries the signature.
func TestStatusHandler_Handle_Unauthorized(t *testing.T) {
	e := newEnv(t)
	good, err := e.signer.Sign("user_a")
	if err != nil {
		t.Fatal(err)
	}
	other, err := auth.NewSigner(strings.Repeat("x", auth.MinSecretBytes))
	if err != nil {
		t.Fatal(err)
	}
	forged, _ := other.Sign("user_a")
	old := *e.signer
	old.Now = func() time.Time { return time.Now().Add(-time.Hour) }
	expired, _ := old.Sign("user_a")
	cases := map[string]string{
		"no query":      "",
		"forged":        forged.Query(),
		"expired":       expired.Query(),
		"other user":    strings.Replace(good.Query(), "user_a", "user_b", 1),
		"duplicate id":  "userId=user_b&" + good.Query(),
		"duplicate sig": good.Query() + "&sig=" + good.Sig,
		"bad encoding":  good.Query() + "&%zz",
		"missing sig":   strings.Split(good.Query(), "&sig=")[0],
	}
	for name, q := range cases {
		for _, r := range []struct{ method, path string }{{"GET", "/status"}, {"POST", "/prewarm"}} {
			code, body := e.call(t, r.method, r.path, q)
			if code != 401 || len(body) != 1 || body["error"] != "unauthorized" {
				t.Errorf("%s %s: %d %v", name, r.path, code, body)
			}
		}
	}
	logs := e.logs.String()
	if strings.Contains(logs, good.Sig) || strings.Contains(logs, forged.Sig) {
		t.Fatal("a signature reached the log")
	}
	if n := len(e.logs.With(t, "msg", "request refused")); n != 2*len(cases) {
		t.Fatalf("%d refusals logged, want %d", n, 2*len(cases))
	}
	if len(e.ecs.RunTasks()) != 0 || len(e.db.Items(t)) != 0 {
		t.Fatal("a refused request changed something")
	}
}

// Prewarm starts the sandbox once: later calls see the start under way.
func TestPrewarmHandler_Handle_StartsOnce(t *testing.T) {
	e := newEnv(t)
	for i := range 3 {
		code, body := e.call(t, "POST", "/prewarm", e.query(t, "user_a"))
		if code != 202 || body["userId"] != "user_a" || body["state"] != "STARTING" || body["ready"] != false || body["since"] == nil {
			t.Fatalf("call %d: %d %v", i, code, body)
		}
	}
	if len(e.ecs.RunTasks()) != 1 {
		t.Fatalf("%d RunTask calls", len(e.ecs.RunTasks()))
	}
}

func TestPrewarmHandler_Handle_Refusals(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.store.MaxSandboxes = 1
	if _, err := e.store.Acquire(ctx, "user_b"); err != nil {
		t.Fatal(err)
	}
	code, body := e.call(t, "POST", "/prewarm", e.query(t, "user_a"))
	if code != 503 || body["error"] != "capacity" || len(body) != 1 {
		t.Fatalf("capacity: %d %v", code, body)
	}
	if m := e.logs.With(t, metrics.CapacityRefusals, 1.0); len(m) != 1 || m[0]["Stage"] != testkit.Stage {
		t.Fatalf("metric %v", m)
	}
	if _, err := e.store.AcquirePurge(ctx, "user_c"); err != nil {
		t.Fatal(err)
	}
	if code, body = e.call(t, "POST", "/prewarm", e.query(t, "user_c")); code != 503 || body["error"] != "purging" {
		t.Fatalf("purging: %d %v", code, body)
	}
	e.store.MaxSandboxes = 10
	e.ecs.Server.FailRunTask(ecslocal.ClientException, -1)
	if code, body = e.call(t, "POST", "/prewarm", e.query(t, "user_d")); code != 503 || body["error"] != "start_failed" {
		t.Fatalf("start failed: %d %v", code, body)
	}
	if m := e.logs.With(t, metrics.StartFailures, 1.0); len(m) != 1 {
		t.Fatalf("metric %v", m)
	}
}

// Called with the wrong method (the HTTP API routes only GET and POST here), each
// handler answers 405 before looking at the signature.
func TestStatusHandler_Handle_WrongMethod(t *testing.T) {
	e := newEnv(t)
	q := e.query(t, "user_a")
	req := func(method string) events.APIGatewayV2HTTPRequest {
		var r events.APIGatewayV2HTTPRequest
		r.RawQueryString = q
		r.RequestContext.HTTP.Method = method
		return r
	}
	if resp, err := e.status.Handle(context.Background(), req("POST")); err != nil || resp.StatusCode != 405 || resp.Headers["Allow"] != "GET" {
		t.Fatalf("status: %+v, %v", resp, err)
	}
	if resp, err := e.prewarm.Handle(context.Background(), req("GET")); err != nil || resp.StatusCode != 405 || resp.Headers["Allow"] != "POST" {
		t.Fatalf("prewarm: %+v, %v", resp, err)
	}
	if len(e.ecs.RunTasks()) != 0 {
		t.Fatal("started")
	}
}

func TestLoadStatusConfig_Environment(t *testing.T) {
	env := config.New(config.Map(map[string]string{"TABLE_NAME": "t", "SIGNING_SECRETS": local.DevSecret}))
	c := status.LoadStatusConfig(env)
	if err := env.Err(); err != nil || c.Table != "t" || len(c.Auth.Secrets) != 1 {
		t.Fatalf("%+v, %v", c, err)
	}
	read := map[string]bool{}
	for _, n := range env.Names() {
		read[n] = true
	}
	for _, n := range status.StatusOptional {
		if !read[n] {
			t.Errorf("optional %s not read", n)
		}
	}
	env = config.New(config.Map(map[string]string{"SIGNING_SECRETS": "short"}))
	status.LoadStatusConfig(env)
	if err := env.Err(); err == nil || !strings.Contains(err.Error(), "TABLE_NAME") || !strings.Contains(err.Error(), "SIGNING_SECRETS") {
		t.Fatalf("err = %v", err)
	}
}

func TestLoadPrewarmConfig_Environment(t *testing.T) {
	m := map[string]string{
		"TABLE_NAME": "t", "SIGNING_SECRETS": local.DevSecret, "ECS_CLUSTER": "c", "TASK_DEFINITION": "td",
		"SANDBOX_CONTAINER": "agent", "SUBNET_IDS": "subnet-1", "BUCKET": "b", "MANAGEMENT_ENDPOINT": "https://x/prod",
	}
	env := config.New(config.Map(m))
	c := status.LoadPrewarmConfig(env)
	if err := env.Err(); err != nil || c.Sandbox.Table != "t" || len(c.Auth.Secrets) != 1 {
		t.Fatalf("%+v, %v", c, err)
	}
	read := map[string]bool{}
	for _, n := range env.Names() {
		read[n] = true
	}
	for _, n := range status.PrewarmOptional {
		if !read[n] {
			t.Errorf("optional %s not read", n)
		}
	}
	delete(m, "SIGNING_SECRETS")
	env = config.New(config.Map(m))
	status.LoadPrewarmConfig(env)
	if env.Err() == nil {
		t.Fatal("prewarm without secrets accepted")
	}
}
