package lambdart_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sandgate/sandgate/infra/local/iampolicy"
	"github.com/sandgate/sandgate/infra/local/identity"
	"github.com/sandgate/sandgate/infra/local/lambdart"
	"github.com/sandgate/sandgate/infra/local/stslocal"
	"github.com/sandgate/sandgate/infra/local/testkit"
)

const (
	account = "000000000000"
	region  = "us-east-1"
)

// trustLambda and trustECS are trust policies letting the service assume the role.
var (
	trustLambda = json.RawMessage(`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"lambda.amazonaws.com"},"Action":"sts:AssumeRole"}]}`)
	trustECS    = json.RawMessage(`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"ecs-tasks.amazonaws.com"},"Action":"sts:AssumeRole"}]}`)
)

// iamFixture is an Authority on a settable clock, and optionally the real policy
// evaluator, for a test's roles.
type iamFixture struct {
	a      *identity.Authority
	clock  *testkit.Clock
	ev     *iampolicy.Evaluator
	evLogs *testkit.Logs // the evaluator's denial lines
}

func newIAM(t *testing.T, evaluate bool, roles ...identity.Role) *iamFixture {
	t.Helper()
	f := &iamFixture{a: identity.New(account, region), clock: testkit.NewClock(), evLogs: &testkit.Logs{}}
	f.a.Now = f.clock.Now
	for _, r := range roles {
		if _, err := f.a.AddRole(r); err != nil {
			t.Fatal(err)
		}
	}
	if evaluate {
		f.ev = iampolicy.StartForTest(t, iampolicy.Options{Logger: f.evLogs.Logger()})
	}
	return f
}

// policy is an identity policy named name with statements (JSON objects).
func policy(name string, statements ...string) identity.Policy {
	return identity.Policy{Name: name, Document: json.RawMessage(`{"Version":"2012-10-17","Statement":[` + strings.Join(statements, ",") + `]}`)}
}

func allow(actions, resources string) string {
	return `{"Effect":"Allow","Action":` + actions + `,"Resource":` + resources + `}`
}

// issuer is Lambda's session issuer over the fixture's Authority, the trust policy
// decided by the evaluator when there is one.
func (f *iamFixture) issuer() identity.SessionIssuer {
	s := identity.ServiceIssuer{Authority: f.a}
	if f.ev != nil {
		s.Trust = func(ctx context.Context, role *identity.Role, service string) error {
			return f.ev.Trust(ctx, iampolicy.TrustRequest{Role: role, Service: service, Region: region})
		}
	}
	return s
}

// session issues a session of role for a caller of the test.
func (f *iamFixture) session(t *testing.T, role, name string) (identity.Credentials, *identity.Principal) {
	t.Helper()
	c, p, err := f.a.Issue(identity.SessionSpec{RoleARN: f.a.RoleARN(role), SessionName: name})
	if err != nil {
		t.Fatal(err)
	}
	return c, p
}

// expiredSession issues a session of role that expired an hour ago.
func (f *iamFixture) expiredSession(t *testing.T, role string) identity.Credentials {
	t.Helper()
	f.clock.Advance(-2 * time.Hour)
	c, _ := f.session(t, role, "expired")
	f.clock.Advance(2 * time.Hour)
	return c
}

// recordingIssuer remembers when each session it issued expires.
type recordingIssuer struct {
	identity.SessionIssuer
	mu      sync.Mutex
	expires map[string]time.Time
}

func (r *recordingIssuer) IssueForService(ctx context.Context, service, roleARN, name string, d time.Duration) (identity.Credentials, *identity.Principal, error) {
	c, p, err := r.SessionIssuer.IssueForService(ctx, service, roleARN, name, d)
	if err == nil {
		r.mu.Lock()
		r.expires[c.AccessKeyID] = c.Expires
		r.mu.Unlock()
	}
	return c, p, err
}

func (r *recordingIssuer) expiry(key string) (time.Time, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.expires[key]
	return e, ok
}

// clockServer tells the fixture the test clock's time; a request with ?wait=1
// announces itself on arrived and waits for release first.
type clockServer struct {
	clock   *testkit.Clock
	arrived chan struct{}
	release chan struct{}
}

func (c *clockServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Query().Get("wait") != "" {
		c.arrived <- struct{}{}
		<-c.release
	}
	fmt.Fprint(w, c.clock.Now().UnixMilli())
}

