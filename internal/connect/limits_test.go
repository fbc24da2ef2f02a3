package connect_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/apigatewaymanagementapi"

	"github.com/sandgate/sandgate/infra/local/ecslocal"
	"github.com/sandgate/sandgate/infra/local/testkit"
	"github.com/sandgate/sandgate/internal/connect"
	"github.com/sandgate/sandgate/internal/frames"
	"github.com/sandgate/sandgate/internal/metrics"
	"github.com/sandgate/sandgate/internal/notice"
	"github.com/sandgate/sandgate/internal/state"
)

// Connects over the user's rate are refused at the handshake with 429 and the error
// frame as its body, before anything is spent on them: no connection record, no
// sandbox start, no notice.
func TestHandler_Handle_ConnectRateRefusedBeforeWork(t *testing.T) {
	e := newEnv(t, options{ecs: []func(*ecslocal.Server){slow}})
	e.store.ConnectLimits = state.ConnectLimits{MaxConnections: 100, Interval: time.Hour, Burst: 3}
	for range 3 {
		c := e.gw.Dial(t, "user_a")
		wantFrame(t, c.NextFrame(), frames.TypeStatus, frames.Starting)
	}
	e.inv.Wait()
	notices := len(e.inv.Calls())
	_, err := e.gw.TryDial(t, "user_a")
	var he *testkit.HandshakeError
	if !errors.As(err, &he) || he.Status != http.StatusTooManyRequests || !strings.Contains(he.Body, frames.ReasonConnectRate) {
		t.Fatalf("fourth connect: %v, want 429 with the %s frame", err, frames.ReasonConnectRate)
	}
	if got := e.connections(t, "user_a"); len(got) != 3 {
		t.Fatalf("%d connection records, want 3", len(got))
	}
	if n := len(e.inv.Calls()); n != notices {
		t.Fatalf("a refused connect sent %d notices", n-notices)
	}
	if runs := e.ecs.RunTasks(); len(runs) != 1 {
		t.Fatalf("%d RunTask calls", len(runs))
	}
	if len(e.logs.With(t, metrics.ConnectsLimited, 1.0)) != 1 {
		t.Fatal("the refusal was not counted")
	}
	// Within the refusal's retry interval this process refuses again without a write.
	writes := e.db.Writes()
	for range 5 {
		if _, err := e.gw.TryDial(t, "user_a"); !errors.As(err, &he) || he.Status != http.StatusTooManyRequests {
			t.Fatalf("again: %v", err)
		}
	}
	if w := e.db.Writes() - writes; w != 0 {
		t.Fatalf("%d DynamoDB writes for connects refused within the retry interval", w)
	}
	// Another user is not held back.
	c := e.gw.Dial(t, "user_b")
	wantFrame(t, c.NextFrame(), frames.TypeStatus, frames.Starting)
}

// A connection over the user's cap is told why and closed; it is never recorded nor
// counted, and it spends the connect rate like any other.
func TestHandler_Handle_OverCapToldAndClosed(t *testing.T) {
	e := newEnv(t, options{ecs: []func(*ecslocal.Server){slow}})
	e.store.ConnectLimits = state.ConnectLimits{MaxConnections: 2, Interval: time.Minute, Burst: 3}
	for range 2 {
		c := e.gw.Dial(t, "user_a")
		wantFrame(t, c.NextFrame(), frames.TypeStatus, frames.Starting)
	}
	over := e.gw.Dial(t, "user_a")
	wantFrame(t, over.NextFrame(), frames.TypeError, frames.ReasonTooManyConnections)
	select {
	case <-over.Closed():
	case <-time.After(testkit.Wait):
		t.Fatal("the connection over the cap was not closed")
	}
	if got := e.connections(t, "user_a"); len(got) != 2 {
		t.Fatalf("%d connection records, want 2", len(got))
	}
	a, err := e.store.Access(context.Background(), "user_a")
	if err != nil || len(a.Conns) != 2 {
		t.Fatalf("counted %+v, %v", a, err)
	}
	// The burst of three is spent: the next connect is refused for the rate.
	_, err = e.gw.TryDial(t, "user_a")
	var he *testkit.HandshakeError
	if !errors.As(err, &he) || he.Status != http.StatusTooManyRequests {
		t.Fatalf("after the cap refusal: %v, want 429", err)
	}
}

// A counted connection whose $disconnect was lost holds its place only until a connect
// over the cap finds it gone (API Gateway answers 410): then it is forgotten and the
// new connection is admitted.
func TestHandler_Handle_LostDisconnectFreedAtCap(t *testing.T) {
	e := newEnv(t, options{ecs: []func(*ecslocal.Server){slow}, disconnect: true})
	e.store.ConnectLimits = state.ConnectLimits{MaxConnections: 1, Interval: time.Millisecond, Burst: 10}
	e.gw.Server.DropDisconnects(1)
	first := e.gw.Dial(t, "user_a")
	wantFrame(t, first.NextFrame(), frames.TypeStatus, frames.Starting)
	old := e.connectionIDs(t)[0]
	first.Close()
	testkit.Eventually(t, testkit.Wait, func() bool {
		_, err := e.gw.Mgmt.GetConnection(context.Background(), &apigatewaymanagementapi.GetConnectionInput{ConnectionId: &old})
		return err != nil
	}, func() string { return "the first connection never ended" })
	e.inv.Wait()
	// Younger than the check age, it is not checked: refused.
	e.db.Clock.Advance(time.Second)
	over := e.gw.Dial(t, "user_a")
	wantFrame(t, over.NextFrame(), frames.TypeError, frames.ReasonTooManyConnections)
	e.db.Clock.Advance(connect.DefaultCheckInterval)
	second := e.gw.Dial(t, "user_a")
	wantFrame(t, second.NextFrame(), frames.TypeStatus, frames.Starting)
	if got := e.connections(t, "user_a"); len(got) != 1 || got[0] == old {
		t.Fatalf("connection records %v; the lost one (%s) should be gone", got, old)
	}
}

