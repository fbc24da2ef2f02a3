package prewarm_test

import (
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"

	"github.com/sandgate/sandgate/infra/local"
	"github.com/sandgate/sandgate/infra/local/dynamodblocal"
	"github.com/sandgate/sandgate/infra/local/ecslocal"
	"github.com/sandgate/sandgate/infra/local/testkit"
	"github.com/sandgate/sandgate/internal/auth"
	"github.com/sandgate/sandgate/internal/config"
	"github.com/sandgate/sandgate/internal/ensure"
	"github.com/sandgate/sandgate/internal/logging"
	"github.com/sandgate/sandgate/internal/metrics"
	"github.com/sandgate/sandgate/internal/prewarm"
	"github.com/sandgate/sandgate/internal/state"
)

func TestMain(m *testing.M) { os.Exit(dynamodblocal.RunTests(m)) }

type env struct {
	db     *testkit.DB
	store  *state.Store
	ecs    *testkit.ECS
	logs   *testkit.Logs
	signer *auth.Signer
	h      *prewarm.Handler
}

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{logs: &testkit.Logs{}}
	log := e.logs.Logger()
	e.db = testkit.NewDB(t)
	e.store = e.db.Store()
	e.ecs = testkit.StartECS(t, log, func(s *ecslocal.Server) { s.LaunchDelay = time.Hour })
	v := testkit.DevVerifier(t)
	var err error
	if e.signer, err = auth.NewSigner(local.DevSecret); err != nil {
		t.Fatal(err)
	}
	e.h = &prewarm.Handler{Verifier: v, Metrics: metrics.New(e.logs), Log: log, Now: e.db.Clock.Now,
		Ensurer: &ensure.Ensurer{Store: e.store, Launcher: e.ecs.Launcher(log, e.db.Table, "http://127.0.0.1:1/test"), Log: log, Now: e.db.Clock.Now}}
	return e
}

// post calls the handler as the HTTP API does for POST /prewarm, signed for user (or
// with the raw query q when user is empty), and decodes the JSON answer.
func (e *env) post(t *testing.T, user, q string) (int, map[string]any) {
	t.Helper()
	if user != "" {
		s, err := e.signer.Sign(user)
		if err != nil {
			t.Fatal(err)
		}
		q = s.Query()
	}
	req := events.APIGatewayV2HTTPRequest{RouteKey: "POST /prewarm", RawQueryString: q}
	req.RequestContext.Stage, req.RequestContext.HTTP.Method = testkit.Stage, "POST"
	resp, err := e.h.Handle(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if json.Unmarshal([]byte(resp.Body), &m) != nil || resp.Headers["Content-Type"] != "application/json" {
		t.Fatalf("answer %+v is not JSON", resp)
	}
	return resp.StatusCode, m
}

// Prewarm starts the sandbox once: later calls see the start under way.
func TestHandler_Handle_StartsOnce(t *testing.T) {
	e := newEnv(t)
	for i := range 3 {
		code, body := e.post(t, "user_a", "")
		if code != 202 || body["userId"] != "user_a" || body["state"] != "STARTING" || body["ready"] != false || body["since"] == nil {
			t.Fatalf("call %d: %d %v", i, code, body)
		}
	}
	if len(e.ecs.RunTasks()) != 1 {
		t.Fatalf("%d RunTask calls", len(e.ecs.RunTasks()))
	}
}

func TestHandler_Handle_Refusals(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.store.MaxSandboxes = 1
	if _, err := e.store.Acquire(ctx, "user_b"); err != nil {
		t.Fatal(err)
	}
	code, body := e.post(t, "user_a", "")
	if code != 503 || body["error"] != "capacity" || len(body) != 1 {
		t.Fatalf("capacity: %d %v", code, body)
	}
	if m := e.logs.With(t, metrics.CapacityRefusals, 1.0); len(m) != 1 || m[0]["Stage"] != testkit.Stage {
		t.Fatalf("metric %v", m)
	}
	if _, err := e.store.AcquirePurge(ctx, "user_c"); err != nil {
		t.Fatal(err)
	}
	if code, body = e.post(t, "user_c", ""); code != 503 || body["error"] != "purging" {
		t.Fatalf("purging: %d %v", code, body)
	}
	e.store.MaxSandboxes = 10
	e.ecs.Server.FailRunTask(ecslocal.ClientException, -1)
	if code, body = e.post(t, "user_d", ""); code != 503 || body["error"] != "start_failed" {
		t.Fatalf("start failed: %d %v", code, body)
	}
	if m := e.logs.With(t, metrics.StartFailures, 1.0); len(m) != 1 {
		t.Fatalf("metric %v", m)
	}
}

// A bad signature is a bare 401, logged with its reason, and starts nothing.
// (httproute's tests cover every way a signature is bad.)
func TestHandler_Handle_Unauthorized(t *testing.T) {
	e := newEnv(t)
	signed, err := e.signer.Sign("user_a")
	if err != nil {
		t.Fatal(err)
	}
	for name, q := range map[string]string{
		"no query":     "",
		"other user":   strings.Replace(signed.Query(), "user_a", "user_b", 1),
		"duplicate id": "userId=user_b&" + signed.Query(),
	} {
		code, body := e.post(t, "", q)
		if code != 401 || len(body) != 1 || body["error"] != "unauthorized" {
			t.Errorf("%s: %d %v", name, code, body)
		}
	}
	if n := len(e.logs.With(t, logging.Route, "POST /prewarm")); n != 3 {
		t.Fatalf("%d refusals logged, want 3", n)
	}
	if len(e.ecs.RunTasks()) != 0 || len(e.db.Items(t)) != 0 {
		t.Fatal("a refused request changed something")
	}
}

// Called with another method (the HTTP API routes only POST here), the handler answers
// 405 before looking at the signature.
func TestHandler_Handle_WrongMethod(t *testing.T) {
	e := newEnv(t)
	s, err := e.signer.Sign("user_a")
	if err != nil {
		t.Fatal(err)
	}
	var req events.APIGatewayV2HTTPRequest
	req.RawQueryString = s.Query()
	req.RequestContext.HTTP.Method = "GET"
	if resp, err := e.h.Handle(context.Background(), req); err != nil || resp.StatusCode != 405 || resp.Headers["Allow"] != "POST" {
		t.Fatalf("prewarm: %+v, %v", resp, err)
	}
	if len(e.ecs.RunTasks()) != 0 {
		t.Fatal("started")
	}
}

func TestLoadConfig_Environment(t *testing.T) {
	m := map[string]string{
		"TABLE_NAME": "t", "SIGNING_SECRET_ID": "sandgate/signing-secrets", "ECS_CLUSTER": "c", "TASK_DEFINITION": "td",
		"SANDBOX_CONTAINER": "agent", "SUBNET_IDS": "subnet-1", "BUCKET": "b", "MANAGEMENT_ENDPOINT": "https://x/prod",
	}
	env := config.New(config.Map(m))
	c := prewarm.LoadConfig(env)
	if err := env.Err(); err != nil || c.Sandbox.Table != "t" || c.Auth.SecretID != "sandgate/signing-secrets" {
		t.Fatalf("%+v, %v", c, err)
	}
	read := map[string]bool{}
	for _, n := range env.Names() {
		read[n] = true
	}
	for _, n := range prewarm.Optional {
		if !read[n] {
			t.Errorf("optional %s not read", n)
		}
	}
	delete(m, "SIGNING_SECRET_ID")
	env = config.New(config.Map(m))
	prewarm.LoadConfig(env)
	if env.Err() == nil {
		t.Fatal("prewarm without its signing secret's id accepted")
	}
}
