package status_test

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
	"github.com/sandgate/sandgate/infra/local/testkit"
	"github.com/sandgate/sandgate/internal/auth"
	"github.com/sandgate/sandgate/internal/config"
	"github.com/sandgate/sandgate/internal/logging"
	"github.com/sandgate/sandgate/internal/state"
	"github.com/sandgate/sandgate/internal/status"
)

func TestMain(m *testing.M) { os.Exit(dynamodblocal.RunTests(m)) }

type env struct {
	db     *testkit.DB
	store  *state.Store
	logs   *testkit.Logs
	signer *auth.Signer
	h      *status.Handler
}

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{logs: &testkit.Logs{}}
	e.db = testkit.NewDB(t)
	e.store = e.db.Store()
	v := testkit.DevVerifier(t)
	var err error
	if e.signer, err = auth.NewSigner(local.DevSecret); err != nil {
		t.Fatal(err)
	}
	e.h = &status.Handler{Verifier: v, Store: e.store, Log: e.logs.Logger(), Now: e.db.Clock.Now}
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

// get calls the handler as the HTTP API does for GET /status?rawQuery and decodes the
// JSON answer.
func (e *env) get(t *testing.T, rawQuery string) (int, map[string]any) {
	t.Helper()
	var req events.APIGatewayV2HTTPRequest
	req.RouteKey, req.RawQueryString, req.RequestContext.HTTP.Method = "GET /status", rawQuery, "GET"
	resp, err := e.h.Handle(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(resp.Body), &m); err != nil || resp.Headers["Content-Type"] != "application/json" {
		t.Fatalf("%d %q (%v) is not JSON", resp.StatusCode, resp.Body, resp.Headers)
	}
	return resp.StatusCode, m
}

func TestHandler_Handle_NoSandboxStartsNothing(t *testing.T) {
	e := newEnv(t)
	code, body := e.get(t, e.query(t, "user_a"))
	if code != 200 || body["userId"] != "user_a" || body["state"] != "STOPPED" || body["ready"] != false || body["queued"] != 0.0 {
		t.Fatalf("%d %v", code, body)
	}
	if _, ok := body["since"]; ok {
		t.Fatalf("since without a sandbox: %v", body)
	}
	if e.db.Writes() != 0 || len(e.db.Items(t)) != 0 {
		t.Fatalf("status wrote %d times", e.db.Writes())
	}
}

// A starting sandbox with frames waiting: its state, since when, and how many wait,
// with two reads and no write.
func TestHandler_Handle_StartingWithQueuedFrames(t *testing.T) {
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
	code, body := e.get(t, e.query(t, "user_a"))
	since, _ := time.Parse(time.RFC3339Nano, body["since"].(string))
	if code != 200 || body["state"] != "STARTING" || body["ready"] != false || body["queued"] != 2.0 || !since.Equal(e.db.Clock.Now()) {
		t.Fatalf("%d %v", code, body)
	}
	if e.db.Calls.Calls("DynamoDB", "GetItem") != 2 || e.db.Calls.Calls("DynamoDB", "") != 2 {
		t.Fatalf("calls %+v", e.db.Calls.Snapshot())
	}
}

// Ready while the lease lives; a dead holder reads as STOPPED.
func TestHandler_Handle_RunningThenDead(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	l, err := e.store.Acquire(ctx, "user_a")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.store.MarkReady(ctx, l, "http://127.0.0.1:9", "gw-secret-token"); err != nil {
		t.Fatal(err)
	}
	code, body := e.get(t, e.query(t, "user_a"))
	if code != 200 || body["state"] != "RUNNING" || body["ready"] != true {
		t.Fatalf("%d %v", code, body)
	}
	e.db.Clock.Advance(state.DefaultLeaseTTL)
	if code, body = e.get(t, e.query(t, "user_a")); code != 200 || body["state"] != "STOPPED" || body["ready"] != false {
		t.Fatalf("dead: %d %v", code, body)
	}
	if strings.Contains(e.logs.String(), "gw-secret-token") {
		t.Fatal("the gateway token reached the log")
	}
}

