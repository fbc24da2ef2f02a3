package testkit

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/service/apigatewaymanagementapi"

	"github.com/sandgate/sandgate/infra/local"
	"github.com/sandgate/sandgate/infra/local/apigw"
	"github.com/sandgate/sandgate/internal/auth"
	"github.com/sandgate/sandgate/internal/authorizer"
	"github.com/sandgate/sandgate/internal/awsconf"
	"github.com/sandgate/sandgate/internal/config"
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
	all := Funcs{"authorize": Handler((&authorizer.Handler{Verifier: DevVerifier(tb), Log: log}).Handle)}
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

// Dial connects as userID and returns once the handshake completed.
func (g *Gateway) Dial(tb testing.TB, userID string) *Client {
	tb.Helper()
	c, err := g.TryDial(tb, userID)
	return mustDial(tb, userID, c, err)
}

// TryDial connects as userID and returns the handshake's error, if any.
func (g *Gateway) TryDial(tb testing.TB, userID string) (*Client, error) {
	tb.Helper()
	return DialAs(tb, g.SignedURL(tb, userID), userID)
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
		user, id, err := authorized(p)
		if err != nil {
			return nil, err
		}
		if _, err := store.AddConnection(ctx, user, id); err != nil {
			return nil, err
		}
		return Accept()(ctx, p)
	}
}

// authorized returns the authorized user and the connection of a WebSocket event.
func authorized(payload []byte) (user, connectionID string, err error) {
	var ev events.APIGatewayWebsocketProxyRequest
	if err := json.Unmarshal(payload, &ev); err != nil {
		return "", "", err
	}
	authz, _ := ev.RequestContext.Authorizer.(map[string]any)
	user, _ = authz["userId"].(string)
	return user, ev.RequestContext.ConnectionID, nil
}

// ConnectionStore records and removes connections; *state.Store is one.
type ConnectionStore interface {
	Connector
	RemoveConnection(ctx context.Context, userID, connectionID string) error
}

// Connections stands in for the Connect and Disconnect functions behind a gateway
// where a test plays the Message function itself: it records and removes the
// authorized user's connection records as they do, and tells the test each new
// connection's id.
type Connections struct {
	store ConnectionStore
	ids   chan string
	hold  atomic.Pointer[chan struct{}]
}

// NewConnections returns the stand-in over store.
func NewConnections(store ConnectionStore) *Connections {
	return &Connections{store: store, ids: make(chan string, 1024)}
}

// Routes names the stand-in's functions for StartGateway.
func (c *Connections) Routes() Routes { return Routes{Connect: "connect", Disconnect: "disconnect"} }

// Funcs are the stand-in's functions for StartGateway.
func (c *Connections) Funcs() Funcs {
	return Funcs{
		"connect": func(ctx context.Context, p []byte) ([]byte, error) {
			user, id, err := authorized(p)
			if err != nil {
				return nil, err
			}
			if _, err := c.store.AddConnection(ctx, user, id); err != nil {
				return nil, err
			}
			c.ids <- id
			if hold := c.hold.Load(); hold != nil {
				<-*hold
			}
			return Accept()(ctx, p)
		},
		"disconnect": func(ctx context.Context, p []byte) ([]byte, error) {
			user, id, err := authorized(p)
			if err != nil {
				return nil, err
			}
			if err := c.store.RemoveConnection(ctx, user, id); err != nil {
				return nil, err
			}
			return Accept()(ctx, p)
		},
	}
}

// Next returns the id of the next connection recorded, failing the test if none is
// within Wait. Dial one connection at a time to tell whose id it is.
func (c *Connections) Next(tb testing.TB) string {
	tb.Helper()
	select {
	case id := <-c.ids:
		return id
	case <-time.After(Wait):
		tb.Fatal("no connection recorded within the wait")
	}
	return ""
}

// Hold keeps every later handshake open after its connection is recorded, as a slow
// Connect function does, until release is called.
func (c *Connections) Hold() (release func()) {
	ch := make(chan struct{})
	c.hold.Store(&ch)
	var once sync.Once
	return func() {
		once.Do(func() {
			c.hold.Store(nil)
			close(ch)
		})
	}
}

// Dial connects as user through g and returns the client and its connection's id.
func (c *Connections) Dial(tb testing.TB, g *Gateway, user string) (*Client, string) {
	tb.Helper()
	cl := g.Dial(tb, user)
	return cl, c.Next(tb)
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

// DevVerifier verifies URLs signed with local.DevSecret, as the functions do with the
// secret the local stack keeps in its Secrets Manager.
func DevVerifier(tb testing.TB) authorizer.QueryVerifier {
	tb.Helper()
	acfg := authorizer.LoadConfig(config.New(config.Map(map[string]string{authorizer.EnvSigningSecretID: "local"})))
	v, err := acfg.ParseVerifier(local.DevSecret)
	if err != nil {
		tb.Fatal(err)
	}
	return authorizer.Static(v)
}
