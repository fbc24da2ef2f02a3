package testkit

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/service/apigatewaymanagementapi"
	"github.com/coder/websocket"

	"github.com/sandgate/sandgate/infra/local"
	"github.com/sandgate/sandgate/infra/local/apigw"
	"github.com/sandgate/sandgate/internal/auth"
	"github.com/sandgate/sandgate/internal/authorizer"
	"github.com/sandgate/sandgate/internal/awsconf"
	"github.com/sandgate/sandgate/internal/config"
	"github.com/sandgate/sandgate/internal/frames"
	"github.com/sandgate/sandgate/internal/relay"
	"github.com/sandgate/sandgate/internal/state"
)

// Stage is the WebSocket stage of the test gateway.
const Stage = "test"

// Wait bounds every wait for an event in these helpers: a failure guard, never a
// stand-in for the event.
const Wait = 30 * time.Second

// Func is a function run in process: a JSON event in, a JSON response out.
type Func func(ctx context.Context, payload []byte) ([]byte, error)

// Handler adapts a typed Lambda handler to a Func, encoding and decoding as the
// runtime does.
func Handler[E, R any](h func(context.Context, E) (R, error)) Func {
	return func(ctx context.Context, payload []byte) ([]byte, error) {
		var ev E
		if err := json.Unmarshal(payload, &ev); err != nil {
			return nil, fmt.Errorf("decode event: %w", err)
		}
		out, err := h(ctx, ev)
		if err != nil {
			return nil, err
		}
		return json.Marshal(out)
	}
}

// Funcs is an apigw.Invoker over in-process functions, by name.
type Funcs map[string]Func

// Invoke runs the named function.
func (f Funcs) Invoke(ctx context.Context, name string, payload []byte) ([]byte, error) {
	fn, ok := f[name]
	if !ok {
		return nil, fmt.Errorf("no function %q", name)
	}
	return fn(ctx, payload)
}

// Routes names the functions behind each route; empty ones are left out.
type Routes struct {
	Connect, Default, Disconnect string
}

// Gateway is the API Gateway emulator with the real authorizer on $connect.
type Gateway struct {
	Server *apigw.Server
	// Mgmt is a management API client of the stage (the SDK's, retrying throttles).
	Mgmt   *apigatewaymanagementapi.Client
	signer *auth.Signer
}

// StartGateway starts a WebSocket API whose $connect is authorized by the real
// authorizer (signed with local.DevSecret) and whose routes run fns.
func StartGateway(tb testing.TB, log *slog.Logger, routes Routes, fns Funcs, configure ...func(*apigw.Server)) *Gateway {
	tb.Helper()
	acfg := authorizer.LoadConfig(config.New(config.Map(map[string]string{authorizer.EnvSigningSecrets: local.DevSecret})))
	v, err := acfg.NewVerifier()
	if err != nil {
		tb.Fatal(err)
	}
	all := Funcs{"authorize": Handler((&authorizer.Handler{Verifier: v, Log: log}).Handle)}
	for k, f := range fns {
		all[k] = f
	}
	ws := &apigw.WebSocketAPI{Stage: Stage, RouteSelectionExpression: "$request.body.action", Routes: map[string]apigw.Route{}}
	connect := apigw.Route{Function: routes.Connect, Authorizer: &apigw.Authorizer{Function: "authorize",
		IdentitySource: []string{"route.request.querystring.userId", "route.request.querystring.exp", "route.request.querystring.sig"}}}
	ws.Routes[apigw.RouteConnect] = connect
	if routes.Default != "" {
		ws.Routes[apigw.RouteDefault] = apigw.Route{Function: routes.Default}
	}
	if routes.Disconnect != "" {
		ws.Routes[apigw.RouteDisconnect] = apigw.Route{Function: routes.Disconnect}
	}
	if routes.Connect == "" {
		// A $connect without its own function still authorizes: the gateway invokes an
		// integration that accepts every connection.
		all["accept"] = Accept()
		connect.Function = "accept"
		ws.Routes[apigw.RouteConnect] = connect
	}
	s := apigw.New(apigw.Config{WebSocket: ws}, all, log)
	for _, c := range configure {
		c(s)
	}
	if err := s.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = s.Close() })
	cfg, err := awsconf.Load(context.Background(), awsconf.Loopback(s.ManagementEndpoint())...)
	if err != nil {
		tb.Fatal(err)
	}
	signer, err := auth.NewSigner(local.DevSecret)
	if err != nil {
		tb.Fatal(err)
	}
	return &Gateway{Server: s, Mgmt: relay.NewClient(cfg, s.ManagementEndpoint()), signer: signer}
}

// SignedURL returns the stage URL signed for userID.
func (g *Gateway) SignedURL(tb testing.TB, userID string) string {
	tb.Helper()
	u, err := g.signer.SignURL(g.Server.WebSocketURL(), userID)
	if err != nil {
		tb.Fatal(err)
	}
	return u
}

// Client is one WebSocket client of the gateway; it reads every message into a queue.
type Client struct {
	tb     testing.TB
	conn   *websocket.Conn
	msgs   chan []byte
	closed chan struct{}
}

// Dial connects as userID and returns once the handshake completed.
func (g *Gateway) Dial(tb testing.TB, userID string) *Client {
	tb.Helper()
	c, err := g.TryDial(tb, userID)
	if err != nil {
		tb.Fatalf("dial as %s: %v", userID, err)
	}
	return c
}

