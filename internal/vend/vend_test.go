package vend_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	ststypes "github.com/aws/aws-sdk-go-v2/service/sts/types"

	"github.com/sandgate/sandgate/infra/local/dynamodblocal"
	"github.com/sandgate/sandgate/infra/local/testkit"
	"github.com/sandgate/sandgate/internal/state"
	"github.com/sandgate/sandgate/internal/vend"
)

func TestMain(m *testing.M) { os.Exit(dynamodblocal.RunTests(m)) }

const (
	account     = "123456789012"
	cluster     = "sandgate-Cluster-1ABC"
	taskRole    = "sandgate-TaskRole-1ABC"
	sandboxRole = "arn:aws:iam::" + account + ":role/sandgate-SandboxRole-1ABC"
	taskA       = "0123456789abcdef0123456789abcdef"
	taskB       = "fedcba9876543210fedcba9876543210"
)

func taskARN(id string) string {
	return "arn:aws:ecs:eu-west-1:" + account + ":task/" + cluster + "/" + id
}

func taskCaller(id string) string {
	return "arn:aws:sts::" + account + ":assumed-role/" + taskRole + "/" + id
}

// fakeSTS records AssumeRole calls and answers them with fresh credentials.
type fakeSTS struct {
	mu    sync.Mutex
	calls []*sts.AssumeRoleInput
	err   error
	now   func() time.Time
}

func (f *fakeSTS) AssumeRole(_ context.Context, in *sts.AssumeRoleInput, _ ...func(*sts.Options)) (*sts.AssumeRoleOutput, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, in)
	if f.err != nil {
		return nil, f.err
	}
	exp := f.now().Add(time.Duration(aws.ToInt32(in.DurationSeconds)) * time.Second)
	return &sts.AssumeRoleOutput{Credentials: &ststypes.Credentials{
		AccessKeyId: aws.String("ASIAVENDED"), SecretAccessKey: aws.String("vended-secret"),
		SessionToken: aws.String("vended-token"), Expiration: &exp,
	}}, nil
}

func (f *fakeSTS) Calls() []*sts.AssumeRoleInput {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*sts.AssumeRoleInput(nil), f.calls...)
}

type env struct {
	db    *testkit.DB
	store *state.Store
	sts   *fakeSTS
	logs  *testkit.Logs
	h     *vend.Handler
}

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{db: testkit.NewDB(t), logs: &testkit.Logs{}}
	e.store = e.db.Store()
	e.sts = &fakeSTS{now: e.db.Clock.Now}
	e.h = &vend.Handler{
		Records: e.store, STS: e.sts, TaskRole: taskRole, Account: account,
		SandboxRole: sandboxRole, Cluster: cluster, Log: e.logs.Logger(), Now: e.db.Clock.Now,
	}
	return e
}

// start takes user's lease and, unless task is "", records task as its task.
func (e *env) start(t *testing.T, user, task string) state.Lease {
	t.Helper()
	l, err := e.store.Acquire(context.Background(), user)
	if err != nil {
		t.Fatal(err)
	}
	if task != "" {
		if err := e.store.SetTask(context.Background(), l, taskARN(task)); err != nil {
			t.Fatal(err)
		}
	}
	return l
}

// ask calls the handler as the function URL does for caller (an ARN, "" for none).
func (e *env) ask(t *testing.T, caller string, r vend.Request) events.LambdaFunctionURLResponse {
	t.Helper()
	b, _ := json.Marshal(r)
	return e.call(t, caller, http.MethodPost, vend.PathCredentials, string(b))
}