// whoHarness runs the function Who under role fixture-role with sessions of 15
// minutes and a credential margin of 5: a process takes invocations for 10 minutes of
// the test clock. Who's whoami calls the STS emulator, judged by that clock.
type whoHarness struct {
	*harness
	iam   *iamFixture
	rec   *recordingIssuer
	clock *clockServer
}

const (
	whoSession = 15 * time.Minute
	whoMargin  = 5 * time.Minute
)

func newWho(t *testing.T) *whoHarness {
	t.Helper()
	iam := newIAM(t, false, identity.Role{Name: "fixture-role", Trust: trustLambda})
	stsSrv := httptest.NewServer(&stslocal.Server{Authority: iam.a})
	t.Cleanup(stsSrv.Close)
	cs := &clockServer{clock: iam.clock, arrived: make(chan struct{}), release: make(chan struct{})}
	clockSrv := httptest.NewServer(cs)
	t.Cleanup(clockSrv.Close)
	rec := &recordingIssuer{SessionIssuer: iam.issuer(), expires: map[string]time.Time{}}
	h := newRuntimeWith(t, func(rt *lambdart.Runtime) {
		rt.Sessions = rec
		rt.Now = iam.clock.Now
		rt.SessionDuration = whoSession
		rt.CredentialMargin = whoMargin
	}, lambdart.Function{Name: "Who", Role: iam.a.RoleARN("fixture-role"), Timeout: 10 * time.Second,
		Env: map[string]string{"FIXTURE_STS_ENDPOINT": stsSrv.URL, "FIXTURE_CLOCK_URL": clockSrv.URL,
			"AWS_ACCESS_KEY_ID": "static", "AWS_SECRET_ACCESS_KEY": "static"}})
	return &whoHarness{harness: h, iam: iam, rec: rec, clock: cs}
}

// whoami invokes Who's whoami and checks that STS accepted the process's session as
// the function's role, with more than the margin left at the test clock's time.
func (w *whoHarness) whoami(t *testing.T, wait bool) response {
	t.Helper()
	r, err := w.invoke(context.Background(), "Who", map[string]any{"op": "whoami", "wait": wait})
	if err != nil {
		t.Fatal(err)
	}
	if r.STSError != "" || r.ARN != "arn:aws:sts::"+account+":assumed-role/fixture-role/Who" {
		t.Fatalf("STS answered %q for key %s (arn %q) at %s", r.STSError, r.KeyID, r.ARN, w.iam.clock.Now())
	}
	if _, ok := w.rec.expiry(r.KeyID); !ok {
		t.Fatalf("the process signed with %q, not a session the runtime issued", r.KeyID)
	}
	return r
}