// countingMgmt counts the posts of a notice and holds them until released.
type countingMgmt struct {
	connect.Management
	posts   atomic.Int64
	release chan struct{}
}

func (m *countingMgmt) PostToConnection(ctx context.Context, in *apigatewaymanagementapi.PostToConnectionInput, o ...func(*apigatewaymanagementapi.Options)) (*apigatewaymanagementapi.PostToConnectionOutput, error) {
	<-m.release
	m.posts.Add(1)
	return m.Management.PostToConnection(ctx, in, o...)
}

// A client that drops at once does not hold its connect notice for the post window:
// the notice stops at the first 410 once the connection's $disconnect has run, and
// without one (lost, or a handshake that never completed) once the handshake's grace
// has passed.
func TestHandler_Notice_StopsWhenConnectionGone(t *testing.T) {
	for name, dropDisconnect := range map[string]bool{"disconnect seen": false, "no disconnect": true} {
		t.Run(name, func(t *testing.T) {
			m := &countingMgmt{release: make(chan struct{})}
			e := newEnv(t, options{ecs: []func(*ecslocal.Server){slow}, disconnect: true,
				wrapAPI: func(api connect.Management) connect.Management { m.Management = api; return m }})
			e.h.PostWindow, e.h.HandshakeGrace = 10*time.Second, 300*time.Millisecond
			var once sync.Once
			release := func() { once.Do(func() { close(m.release) }) }
			t.Cleanup(release) // before the invoker's wait, which cleanups run after
			if dropDisconnect {
				e.gw.Server.DropDisconnects(-1)
			}
			c := e.gw.Dial(t, "user_a")
			id := e.connectionIDs(t)[0]
			c.Close()
			if !dropDisconnect {
				testkit.Eventually(t, testkit.Wait, func() bool {
					ok, err := e.store.Counted(context.Background(), "user_a", id)
					return err == nil && !ok
				}, func() string { return "$disconnect never released the connection" })
			}
			start := time.Now()
			release()
			var wg sync.WaitGroup
			wg.Go(e.inv.Wait)
			wg.Wait()
			took := time.Since(start)
			if took > 2*time.Second {
				t.Fatalf("the notice ran %s after the client left (post window 10 s)", took)
			}
			if !dropDisconnect && m.posts.Load() != 1 {
				t.Fatalf("%d posts: the notice retried after the $disconnect", m.posts.Load())
			}
			want := "notice stopped: the connection's $disconnect has run"
			if dropDisconnect {
				want = "notice stopped: the handshake is long over"
			}
			if lines := e.logs.With(t, "msg", want); len(lines) != 1 {
				t.Fatalf("want one %q line", want)
			}
		})
	}
}

// A restart notice stops waiting for a stopping sandbox once the user has no
// connection left: nobody is there to tell, and the next connect starts one.
func TestHandler_Restart_AbandonedWhenNobodyLeft(t *testing.T) {
	e := newEnv(t, options{ecs: []func(*ecslocal.Server){slow}, disconnect: true})
	c := e.gw.Dial(t, "user_a")
	wantFrame(t, c.NextFrame(), frames.TypeStatus, frames.Starting)
	id := e.connectionIDs(t)[0]
	ctx := context.Background()
	sb, err := e.store.Get(ctx, "user_a")
	if err != nil {
		t.Fatal(err)
	}
	lease := state.Lease{UserID: "user_a", Token: sb.LeaseToken, Generation: sb.Generation}
	if lease, err = e.store.MarkReady(ctx, lease, "http://127.0.0.1:1", "token"); err != nil {
		t.Fatal(err)
	}
	if err := e.store.MarkStopping(ctx, lease); err != nil {
		t.Fatal(err)
	}
	c.Close()
	testkit.Eventually(t, testkit.Wait, func() bool {
		ok, err := e.store.Counted(ctx, "user_a", id)
		return err == nil && !ok
	}, func() string { return "$disconnect never released the connection" })
	e.h.Handle(ctx, noticeEvent(notice.Notice{Kind: notice.KindRestart, UserID: "user_a", ConnectionID: id,
		Until: time.Now().Add(time.Minute).UnixMilli()}))
	if lines := e.logs.With(t, "msg", "restart abandoned: the user has no connection left"); len(lines) != 1 {
		t.Fatal("the restart kept waiting with nobody left")
	}
}
