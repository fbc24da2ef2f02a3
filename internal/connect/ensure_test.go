package connect_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"

	"github.com/sandgate/sandgate/infra/local/ecslocal"
	"github.com/sandgate/sandgate/internal/connect"
	"github.com/sandgate/sandgate/internal/ensure"
	"github.com/sandgate/sandgate/internal/frames"
	"github.com/sandgate/sandgate/internal/logging"
	"github.com/sandgate/sandgate/internal/metrics"
	"github.com/sandgate/sandgate/internal/notice"
	"github.com/sandgate/sandgate/internal/state"
)

// answers records the Connect function's raw responses.
type answers struct {
	mu  sync.Mutex
	raw [][]byte
}

func (a *answers) all() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	var s []string
	for _, r := range a.raw {
		s = append(s, string(r))
	}
	return strings.Join(s, "\n")
}

// asker is the Message function's side: a notice.Ensurer whose Lambda client reaches
// this Connect handler through the Invoke API over HTTP, and the answers it returned.
func (e *env) asker(t *testing.T) (*notice.Ensurer, *answers) {
	t.Helper()
	rec := &answers{}
	fn := e.inv.Funcs[fnName]
	e.inv.Funcs[fnName] = func(ctx context.Context, p []byte) ([]byte, error) {
		out, err := fn(ctx, p)
		rec.mu.Lock()
		rec.raw = append(rec.raw, out)
		rec.mu.Unlock()
		return out, err
	}
	return &notice.Ensurer{API: e.inv.Client(t), Function: fnName}, rec
}

func origin() context.Context {
	return notice.WithOrigin(context.Background(), "c-asking", "prod")
}

// An ensure notice starts the sandbox as a $connect would, without waiting for the
// task, and answers with the new lease's state and generation; it posts nothing and
// sends no notice, and its log line names the user and the asking connection.
func TestHandler_Handle_EnsureNoticeStarts(t *testing.T) {
	e := newEnv(t, options{ecs: []func(*ecslocal.Server){slow}})
	ask, _ := e.asker(t)
	res, err := ask.Ensure(origin(), "user_a")
	if err != nil {
		t.Fatal(err)
	}
	if !res.Started || res.State() != state.Starting || res.Sandbox.Generation != 1 {
		t.Fatalf("result %+v, sandbox %+v", res, res.Sandbox)
	}
	sb, err := e.store.Get(context.Background(), "user_a")
	if err != nil || sb.State != state.Starting || len(e.ecs.RunTasks()) != 1 || sb.TaskARN != e.ecs.Server.Tasks()[0].ARN {
		t.Fatalf("record %+v, %v, RunTask %d", sb, err, len(e.ecs.RunTasks()))
	}
	if calls := e.inv.Calls(); len(calls) != 1 {
		t.Fatalf("invocations %+v: want the ensure alone", calls)
	}
	lines := e.logs.With(t, "msg", "sandbox ensured")
	if len(lines) != 1 || lines[0][logging.UserID] != "user_a" || lines[0][logging.ConnectionID] != "c-asking" ||
		lines[0]["notice"] != notice.KindEnsure || lines[0]["started"] != true || lines[0][logging.State] != string(state.Starting) {
		t.Fatalf("log %v", lines)
	}
	// A second ensure finds the start under way.
	if res, err := ask.Ensure(origin(), "user_a"); err != nil || res.Started || res.State() != state.Starting || len(e.ecs.RunTasks()) != 1 {
		t.Fatalf("second ensure %+v, %v, RunTask %d", res, err, len(e.ecs.RunTasks()))
	}
}

// A RUNNING sandbox is answered as such, and the answer holds neither its gateway
// token nor its lease token (nor does any log line): the asker reads the record.
func TestHandler_Handle_EnsureNoticeAnswerHasNoSecret(t *testing.T) {
	e := newEnv(t, options{})
	ctx := context.Background()
	l, err := e.store.Acquire(ctx, "user_a")
	if err != nil {
		t.Fatal(err)
	}
	const gatewayToken = "gw-token-not-for-the-answer"
	if l, err = e.store.MarkReady(ctx, l, "http://127.0.0.1:9", gatewayToken); err != nil {
		t.Fatal(err)
	}
	ask, raw := e.asker(t)
	res, err := ask.Ensure(origin(), "user_a")
	if err != nil || res.Started || res.State() != state.Running || res.Sandbox.Generation != l.Generation ||
		res.Sandbox.GatewayToken != "" || res.Sandbox.Endpoint != "" {
		t.Fatalf("result %+v (sandbox %+v), %v", res, res.Sandbox, err)
	}
	answer := raw.all()
	if !strings.Contains(answer, `"sandgateEnsured":{"state":"RUNNING"`) {
		t.Fatalf("answer %s", answer)
	}
	for _, secret := range []string{gatewayToken, l.Token, "127.0.0.1:9"} {
		if strings.Contains(answer, secret) || strings.Contains(e.logs.String(), secret) {
			t.Fatalf("%q in the answer %s or the log", secret, answer)
		}
	}
	if len(e.ecs.RunTasks()) != 0 {
		t.Fatal("a running sandbox was launched again")
	}
}