// waitGone waits for pid to exit.
func waitGone(t *testing.T, pid int) {
	t.Helper()
	for deadline := time.Now().Add(testkit.Wait); alive(pid); {
		if time.Now().After(deadline) {
			t.Fatalf("retired process %d still alive", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Across several expiries of its sessions the function keeps working: an idle
// process whose session is within the margin of expiring is retired and the next
// invocation starts a process with a fresh session; every call to STS is signed with
// a session that has more than the margin left.
func TestRuntime_Sessions_RecycledBeforeExpiry(t *testing.T) {
	w := newWho(t)
	keys := map[string]int{} // key → pid
	var order []string
	for step := range 7 {
		r := w.whoami(t, false)
		exp, _ := w.rec.expiry(r.KeyID)
		if left := exp.Sub(w.iam.clock.Now()); left <= whoMargin {
			t.Fatalf("step %d ran with %s left on its session, within the %s margin", step, left, whoMargin)
		}
		if pid, seen := keys[r.KeyID]; seen && pid != r.Pid {
			t.Fatalf("key %s in two processes", r.KeyID)
		}
		if _, seen := keys[r.KeyID]; !seen {
			keys[r.KeyID] = r.Pid
			order = append(order, r.KeyID)
		}
		// 6 minutes: a session serves two steps (0 and 6 minutes old), not a third
		// (12 minutes old, 3 left); every session expires three steps later.
		w.iam.clock.Advance(6 * time.Minute)
	}
	if len(order) != 4 {
		t.Fatalf("7 steps 6 minutes apart used %d sessions, want 4 (a new one every 2 steps)", len(order))
	}
	for _, k := range order[:len(order)-1] {
		waitGone(t, keys[k])
	}
	lines := w.logs.With(t, "msg", "process retired: its credentials expire")
	if len(lines) != 3 {
		t.Fatalf("%d retirements logged, want 3:\n%s", len(lines), w.logs.String())
	}
}

// A process whose session comes within the margin during an invocation finishes it,
// with credentials still valid, then exits; the next invocation gets a new process
// and session. The function's own AWS_* keys never override the session's.
func TestRuntime_Sessions_InFlightInvocationFinishes(t *testing.T) {
	w := newWho(t)
	first := w.whoami(t, false)
	if first.KeyID == "static" {
		t.Fatal("the function's own AWS_ACCESS_KEY_ID overrode the session's")
	}
	done := make(chan response, 1)
	go func() {
		r, err := w.invoke(context.Background(), "Who", map[string]any{"op": "whoami", "wait": true})
		if err != nil {
			t.Error(err)
		}
		done <- r
	}()
	<-w.clock.arrived // the invocation is in flight
	w.iam.clock.Advance(whoSession - whoMargin + time.Minute)
	close(w.clock.release)
	r := <-done
	if r.KeyID != first.KeyID || r.Pid != first.Pid || r.STSError != "" {
		t.Fatalf("in-flight invocation: key %s pid %d sts %q; want key %s pid %d, accepted", r.KeyID, r.Pid, r.STSError, first.KeyID, first.Pid)
	}
	waitGone(t, first.Pid)
	next := w.whoami(t, false)
	if next.KeyID == first.KeyID || next.Pid == first.Pid {
		t.Fatalf("after retirement: key %s pid %d, want a new process and session", next.KeyID, next.Pid)
	}
}

// The process's environment holds the session, as Lambda's does: the role's
// credentials, the function's log group and stream.
func TestRuntime_Sessions_Environment(t *testing.T) {
	iam := newIAM(t, false, identity.Role{Name: "fixture-role", Trust: trustLambda})
	h := newRuntimeWith(t, func(rt *lambdart.Runtime) {
		rt.Sessions = iam.issuer()
		rt.Now = iam.clock.Now
		rt.Env = map[string]string{"AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local", "AWS_SESSION_TOKEN": "stale"}
	}, lambdart.Function{Name: "Env", Role: iam.a.RoleARN("fixture-role"), LogGroup: "/custom/env"})
	r, err := h.invoke(context.Background(), "Env", map[string]any{"op": "env"})
	if err != nil {
		t.Fatal(err)
	}
	p, _, err := iam.a.Resolve(r.Env["AWS_ACCESS_KEY_ID"], r.Env["AWS_SESSION_TOKEN"])
	if err != nil {
		t.Fatalf("the process's credentials do not resolve: %v", err)
	}
	if p.ARN != "arn:aws:sts::"+account+":assumed-role/fixture-role/Env" || r.Env["AWS_SECRET_ACCESS_KEY"] == "local" {
		t.Fatalf("process runs as %s", p.ARN)
	}
	if got := p.Expires.Sub(p.Issued); got != lambdart.DefaultSessionDuration {
		t.Fatalf("session of %s, want %s", got, lambdart.DefaultSessionDuration)
	}
	if r.Env["AWS_LAMBDA_LOG_GROUP_NAME"] != "/custom/env" {
		t.Fatalf("AWS_LAMBDA_LOG_GROUP_NAME = %q", r.Env["AWS_LAMBDA_LOG_GROUP_NAME"])
	}
}

// Lambda writes a process's logs with its role: a function whose role may not write
// to its log group runs, but its output is dropped, with one warning.
func TestRuntime_Sessions_LogsNeedTheRole(t *testing.T) {
	iam := newIAM(t, true, identity.Role{Name: "logger-role", Trust: trustLambda, Policies: []identity.Policy{
		policy("logger-role/logs", allow(`["logs:CreateLogStream","logs:PutLogEvents"]`,
			`"arn:aws:logs:`+region+`:`+account+`:log-group:/aws/lambda/Loud:*"`)),
	}})
	h := newRuntimeWith(t, func(rt *lambdart.Runtime) {
		rt.Sessions, rt.Authorizer, rt.Now = iam.issuer(), iam.ev, iam.clock.Now
	}, lambdart.Function{Name: "Loud", Role: iam.a.RoleARN("logger-role")},
		lambdart.Function{Name: "Silent", Role: iam.a.RoleARN("logger-role"), LogGroup: "/custom/Silent"})
	for _, fn := range []string{"Loud", "Silent"} {
		if r, err := h.invoke(context.Background(), fn, map[string]any{"op": "log", "value": fn}); err != nil || r.Op != "log" {
			t.Fatalf("%s: %v", fn, err)
		}
	}
	h.rt.Close() // every output line delivered
	out := h.out.String()
	if !strings.Contains(out, "[Loud] stdout says Loud\n") || !strings.Contains(out, "[Loud] stderr says Loud\n") {
		t.Fatalf("Loud's output lost:\n%s", out)
	}
	if strings.Contains(out, "Silent") {
		t.Fatalf("Silent's output written though its role may not:\n%s", out)
	}
	warned := h.logs.With(t, "level", "WARN")
	if len(warned) != 1 || warned[0]["function"] != "Silent" || warned[0]["logGroup"] != "/custom/Silent" ||
		!strings.Contains(fmt.Sprint(warned[0]["error"]), "logs:CreateLogStream") {
		t.Fatalf("warnings = %v", warned)
	}
}

// Add checks the role as Lambda does when a function is created: Lambda must be
// trusted by it, and a VPC function's role must manage network interfaces.
func TestRuntime_Add_ExecutionRole(t *testing.T) {
	ec2 := allow(`["ec2:CreateNetworkInterface","ec2:DescribeNetworkInterfaces","ec2:DescribeSubnets","ec2:DeleteNetworkInterface","ec2:AssignPrivateIpAddresses","ec2:UnassignPrivateIpAddresses"]`, `"*"`)
	iam := newIAM(t, true,
		identity.Role{Name: "plain-role", Trust: trustLambda},
		identity.Role{Name: "vpc-role", Trust: trustLambda, Policies: []identity.Policy{policy("vpc-role/eni", ec2)}},
		identity.Role{Name: "task-role", Trust: trustECS})
	h := newRuntimeWith(t, func(rt *lambdart.Runtime) {
		rt.Sessions, rt.Authorizer, rt.Now = iam.issuer(), iam.ev, iam.clock.Now
	})
	add := func(fn lambdart.Function) error {
		fn.Path = fixture
		return h.rt.Add(fn)
	}
	err := add(lambdart.Function{Name: "InVPC", Role: iam.a.RoleARN("plain-role"), InVPC: true})
	if !errors.Is(err, lambdart.ErrVPCPermissions) || !strings.Contains(err.Error(), "The provided execution role does not have permissions to call CreateNetworkInterface on EC2") {
		t.Fatalf("VPC function whose role cannot manage interfaces: %v", err)
	}
	if err := add(lambdart.Function{Name: "InVPC", Role: iam.a.RoleARN("vpc-role"), InVPC: true}); err != nil {
		t.Fatalf("VPC function with AWSLambdaVPCAccessExecutionRole's rights: %v", err)
	}
	if err := add(lambdart.Function{Name: "Plain", Role: iam.a.RoleARN("plain-role")}); err != nil {
		t.Fatalf("function outside a VPC: %v", err)
	}
	if err := add(lambdart.Function{Name: "Task", Role: iam.a.RoleARN("task-role")}); !errors.Is(err, lambdart.ErrRoleTrust) {
		t.Fatalf("role that does not trust Lambda: %v", err)
	}
	if err := add(lambdart.Function{Name: "Missing", Role: iam.a.RoleARN("no-such-role")}); !errors.Is(err, lambdart.ErrRoleTrust) {
		t.Fatalf("role that does not exist: %v", err)
	}
	if err := add(lambdart.Function{Name: "NoRole"}); !errors.Is(err, lambdart.ErrNoRole) {
		t.Fatalf("function without a role: %v", err)
	}
	h.rt.SessionDuration = 15 * time.Minute
	if err := add(lambdart.Function{Name: "Long", Role: iam.a.RoleARN("plain-role"), Timeout: 15 * time.Minute}); err == nil {
		t.Fatal("a 15-minute function accepted with 15-minute sessions: its invocations would outlive them")
	}
	if got := h.rt.Functions(); len(got) != 2 {
		t.Fatalf("functions = %v, want InVPC and Plain", got)
	}
}