func (e *env) call(t *testing.T, caller, method, path, body string) events.LambdaFunctionURLResponse {
	t.Helper()
	ev := events.LambdaFunctionURLRequest{RawPath: path, Body: body}
	ev.RequestContext.HTTP.Method = method
	if caller != "" {
		ev.RequestContext.Authorizer = &events.LambdaFunctionURLRequestContextAuthorizerDescription{
			IAM: &events.LambdaFunctionURLRequestContextAuthorizerIAMDescription{UserARN: caller, AccountID: account},
		}
	}
	resp, err := e.h.Handle(context.Background(), ev)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

func request(l state.Lease) vend.Request {
	return vend.Request{UserID: l.UserID, Generation: l.Generation, LeaseToken: l.Token}
}

// refused checks a refusal's status and code, and that the vendor logged reason.
func (e *env) refused(t *testing.T, resp events.LambdaFunctionURLResponse, status int, code, reason string) {
	t.Helper()
	var ref vend.Refusal
	if err := json.Unmarshal([]byte(resp.Body), &ref); err != nil || resp.StatusCode != status || ref.Error != code {
		t.Fatalf("answer %d %s, want %d %s", resp.StatusCode, resp.Body, status, code)
	}
	if ref.Retryable != (status == http.StatusConflict || status == http.StatusServiceUnavailable) {
		t.Errorf("retryable = %v for %d", ref.Retryable, status)
	}
	if reason != "" && len(e.logs.With(t, "reason", reason)) == 0 {
		t.Errorf("no log line with reason %s:\n%s", reason, e.logs.String())
	}
	if n := len(e.sts.Calls()); n != 0 {
		t.Errorf("%d AssumeRole calls for a refused request", n)
	}
}

// The task the record names, with the current token and generation, gets a session of
// the sandbox role named after the task, tagged with the user, for an hour.
func TestHandler_Handle_RecordedTask_GetsScopedSession(t *testing.T) {
	e := newEnv(t)
	l := e.start(t, "user_alice", taskA)
	resp := e.ask(t, taskCaller(taskA), request(l))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("answer %d %s", resp.StatusCode, resp.Body)
	}
	var c vend.Credentials
	if err := json.Unmarshal([]byte(resp.Body), &c); err != nil {
		t.Fatal(err)
	}
	if c.AccessKeyID != "ASIAVENDED" || c.SecretAccessKey != "vended-secret" || c.SessionToken != "vended-token" ||
		!c.Expiration.Equal(e.db.Clock.Now().Add(time.Hour)) || c.Storage != nil {
		t.Errorf("credentials %+v", c)
	}
	calls := e.sts.Calls()
	if len(calls) != 1 {
		t.Fatalf("%d AssumeRole calls", len(calls))
	}
	in := calls[0]
	if aws.ToString(in.RoleArn) != sandboxRole || aws.ToString(in.RoleSessionName) != taskA ||
		aws.ToInt32(in.DurationSeconds) != 3600 || len(in.Tags) != 1 ||
		aws.ToString(in.Tags[0].Key) != vend.TagUserID || aws.ToString(in.Tags[0].Value) != "user_alice" ||
		in.Policy != nil || len(in.TransitiveTagKeys) != 0 {
		t.Errorf("AssumeRole %+v", in)
	}
	for _, secret := range []string{l.Token, "vended-secret", "vended-token"} {
		if strings.Contains(e.logs.String(), secret) {
			t.Errorf("the log holds a secret %q:\n%s", secret, e.logs.String())
		}
	}
	// The whole life of a sandbox: RUNNING and STOPPING are live too.
	if _, err := e.store.MarkReady(context.Background(), l, "http://10.0.0.1:8080", "gw"); err != nil {
		t.Fatal(err)
	}
	if resp := e.ask(t, taskCaller(taskA), request(l)); resp.StatusCode != http.StatusOK {
		t.Errorf("running: %d %s", resp.StatusCode, resp.Body)
	}
	if err := e.store.MarkStopping(context.Background(), l); err != nil {
		t.Fatal(err)
	}
	if resp := e.ask(t, taskCaller(taskA), request(l)); resp.StatusCode != http.StatusOK {
		t.Errorf("stopping: %d %s", resp.StatusCode, resp.Body)
	}
}

// Another task than the recorded one is refused, even with the right lease: the lease
// token travels in RunTask's overrides, so it proves nothing alone.
func TestHandler_Handle_AnotherTask_Refused(t *testing.T) {
	e := newEnv(t)
	l := e.start(t, "user_alice", taskA)
	e.refused(t, e.ask(t, taskCaller(taskB), request(l)), http.StatusForbidden, vend.CodeRefused, vend.ReasonOtherTask)
	// The same task id in another cluster is another task.
	e.h.Cluster = "other-cluster"
	e.refused(t, e.ask(t, taskCaller(taskA), request(l)), http.StatusForbidden, vend.CodeRefused, vend.ReasonOtherTask)
}

// A generation other than the record's is refused, with the right token and task.
func TestHandler_Handle_StaleGeneration_Refused(t *testing.T) {
	e := newEnv(t)
	l := e.start(t, "user_alice", taskA)
	for _, gen := range []int64{l.Generation - 1, l.Generation + 1} {
		r := request(l)
		r.Generation = gen
		if gen < 1 {
			continue
		}
		e.refused(t, e.ask(t, taskCaller(taskA), r), http.StatusForbidden, vend.CodeRefused, vend.ReasonGeneration)
	}
}

