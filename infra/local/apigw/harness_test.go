package apigw_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/apigatewaymanagementapi"
	"github.com/coder/websocket"

	"github.com/sandgate/sandgate/infra/local/apigw"
	"github.com/sandgate/sandgate/infra/local/identity"
	"github.com/sandgate/sandgate/infra/local/lambdart"
	"github.com/sandgate/sandgate/infra/local/template"
	"github.com/sandgate/sandgate/infra/local/testkit"
	"github.com/sandgate/sandgate/internal/awsconf"
)

// Binaries built once for the package: the fixture playing every function of
// testdata/template.yaml, and the project's real authorizer.
var fixture, authorizeBin string

func TestMain(m *testing.M) {
	os.Exit(testkit.RunWithPrograms(m, map[*string]string{&fixture: "./testdata/fixture", &authorizeBin: "../../../functions/authorize"}))
}

type stack struct {
	srv    *apigw.Server
	rt     *lambdart.Runtime
	events string        // EVENT_DIR
	logs   *testkit.Logs // the gateway's and the runtime's
	out    *testkit.Logs // the functions' output
	mgmt   *apigatewaymanagementapi.Client
	// auth verifies every management API request; clock is its clock. creds is a
	// session of the role "gateway" (ManageConnections on the stage's connections),
	// which mgmt and the functions sign with.
	auth  *identity.Authority
	clock *testkit.Clock
	creds identity.Credentials
}

const (
	account = "000000000000"
	region  = "us-east-1"
	// apiID is the WebSocket API's id, which the roles' policies name.
	apiID = "sandgate01"
)

// Roles of the test Authority: gateway may manage the stage's connections, poster
// only post to them, stranger nothing.
var testRoles = []identity.Role{
	{Name: "gateway", Policies: []identity.Policy{{Name: "gateway/manage", Document: json.RawMessage(
		`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"execute-api:ManageConnections","Resource":"arn:aws:execute-api:` + region + `:` + account + `:` + apiID + `/test/*/@connections/*"}]}`)}}},
	{Name: "poster", Policies: []identity.Policy{{Name: "poster/post", Document: json.RawMessage(
		`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"execute-api:ManageConnections","Resource":"arn:aws:execute-api:` + region + `:` + account + `:` + apiID + `/test/POST/@connections/*"}]}`)}}},
	{Name: "stranger"},
}