// Refusals reach the asker as the errors Ensure returned here, and are logged and
// counted here, under the asking frame's stage, once.
func TestHandler_Handle_EnsureNoticeRefusals(t *testing.T) {
	t.Run("capacity", func(t *testing.T) {
		e := newEnv(t, options{ecs: []func(*ecslocal.Server){slow}})
		e.store.MaxSandboxes = 1
		if _, err := e.store.Acquire(context.Background(), "user_b"); err != nil {
			t.Fatal(err)
		}
		ask, _ := e.asker(t)
		_, err := ask.Ensure(origin(), "user_a")
		if !errors.Is(err, ensure.ErrCapacity) || ensure.Reason(err) != frames.ReasonCapacity {
			t.Fatalf("err %v", err)
		}
		if m := e.logs.With(t, metrics.CapacityRefusals, 1.0); len(m) != 1 || m[0]["Stage"] != "prod" {
			t.Fatalf("metric %v", m)
		}
	})
	t.Run("start failed", func(t *testing.T) {
		e := newEnv(t, options{})
		e.ecs.Server.FailRunTask(ecslocal.ClientException, -1)
		ask, _ := e.asker(t)
		_, err := ask.Ensure(origin(), "user_a")
		if !errors.Is(err, ensure.ErrStartFailed) || ensure.Reason(err) != frames.ReasonStartFailed {
			t.Fatalf("err %v", err)
		}
		if m := e.logs.With(t, metrics.StartFailures, 1.0); len(m) != 1 || m[0]["Stage"] != "prod" {
			t.Fatalf("metric %v", m)
		}
		if sb, err := e.store.Get(context.Background(), "user_a"); err != nil || sb.State != state.Stopped {
			t.Fatalf("record %+v, %v: want the lease released", sb, err)
		}
		if w := e.logs.With(t, "msg", "sandbox not ensured"); len(w) != 1 || w[0][logging.Reason] != frames.ReasonStartFailed ||
			w[0][logging.ConnectionID] != "c-asking" {
			t.Fatalf("log %v", w)
		}
	})
	t.Run("purging", func(t *testing.T) {
		e := newEnv(t, options{})
		if _, err := e.store.AcquirePurge(context.Background(), "user_a"); err != nil {
			t.Fatal(err)
		}
		ask, _ := e.asker(t)
		if _, err := ask.Ensure(origin(), "user_a"); !errors.Is(err, ensure.ErrPurging) || len(e.ecs.RunTasks()) != 0 {
			t.Fatalf("err %v, RunTask %d", err, len(e.ecs.RunTasks()))
		}
	})
}

// The asker's bound is this ensure's: past it, nothing is taken or started, and the
// answer is unavailable.
func TestHandler_Handle_EnsureNoticePastItsBound(t *testing.T) {
	e := newEnv(t, options{})
	n := notice.Notice{Kind: notice.KindEnsure, UserID: "user_a", ConnectionID: "c1", Until: time.Now().Add(-time.Second).UnixMilli()}
	resp, err := e.h.Handle(context.Background(), noticeEvent(n))
	if err != nil || resp.Ensured == nil || resp.Ensured.Reason != frames.ReasonUnavailable {
		t.Fatalf("response %+v, %v", resp, err)
	}
	if items := e.db.Items(t); len(items) != 0 || len(e.ecs.RunTasks()) != 0 {
		t.Fatalf("%d items, %d RunTask calls", len(items), len(e.ecs.RunTasks()))
	}
}

// A malformed ensure notice is refused (logged at ERROR with the user it named) and
// answered unavailable, before anything is read or written.
func TestHandler_Handle_EnsureNoticeMalformed(t *testing.T) {
	e := newEnv(t, options{})
	n := notice.Notice{Kind: notice.KindEnsure, UserID: "user_a/../user_b"}
	resp, err := e.h.Handle(context.Background(), noticeEvent(n))
	if err != nil || resp.Ensured == nil || resp.Ensured.Reason != frames.ReasonUnavailable || resp.StatusCode != 200 {
		t.Fatalf("response %+v, %v", resp, err)
	}
	if e.db.Calls.Calls("DynamoDB", "") != 0 || len(e.ecs.RunTasks()) != 0 || len(e.inv.Calls()) != 0 {
		t.Fatalf("DynamoDB %d calls, RunTask %d, invocations %d", e.db.Calls.Calls("DynamoDB", ""), len(e.ecs.RunTasks()), len(e.inv.Calls()))
	}
	if l := e.logs.With(t, slog.LevelKey, "ERROR"); len(l) != 1 || l[0]["msg"] != "notice refused" {
		t.Fatalf("log %v", l)
	}
}

// A $connect's response is API Gateway's alone, byte for byte: no answer key beside it.
func TestHandler_Handle_ConnectResponseHasNoAnswer(t *testing.T) {
	e := newEnv(t, options{})
	ev := connect.Event{APIGatewayWebsocketProxyRequest: events.APIGatewayWebsocketProxyRequest{
		RequestContext: events.APIGatewayWebsocketProxyRequestContext{EventType: "CONNECT", RouteKey: "$connect", ConnectionID: "c1"}}}
	resp, err := e.h.Handle(context.Background(), ev)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := json.Marshal(resp)
	want, _ := json.Marshal(resp.APIGatewayProxyResponse)
	if string(got) != string(want) || resp.StatusCode != 500 {
		t.Fatalf("response %s, want %s", got, want)
	}
}