// A token of an earlier lease, replayed by the task that held it, is refused once the
// user's sandbox has moved on.
func TestHandler_Handle_ReplayedOldToken_Refused(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	old := e.start(t, "user_alice", taskA)
	if err := e.store.Stop(ctx, old); err != nil {
		t.Fatal(err)
	}
	cur := e.start(t, "user_alice", taskB)
	e.refused(t, e.ask(t, taskCaller(taskA), request(old)), http.StatusForbidden, vend.CodeRefused, vend.ReasonToken)
	// The old token with the current generation, from the current task: still no.
	r := request(old)
	r.Generation = cur.Generation
	e.refused(t, e.ask(t, taskCaller(taskB), r), http.StatusForbidden, vend.CodeRefused, vend.ReasonToken)
}

// A task asking for another user — with its own lease, or for a user with no record —
// is refused; so is the other user's own lease presented by the wrong task.
func TestHandler_Handle_AnotherUser_Refused(t *testing.T) {
	e := newEnv(t)
	alice := e.start(t, "user_alice", taskA)
	bob := e.start(t, "user_bob", taskB)
	r := request(alice)
	r.UserID = "user_bob"
	e.refused(t, e.ask(t, taskCaller(taskA), r), http.StatusForbidden, vend.CodeRefused, vend.ReasonToken)
	e.refused(t, e.ask(t, taskCaller(taskA), request(bob)), http.StatusForbidden, vend.CodeRefused, vend.ReasonOtherTask)
	r.UserID = "user_carol"
	e.refused(t, e.ask(t, taskCaller(taskA), r), http.StatusForbidden, vend.CodeRefused, vend.ReasonNoRecord)
	// User ids are never folded: user_Alice is not user_alice.
	r = request(alice)
	r.UserID = "user_Alice"
	e.refused(t, e.ask(t, taskCaller(taskA), r), http.StatusForbidden, vend.CodeRefused, vend.ReasonNoRecord)
}

// Until the launcher has recorded the task, the holder of the current lease hears a
// retryable refusal; anyone else is refused as before.
func TestHandler_Handle_TaskNotRecordedYet_Retryable(t *testing.T) {
	e := newEnv(t)
	l := e.start(t, "user_alice", "")
	e.refused(t, e.ask(t, taskCaller(taskA), request(l)), http.StatusConflict, vend.CodeNotRecorded, vend.ReasonNotRecorded)
	wrong := request(l)
	wrong.LeaseToken = "not-the-token"
	e.refused(t, e.ask(t, taskCaller(taskA), wrong), http.StatusForbidden, vend.CodeRefused, vend.ReasonToken)
	if err := e.store.SetTask(context.Background(), l, taskARN(taskA)); err != nil {
		t.Fatal(err)
	}
	if resp := e.ask(t, taskCaller(taskA), request(l)); resp.StatusCode != http.StatusOK {
		t.Fatalf("after SetTask: %d %s", resp.StatusCode, resp.Body)
	}
}

// Only sessions of the task role may ask: not another role (the sandbox role's own
// sessions included), not another account, not a user, not an unauthenticated event.
func TestHandler_Handle_CallerNotTaskRole_Refused(t *testing.T) {
	e := newEnv(t)
	l := e.start(t, "user_alice", taskA)
	for _, caller := range []string{
		"",
		"arn:aws:sts::" + account + ":assumed-role/sandgate-SandboxRole-1ABC/" + taskA,
		"arn:aws:sts::" + account + ":assumed-role/sandgate-ConnectRole-1ABC/sandgate-connect",
		"arn:aws:sts::999999999999:assumed-role/" + taskRole + "/" + taskA,
		"arn:aws:iam::" + account + ":user/" + taskA,
		"arn:aws:sts::" + account + ":federated-user/" + taskA,
	} {
		e.refused(t, e.ask(t, caller, request(l)), http.StatusForbidden, vend.CodeRefused, vend.ReasonNotTask)
	}
}

// A record that is STOPPED, PURGING or past its lease is refused, whatever was asked.
func TestHandler_Handle_NotLive_Refused(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	stopped := e.start(t, "user_alice", taskA)
	if err := e.store.Stop(ctx, stopped); err != nil {
		t.Fatal(err)
	}
	e.refused(t, e.ask(t, taskCaller(taskA), request(stopped)), http.StatusForbidden, vend.CodeRefused, vend.ReasonNotLive)

	// Cleanup's lock (here over a user without a record, the simplest way to hold one).
	purge, err := e.store.AcquirePurge(ctx, "user_carol")
	if err != nil {
		t.Fatal(err)
	}
	e.refused(t, e.ask(t, taskCaller(taskA), request(purge)), http.StatusForbidden, vend.CodeRefused, vend.ReasonNotLive)

	expired := e.start(t, "user_bob", taskB)
	e.db.Clock.Advance(state.DefaultStartTTL + time.Second)
	e.refused(t, e.ask(t, taskCaller(taskB), request(expired)), http.StatusForbidden, vend.CodeRefused, vend.ReasonNotLive)
}