// session issues a session of role.
func (st *stack) session(t *testing.T, role string) identity.Credentials {
	t.Helper()
	c, _, err := st.auth.Issue(identity.SessionSpec{RoleARN: st.auth.RoleARN(role), SessionName: role + "-session"})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

type option func(*apigw.Server, map[string]lambdart.Function)

// newStack runs testdata/template.yaml: the real runtime with the fixture bootstrap
// behind the gateway, everything on loopback, torn down (and checked) at cleanup.
func newStack(t *testing.T, opts ...option) *stack {
	t.Helper()
	tpl, err := template.Load("testdata/template.yaml", template.Options{Resolver: template.MapResolver{
		Refs: map[string]string{"Table": "fixture-table", "AWS::Region": "us-east-1"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := apigw.FromTemplate(tpl)
	if err != nil {
		t.Fatal(err)
	}
	cfg.WebSocket.APIID = apiID
	st := &stack{events: t.TempDir(), logs: &testkit.Logs{}, out: &testkit.Logs{},
		auth: identity.New(account, region), clock: testkit.NewClock()}
	st.auth.Now = st.clock.Now
	for _, r := range testRoles {
		if _, err := st.auth.AddRole(r); err != nil {
			t.Fatal(err)
		}
	}
	st.creds = st.session(t, "gateway")
	log := st.logs.Logger()
	st.rt = lambdart.New(log, st.out)
	st.rt.Env = st.creds.Env()
	st.srv = apigw.New(cfg, st.rt, log)
	st.srv.Authority = st.auth
	fns := map[string]lambdart.Function{}
	for id, fn := range tpl.Functions {
		fns[id] = lambdart.Function{Name: id, Path: fixture, Timeout: fn.Timeout, MemoryMB: fn.MemorySize, Env: fn.Environment, MaxConcurrency: 4}
	}
	for _, o := range opts {
		o(st.srv, fns)
	}
	if err := st.srv.Start(); err != nil {
		t.Fatal(err)
	}
	for _, fn := range fns {
		env := map[string]string{"EVENT_DIR": st.events, "MGMT_ENDPOINT": st.srv.ManagementEndpoint()}
		for k, v := range fn.Env {
			env[k] = v
		}
		fn.Env = env
		if err := st.rt.Add(fn); err != nil {
			t.Fatal(err)
		}
	}
	st.mgmt = st.client(t, st.srv.ManagementEndpoint(), st.creds)
	t.Cleanup(func() {
		st.srv.Close()
		st.rt.Close()
		for _, pid := range st.pids(t) {
			if syscall.Kill(pid, 0) == nil {
				t.Errorf("function process %d survived shutdown", pid)
			}
		}
		if t.Failed() {
			t.Logf("gateway and runtime logs:\n%s\nfunction output:\n%s", st.logs.String(), st.out.String())
		}
	})
	return st
}

// client is a management API client of endpoint signing with c (unsigned when c
// has no key).
func (st *stack) client(t *testing.T, endpoint string, c identity.Credentials) *apigatewaymanagementapi.Client {
	t.Helper()
	opts := awsconf.Loopback(endpoint)
	cfg, err := awsconf.Load(context.Background(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Region = region
	cfg.Credentials = aws.AnonymousCredentials{}
	if c.AccessKeyID != "" {
		cfg.Credentials = credentials.NewStaticCredentialsProvider(c.AccessKeyID, c.SecretAccessKey, c.SessionToken)
	}
	return apigatewaymanagementapi.NewFromConfig(cfg, func(o *apigatewaymanagementapi.Options) {
		o.RetryMaxAttempts = 1
	})
}

// pids returns the process ids recorded in event file names.
func (st *stack) pids(t *testing.T) []int {
	entries, _ := os.ReadDir(st.events)
	seen := map[int]bool{}
	var out []int
	for _, e := range entries {
		parts := strings.Split(e.Name(), ".")
		if len(parts) < 5 {
			continue
		}
		var pid int
		if _, err := fmt.Sscan(parts[len(parts)-2], &pid); err == nil && !seen[pid] {
			seen[pid] = true
			out = append(out, pid)
		}
	}
	return out
}

// eventsOf returns the raw events fn recorded, oldest first, optionally for one
// connection.
func (st *stack) eventsOf(fn, connID string) []map[string]any {
	entries, _ := os.ReadDir(st.events)
	var out []map[string]any
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), fn+".") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(st.events, e.Name()))
		if err != nil {
			continue
		}
		var m map[string]any
		if json.Unmarshal(b, &m) != nil {
			continue
		}
		if rc, _ := m["requestContext"].(map[string]any); connID == "" || rc["connectionId"] == connID {
			out = append(out, m)
		}
	}
	return out
}

// waitEvent waits for fn's first event for connID.
func (st *stack) waitEvent(t *testing.T, fn, connID string) map[string]any {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if evs := st.eventsOf(fn, connID); len(evs) > 0 {
			return evs[0]
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no %s event for connection %s", fn, connID)
	return nil
}

func (st *stack) dial(t *testing.T, query string) (*websocket.Conn, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, st.srv.WebSocketURL()+"?"+query, nil)
	if err != nil {
		if resp != nil {
			return nil, &dialError{status: resp.StatusCode, err: err}
		}
		return nil, err
	}
	c.SetReadLimit(1 << 20)
	t.Cleanup(func() { c.CloseNow() })
	return c, nil
}

type dialError struct {
	status int
	err    error
}

func (e *dialError) Error() string { return fmt.Sprintf("handshake %d: %v", e.status, e.err) }

// connect dials and learns the connection id by sending one $default message, which
// the fixture posts back as its event.
func (st *stack) connect(t *testing.T, query string) (*websocket.Conn, string) {
	t.Helper()
	c, err := st.dial(t, query)
	if err != nil {
		t.Fatal(err)
	}
	ev := sendAndRead(t, c, "hello")
	return c, ev["requestContext"].(map[string]any)["connectionId"].(string)
}

func sendAndRead(t *testing.T, c *websocket.Conn, msg string) map[string]any {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
		t.Fatal(err)
	}
	return readJSON(t, c)
}

func readJSON(t *testing.T, c *websocket.Conn) map[string]any {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, b, err := c.Read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("frame is not JSON: %v: %s", err, b)
	}
	return m
}

// closeStatus reads until the server closes and returns the close code and reason.
func closeStatus(t *testing.T, c *websocket.Conn) (websocket.StatusCode, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for {
		_, _, err := c.Read(ctx)
		if err != nil {
			var ce websocket.CloseError
			if errorsAs(err, &ce) {
				return ce.Code, ce.Reason
			}
			t.Fatalf("connection ended without a close frame: %v", err)
		}
	}
}