// TryDial connects as userID and returns the handshake's error, if any.
func (g *Gateway) TryDial(tb testing.TB, userID string) (*Client, error) {
	tb.Helper()
	return DialURL(tb, g.SignedURL(tb, userID))
}

// DialURL connects to a (signed) WebSocket URL and returns once the handshake
// completed; the connection is closed when the test ends.
func DialURL(tb testing.TB, u string) (*Client, error) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), Wait)
	defer cancel()
	conn, resp, err := websocket.Dial(ctx, u, nil)
	if err != nil {
		if resp != nil {
			return nil, fmt.Errorf("%w (status %d)", err, resp.StatusCode)
		}
		return nil, err
	}
	conn.SetReadLimit(1 << 20)
	c := &Client{tb: tb, conn: conn, msgs: make(chan []byte, 1024), closed: make(chan struct{})}
	go func() {
		defer close(c.closed)
		for {
			_, b, err := conn.Read(context.Background())
			if err != nil {
				return
			}
			c.msgs <- b
		}
	}()
	tb.Cleanup(func() { c.Close() })
	return c, nil
}

// Send sends one text message.
func (c *Client) Send(msg string) {
	c.tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), Wait)
	defer cancel()
	if err := c.conn.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
		c.tb.Fatalf("send: %v", err)
	}
}

// Next returns the next message, failing the test if none arrives within Wait.
func (c *Client) Next() []byte {
	c.tb.Helper()
	select {
	case b := <-c.msgs:
		return b
	case <-c.closed:
		select {
		case b := <-c.msgs:
			return b
		default:
		}
		c.tb.Fatal("connection closed while waiting for a message")
	case <-time.After(Wait):
		c.tb.Fatal("no message within the wait")
	}
	return nil
}

// NextFrame returns the next message decoded as a platform frame.
func (c *Client) NextFrame() frames.Frame {
	c.tb.Helper()
	b := c.Next()
	var f frames.Frame
	if err := json.Unmarshal(b, &f); err != nil || !frames.IsPlatform(b) {
		c.tb.Fatalf("message %q is not a platform frame", b)
	}
	return f
}

// Pending returns the messages received and not yet read, without waiting.
func (c *Client) Pending() [][]byte {
	var out [][]byte
	for {
		select {
		case b := <-c.msgs:
			out = append(out, b)
		default:
			return out
		}
	}
}

// Close closes the connection and waits for the reader to end.
func (c *Client) Close() {
	_ = c.conn.Close(websocket.StatusNormalClosure, "")
	<-c.closed
}

// Accept is a $connect integration that accepts every connection.
func Accept() Func {
	return func(context.Context, []byte) ([]byte, error) {
		return json.Marshal(events.APIGatewayProxyResponse{StatusCode: http.StatusOK})
	}
}

// Connector records connections; *state.Store is one.
type Connector interface {
	AddConnection(ctx context.Context, userID, connectionID string) (state.Connection, error)
}

// Recording is a $connect integration that records the connection of the authorized
// user, as the Connect function does, and accepts it.
func Recording(store Connector) Func {
	return func(ctx context.Context, p []byte) ([]byte, error) {
		var ev events.APIGatewayWebsocketProxyRequest
		if err := json.Unmarshal(p, &ev); err != nil {
			return nil, err
		}
		authz, _ := ev.RequestContext.Authorizer.(map[string]any)
		user, _ := authz["userId"].(string)
		if _, err := store.AddConnection(ctx, user, ev.RequestContext.ConnectionID); err != nil {
			return nil, err
		}
		return Accept()(ctx, p)
	}
}

// Tracker signals each completed invocation of the Funcs it wraps, so a test can wait
// until a handler has finished instead of guessing how long it takes.
type Tracker struct{ done chan struct{} }

// NewTracker returns a Tracker.
func NewTracker() *Tracker { return &Tracker{done: make(chan struct{}, 4096)} }

// Wrap returns fn signalling its completion.
func (t *Tracker) Wrap(fn Func) Func {
	return func(ctx context.Context, payload []byte) ([]byte, error) {
		defer func() { t.done <- struct{}{} }()
		return fn(ctx, payload)
	}
}

// Wait waits for n more completions, failing the test if they do not come within Wait.
func (t *Tracker) Wait(tb testing.TB, n int) {
	tb.Helper()
	for range n {
		select {
		case <-t.done:
		case <-time.After(Wait):
			tb.Fatal("an invocation did not complete within the wait")
		}
	}
}

// Recorder records events passing through to a Func, so tests can read the ids and
// contexts API Gateway generated.
type Recorder struct {
	mu     sync.Mutex
	events [][]byte
	seen   chan struct{}
}

// NewRecorder returns an empty Recorder.
func NewRecorder() *Recorder { return &Recorder{seen: make(chan struct{}, 1024)} }

// Wrap returns fn recording each payload before running it.
func (r *Recorder) Wrap(fn Func) Func {
	return func(ctx context.Context, payload []byte) ([]byte, error) {
		r.mu.Lock()
		r.events = append(r.events, append([]byte(nil), payload...))
		r.mu.Unlock()
		select {
		case r.seen <- struct{}{}:
		default:
		}
		return fn(ctx, payload)
	}
}

// Events returns the recorded payloads.
func (r *Recorder) Events() [][]byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([][]byte(nil), r.events...)
}