// A request that is not a credentials request is refused before anything is read.
func TestHandler_Handle_BadRequests(t *testing.T) {
	e := newEnv(t)
	l := e.start(t, "user_alice", taskA)
	good, _ := json.Marshal(request(l))
	for _, c := range []struct{ method, path, body string }{
		{http.MethodGet, vend.PathCredentials, ""},
		{http.MethodPost, "/other", string(good)},
		{http.MethodPost, vend.PathCredentials, "not json"},
		{http.MethodPost, vend.PathCredentials, `{"userId":"alice","generation":1,"leaseToken":"x"}`},
		{http.MethodPost, vend.PathCredentials, `{"userId":"user_alice","generation":0,"leaseToken":"x"}`},
		{http.MethodPost, vend.PathCredentials, `{"userId":"user_alice","generation":1,"leaseToken":""}`},
		{http.MethodPost, vend.PathCredentials, `{"userId":"user_alice","generation":1,"leaseToken":"x","extra":1}`},
	} {
		resp := e.call(t, taskCaller(taskA), c.method, c.path, c.body)
		if resp.StatusCode != http.StatusBadRequest && resp.StatusCode != http.StatusNotFound {
			t.Errorf("%s %s %q: %d %s", c.method, c.path, c.body, resp.StatusCode, resp.Body)
		}
	}
	if n := len(e.sts.Calls()); n != 0 {
		t.Errorf("%d AssumeRole calls", n)
	}
}

// STS failing is a retryable 503, logged.
func TestHandler_Handle_STSUnavailable_Retryable(t *testing.T) {
	e := newEnv(t)
	l := e.start(t, "user_alice", taskA)
	e.sts.err = errors.New("throttled")
	resp := e.ask(t, taskCaller(taskA), request(l))
	var ref vend.Refusal
	_ = json.Unmarshal([]byte(resp.Body), &ref)
	if resp.StatusCode != http.StatusServiceUnavailable || ref.Error != vend.CodeUnavailable || !ref.Retryable {
		t.Fatalf("answer %d %s", resp.StatusCode, resp.Body)
	}
}

// With storage credentials to mint (R2), the answer carries them for the user's prefix,
// expiring with the session.
func TestHandler_Handle_StorageCredentials(t *testing.T) {
	e := newEnv(t)
	m := &fakeMinter{}
	e.h.Storage = m
	l := e.start(t, "user_alice", taskA)
	resp := e.ask(t, taskCaller(taskA), request(l))
	var c vend.Credentials
	if err := json.Unmarshal([]byte(resp.Body), &c); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("answer %d %s", resp.StatusCode, resp.Body)
	}
	if c.Storage == nil || c.Storage.AccessKeyID != "r2-users/user_alice/" || m.ttl != time.Hour {
		t.Errorf("storage credentials %+v, minted for %s", c.Storage, m.ttl)
	}
}

type fakeMinter struct{ ttl time.Duration }

func (f *fakeMinter) Mint(_ context.Context, prefix string, ttl time.Duration) (vend.StorageCredentials, error) {
	f.ttl = ttl
	return vend.StorageCredentials{AccessKeyID: "r2-" + prefix, SecretAccessKey: "s", SessionToken: "t", Expiration: time.Now().Add(ttl)}, nil
}

// The sample event (events/vend.json, make invoke) is a task role's request as Lambda
// delivers it: the handler reads its caller and body, and refuses it for want of a
// record (no sandbox of user_alice here), logging why.
func TestHandler_Handle_SampleEvent(t *testing.T) {
	e := newEnv(t)
	b, err := os.ReadFile("../../events/vend.json")
	if err != nil {
		t.Fatal(err)
	}
	var ev events.LambdaFunctionURLRequest
	if err := json.Unmarshal(b, &ev); err != nil {
		t.Fatal(err)
	}
	e.h.TaskRole = "sandgate-TaskRole-1ABCDEFGHIJK"
	resp, err := e.h.Handle(context.Background(), ev)
	if err != nil {
		t.Fatal(err)
	}
	e.refused(t, resp, http.StatusForbidden, vend.CodeRefused, vend.ReasonNoRecord)
}