// The caller sees only the signed user's sandbox, whatever else the request names.
func TestHandler_Handle_OnlyTheSignedUser(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	l, err := e.store.Acquire(ctx, "user_b")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.store.MarkReady(ctx, l, "http://127.0.0.1:9", "gw"); err != nil {
		t.Fatal(err)
	}
	code, body := e.get(t, e.query(t, "user_a")+"&user=user_b&userid=user_b")
	if code != 200 || body["userId"] != "user_a" || body["state"] != "STOPPED" {
		t.Fatalf("%d %v", code, body)
	}
}

// A bad signature is a bare 401, logged with its reason, before anything is read.
// (httproute's tests cover every way a signature is bad.)
func TestHandler_Handle_Unauthorized(t *testing.T) {
	e := newEnv(t)
	good := e.query(t, "user_a")
	for name, q := range map[string]string{
		"no query":      "",
		"other user":    strings.Replace(good, "user_a", "user_b", 1),
		"duplicate sig": good + "&" + good[strings.Index(good, "sig="):],
	} {
		code, body := e.get(t, q)
		if code != 401 || len(body) != 1 || body["error"] != "unauthorized" {
			t.Errorf("%s: %d %v", name, code, body)
		}
	}
	if n := len(e.logs.With(t, logging.Route, "GET /status")); n != 3 {
		t.Fatalf("%d refusals logged, want 3", n)
	}
	if n := e.db.Calls.Calls("DynamoDB", ""); n != 0 {
		t.Fatalf("a refused request made %d DynamoDB calls", n)
	}
}

// Called with another method (the HTTP API routes only GET here), the handler answers
// 405 before looking at the signature.
func TestHandler_Handle_WrongMethod(t *testing.T) {
	e := newEnv(t)
	var req events.APIGatewayV2HTTPRequest
	req.RawQueryString = e.query(t, "user_a")
	req.RequestContext.HTTP.Method = "POST"
	if resp, err := e.h.Handle(context.Background(), req); err != nil || resp.StatusCode != 405 || resp.Headers["Allow"] != "GET" {
		t.Fatalf("status: %+v, %v", resp, err)
	}
	if n := e.db.Calls.Calls("DynamoDB", ""); n != 0 {
		t.Fatalf("%d DynamoDB calls", n)
	}
}

func TestLoadConfig_Environment(t *testing.T) {
	env := config.New(config.Map(map[string]string{"TABLE_NAME": "t", "SIGNING_SECRET_ID": "sandgate/signing-secrets"}))
	c := status.LoadConfig(env)
	if err := env.Err(); err != nil || c.Table != "t" || c.Auth.SecretID != "sandgate/signing-secrets" {
		t.Fatalf("%+v, %v", c, err)
	}
	read := map[string]bool{}
	for _, n := range env.Names() {
		read[n] = true
	}
	for _, n := range status.Optional {
		if !read[n] {
			t.Errorf("optional %s not read", n)
		}
	}
	env = config.New(config.Map(map[string]string{}))
	status.LoadConfig(env)
	if err := env.Err(); err == nil || !strings.Contains(err.Error(), "TABLE_NAME") || !strings.Contains(err.Error(), "SIGNING_SECRET_ID") {
		t.Fatalf("err = %v", err)
	}
}

// The receipt of the user's last completed sync is answered while the sandbox runs
// and after it stopped; before the first sync there is none.
func TestHandler_Handle_Receipt(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	const user = "user_receipt"
	l, err := e.store.Acquire(ctx, user)
	if err != nil {
		t.Fatal(err)
	}
	if _, body := e.get(t, e.query(t, user)); body["receipt"] != nil {
		t.Fatalf("a receipt before any sync: %v", body)
	}
	at := time.Date(2026, 12, 6, 9, 0, 1, 250e6, time.UTC)
	if err := e.store.RecordSync(ctx, l, state.SyncReceipt{Time: at, Generation: l.Generation, Files: 2, Bytes: 300, Digest: "ab12"}); err != nil {
		t.Fatal(err)
	}
	if err := e.store.Stop(ctx, l); err != nil {
		t.Fatal(err)
	}
	_, body := e.get(t, e.query(t, user))
	r, _ := body["receipt"].(map[string]any)
	if body["state"] != "STOPPED" || r["time"] != "2026-12-06T09:00:01.25Z" || r["generation"] != float64(l.Generation) ||
		r["files"] != 2.0 || r["bytes"] != 300.0 || r["digest"] != "ab12" {
		t.Fatalf("status %v", body)
	}
}
