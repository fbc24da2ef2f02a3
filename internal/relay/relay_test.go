package relay_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/coder/websocket"

	"github.com/sandgate/sandgate/infra/local/apigw"
	"github.com/sandgate/sandgate/infra/local/dynamodblocal"
	"github.com/sandgate/sandgate/infra/local/testkit"
	"github.com/sandgate/sandgate/internal/awsconf"
	"github.com/sandgate/sandgate/internal/relay"
	"github.com/sandgate/sandgate/internal/state"
)

func TestMain(m *testing.M) { os.Exit(dynamodblocal.RunTests(m)) }

// gateway answers $connect and $disconnect itself and reports connection ids.
type gateway struct {
	mu        sync.Mutex
	connected chan string
}

func (g *gateway) Invoke(ctx context.Context, fn string, payload []byte) ([]byte, error) {
	var ev events.APIGatewayWebsocketProxyRequest
	if err := json.Unmarshal(payload, &ev); err != nil {
		return nil, err
	}
	if ev.RequestContext.RouteKey == "$connect" {
		g.connected <- ev.RequestContext.ConnectionID
	}
	return []byte(`{"statusCode":200}`), nil
}

type env struct {
	gw    *apigw.Server
	store *state.Store
	relay *relay.Relay
	conns chan string
}

func setup(t *testing.T) env {
	t.Helper()
	ctx := context.Background()
	g := &gateway{connected: make(chan string, 16)}
	quiet := slog.New(slog.NewJSONHandler(io.Discard, nil))
	gw := apigw.New(apigw.Config{WebSocket: &apigw.WebSocketAPI{
		Stage: "test", RouteSelectionExpression: "$request.body.action",
		Routes: map[string]apigw.Route{"$connect": {Function: "connect"}, "$disconnect": {Function: "disconnect"}},
	}}, g, quiet)
	if err := gw.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { gw.Close() })

	store := testkit.NewDB(t).Store()

	cfg, err := awsconf.Load(ctx, awsconf.Loopback(gw.ManagementEndpoint())...)
	if err != nil {
		t.Fatal(err)
	}
	return env{gw: gw, store: store, conns: g.connected,
		relay: &relay.Relay{API: relay.NewClient(cfg, gw.ManagementEndpoint()), Conns: store, Log: quiet}}
}

// connect opens a client for userID and records its connection as the Connect
// function would.
func (e env) connect(t *testing.T, userID string) (*websocket.Conn, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, e.gw.WebSocketURL(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.CloseNow() })
	id := <-e.conns
	if _, err := e.store.AddConnection(ctx, userID, id); err != nil {
		t.Fatal(err)
	}
	return c, id
}

func read(t *testing.T, c *websocket.Conn) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, b, err := c.Read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestRelay_Broadcast_ReachesOnlyThatUser(t *testing.T) {
	e := setup(t)
	a1, _ := e.connect(t, "user_a")
	a2, _ := e.connect(t, "user_a")
	b, _ := e.connect(t, "user_b")
	n, err := e.relay.Broadcast(context.Background(), "user_a", []byte(`{"type":"sandgate.status","state":"ready"}`))
	if err != nil || n != 2 {
		t.Fatalf("Broadcast = %d, %v", n, err)
	}
	for _, c := range []*websocket.Conn{a1, a2} {
		if got := read(t, c); got != `{"type":"sandgate.status","state":"ready"}` {
			t.Fatalf("got %s", got)
		}
	}
	// user_b got nothing: the next frame it reads is the one meant for it.
	if _, err := e.relay.Broadcast(context.Background(), "user_b", []byte("for b")); err != nil {
		t.Fatal(err)
	}
	if got := read(t, b); got != "for b" {
		t.Fatalf("user_b read %q", got)
	}
}

func TestRelay_Post_GoneRemovesRecord(t *testing.T) {
	e := setup(t)
	c, id := e.connect(t, "user_a")
	live, _ := e.connect(t, "user_a")
	c.Close(websocket.StatusNormalClosure, "bye")
	// The gateway forgets the connection once the close handshake is done.
	var err error
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if err = e.relay.Post(context.Background(), "user_a", id, []byte("x")); errors.Is(err, relay.ErrGone) {
			break
		}
	}
	if !errors.Is(err, relay.ErrGone) {
		t.Fatalf("Post to a closed connection = %v, want ErrGone", err)
	}
	conns, err := e.store.Connections(context.Background(), "user_a")
	if err != nil || len(conns) != 1 || conns[0].ConnectionID == id {
		t.Fatalf("connections after gone = %+v, %v", conns, err)
	}
	// A broadcast to a user with a gone record still reaches the live one, no error.
	if _, err := e.store.AddConnection(context.Background(), "user_a", id); err != nil {
		t.Fatal(err)
	}
	n, err := e.relay.Broadcast(context.Background(), "user_a", []byte("hi"))
	if err != nil || n != 1 || read(t, live) != "hi" {
		t.Fatalf("Broadcast = %d, %v", n, err)
	}
}

func TestRelay_Close(t *testing.T) {
	e := setup(t)
	c, id := e.connect(t, "user_a")
	if err := e.relay.Close(context.Background(), id); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, _, err := c.Read(ctx); websocket.CloseStatus(err) == -1 {
		t.Fatalf("client not closed: %v", err)
	}
	if err := e.relay.Close(context.Background(), id); err != nil {
		t.Fatalf("closing a gone connection: %v", err)
	}
}

func TestRelay_Send_GoneKeepsRecord(t *testing.T) {
	e := setup(t)
	c, id := e.connect(t, "user_a")
	if err := e.relay.Send(context.Background(), id, []byte("one")); err != nil {
		t.Fatal(err)
	}
	if got := read(t, c); got != "one" {
		t.Fatalf("read %q", got)
	}
	c.Close(websocket.StatusNormalClosure, "bye")
	var err error
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if err = e.relay.Send(context.Background(), id, []byte("x")); errors.Is(err, relay.ErrGone) {
			break
		}
	}
	if !errors.Is(err, relay.ErrGone) {
		t.Fatalf("Send to a closed connection = %v, want ErrGone", err)
	}
	// The caller decides about the record: it is still there.
	conns, err := e.store.Connections(context.Background(), "user_a")
	if err != nil || len(conns) != 1 || conns[0].ConnectionID != id {
		t.Fatalf("connections after Send's 410 = %+v, %v", conns, err)
	}
}

func TestRelay_Live_OpenClosedUnknown(t *testing.T) {
	e := setup(t)
	c, id := e.connect(t, "user_a")
	live, err := e.relay.Live(context.Background(), id)
	if err != nil || !live {
		t.Fatalf("Live(open) = %v, %v", live, err)
	}
	c.Close(websocket.StatusNormalClosure, "bye")
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline) && live; time.Sleep(20 * time.Millisecond) {
		if live, err = e.relay.Live(context.Background(), id); err != nil {
			t.Fatal(err)
		}
	}
	if live {
		t.Fatal("Live still true after the client closed")
	}
	if live, err := e.relay.Live(context.Background(), "bm90LWEtY29ubg="); err != nil || live {
		t.Fatalf("Live(unknown) = %v, %v", live, err)
	}
	conns, err := e.store.Connections(context.Background(), "user_a")
	if err != nil || len(conns) != 1 {
		t.Fatalf("Live must leave the record: %+v, %v", conns, err)
	}
}
