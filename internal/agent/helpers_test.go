package agent_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/coder/websocket"

	"github.com/sandgate/sandgate/infra/local/apigw"
	"github.com/sandgate/sandgate/infra/local/dynamodblocal"
	"github.com/sandgate/sandgate/infra/local/s3local"
	"github.com/sandgate/sandgate/internal/agent"
	"github.com/sandgate/sandgate/internal/agentapi"
	"github.com/sandgate/sandgate/internal/awsconf"
	"github.com/sandgate/sandgate/internal/config"
	"github.com/sandgate/sandgate/internal/demoworkload"
	"github.com/sandgate/sandgate/internal/logging"
	"github.com/sandgate/sandgate/internal/objsync"
	"github.com/sandgate/sandgate/internal/relay"
	"github.com/sandgate/sandgate/internal/s3bucket"
	"github.com/sandgate/sandgate/internal/state"
	"github.com/sandgate/sandgate/internal/taskenv"
)

// The test binary doubles as the workload (SANDGATE_AGENT_TEST_WORKLOAD): the demo, or
// an echo server that exits on a "crash" frame.
func TestMain(m *testing.M) {
	switch os.Getenv("SANDGATE_AGENT_TEST_WORKLOAD") {
	case "demo":
		os.Exit(demoWorkload())
	case "crashy":
		os.Exit(crashyWorkload())
	case "flusher":
		os.Exit(flusherWorkload())
	case "recorder":
		os.Exit(recorderWorkload())
	case modeProtectHelper:
		os.Exit(protectHelper())
	case modePeek:
		os.Exit(peekWorkload())
	}
	os.Exit(dynamodblocal.RunTests(m))
}

func listenWorkload() net.Listener {
	ln, err := net.Listen("tcp", net.JoinHostPort(os.Getenv("HOST"), os.Getenv("PORT")))
	if err != nil {
		os.Exit(1)
	}
	return ln
}

func demoWorkload() int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	s := &demoworkload.Server{Dir: os.Getenv("SANDGATE_WORKSPACE"), Log: slog.New(slog.DiscardHandler)}
	if err := s.Serve(ctx, listenWorkload()); err != nil {
		return 1
	}
	return 0
}

// flusherWorkload serves the demo and, on SIGTERM, takes a moment to write a file, as a
// workload flushing its state does.
func flusherWorkload() int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	dir := os.Getenv("SANDGATE_WORKSPACE")
	s := &demoworkload.Server{Dir: dir, Log: slog.New(slog.DiscardHandler)}
	if err := s.Serve(ctx, listenWorkload()); err != nil {
		return 1
	}
	time.Sleep(300 * time.Millisecond) // the flush takes a while
	if err := os.WriteFile(dir+"/flushed-on-sigterm.txt", []byte("flushed"), 0o644); err != nil {
		return 1
	}
	return 0
}

// recorderWorkload appends every frame it reads to received.txt in the workspace, one
// a line, and on SIGTERM exits only once it has read SANDGATE_AGENT_TEST_EXPECT frames
// (the agent kills it after WORKLOAD_GRACE otherwise). The final sync then shows which
// frames the agent wrote to the workload before stopping it, whatever the timing.
func recorderWorkload() int {
	want, _ := strconv.Atoi(os.Getenv("SANDGATE_AGENT_TEST_EXPECT"))
	f, err := os.OpenFile(filepath.Join(os.Getenv("SANDGATE_WORKSPACE"), "received.txt"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return 1
	}
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM)
	var mu sync.Mutex
	n := 0
	all := make(chan struct{})
	if want <= 0 {
		close(all)
	}
	go http.Serve(listenWorkload(), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		for {
			_, data, err := c.Read(r.Context())
			if err != nil {
				return
			}
			if _, err := f.Write(append(data, '\n')); err != nil {
				os.Exit(1)
			}
			mu.Lock()
			n++
			if n == want {
				close(all)
			}
			mu.Unlock()
		}
	}))
	<-term
	<-all
	if err := f.Close(); err != nil {
		return 1
	}
	return 0
}

func crashyWorkload() int {
	http.Serve(listenWorkload(), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		c.Write(r.Context(), websocket.MessageText, []byte(`{"type":"hello"}`))
		for {
			typ, data, err := c.Read(r.Context())
			if err != nil {
				return
			}
			switch string(data) {
			case "crash":
				os.Exit(3)
			case "close":
				c.Close(websocket.StatusNormalClosure, "the workload is done with this client")
				return
			}
			c.Write(r.Context(), typ, data)
		}
	}))
	return 1
}

// harness wires an Agent to DynamoDB Local, s3local, the API Gateway emulator's
// management API and a task metadata endpoint, all on loopback.
type harness struct {
	t      testing.TB
	userID string
	store  *state.Store
	lease  state.Lease
	s3     *s3local.Server
	bucket *s3bucket.Bucket
	gw     *apigw.Server
	inv    *gateway
	mgmt   relay.API
	vars   map[string]string
	logs   *lockedBuffer
	api    agentapi.Client
}

func newHarness(t testing.TB, vars map[string]string) *harness {
	t.Helper()
	ctx := context.Background()
	h := &harness{t: t, userID: "user_" + strconv.FormatInt(time.Now().UnixNano(), 36), logs: &lockedBuffer{}}
	t.Cleanup(func() {
		if t.Failed() {
			t.Log(h.logs.String())
		}
	})

	ddb := dynamodblocal.StartForTest(t)
	client, err := ddb.Client(ctx)
	if err != nil {
		t.Fatal(err)
	}
	table := dynamodblocal.TableName(t)
	if err := state.CreateTable(ctx, client, table); err != nil {
		t.Fatal(err)
	}
	h.store = state.New(client, table)

	h.s3, err = s3local.Start(s3local.Config{Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.s3.Close() })
	scfg, err := awsconf.Load(ctx, awsconf.Loopback(h.s3.URL())...)
	if err != nil {
		t.Fatal(err)
	}
	h.bucket = s3bucket.New(s3bucket.NewClient(scfg, s3bucket.Options{UsePathStyle: true}), h.s3.Bucket())

	h.inv = &gateway{store: h.store, connected: make(chan string, 16)}
	h.gw = apigw.New(apigw.Config{WebSocket: &apigw.WebSocketAPI{
		Stage: "test", RouteSelectionExpression: "$request.body.action",
		Routes: map[string]apigw.Route{"$connect": {Function: "connect"}, "$disconnect": {Function: "disconnect"}},
	}}, h.inv, slog.New(slog.DiscardHandler))
	if err := h.gw.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.gw.Close() })
	mcfg, err := awsconf.Load(ctx, awsconf.Loopback(h.gw.ManagementEndpoint())...)
	if err != nil {
		t.Fatal(err)
	}
	h.mgmt = relay.NewClient(mcfg, h.gw.ManagementEndpoint())

	meta := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, `{"Networks":[{"NetworkMode":"awsvpc","IPv4Addresses":["127.0.0.1"]}]}`)
	}))
	t.Cleanup(meta.Close)

	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	h.vars = map[string]string{
		taskenv.UserID: h.userID, taskenv.Table: table, taskenv.Bucket: h.s3.Bucket(),
		taskenv.Prefix: taskenv.UserPrefix(h.userID), taskenv.ManagementEndpoint: h.gw.ManagementEndpoint(),
		agent.EnvMetadataURI: meta.URL, agent.EnvPort: strconv.Itoa(freePort(t)),
		agent.EnvDataDir: t.TempDir(), agent.EnvSleepAfter: "1h", agent.EnvSyncInterval: "1h",
		agent.EnvLeaseTTL: "60s", agent.EnvStopTimeout: "10s", agent.EnvWorkloadGrace: "2s",
		agent.EnvMessageRateLimit: "1000", agent.EnvCommand: self,
	}
	for k, v := range vars {
		h.vars[k] = v
	}
	workloadMode := "demo"
	if m, ok := vars["workload"]; ok {
		workloadMode = m
		delete(h.vars, "workload")
	}
	t.Setenv("SANDGATE_AGENT_TEST_WORKLOAD", workloadMode)
	return h
}

// acquire takes the user's lease as the Lambdas do before RunTask.
func (h *harness) acquire() {
	h.t.Helper()
	l, err := h.store.Acquire(context.Background(), h.userID)
	if err != nil {
		h.t.Fatal(err)
	}
	h.lease = l
}

// agent builds the Agent over store and bucket (the real ones, or wrappers of them).
func (h *harness) agent(store agent.Store, bucket objsync.Bucket) *agent.Agent {
	h.t.Helper()
	h.vars[taskenv.LeaseToken] = h.lease.Token
	h.vars[taskenv.Generation] = strconv.FormatInt(h.lease.Generation, 10)
	env := config.New(config.Map(h.vars))
	cfg := agent.LoadConfig(env)
	if err := env.Err(); err != nil {
		h.t.Fatal(err)
	}
	log := logging.New(h.logs, slog.LevelDebug).With(logging.UserID, h.userID)
	a := agent.New(cfg, store, bucket, h.mgmt, log)
	a.WorkloadOutput = h.logs
	return a
}

// run starts a.Run; stop cancels its context (SIGTERM), result returns its error.
func (h *harness) run(a *agent.Agent) (stop func(), result func() error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	var once sync.Once
	var err error
	result = func() error {
		once.Do(func() {
			select {
			case err = <-done:
			case <-time.After(30 * time.Second):
				h.t.Fatal("Run did not return")
			}
		})
		return err
	}
	h.t.Cleanup(func() { cancel(); result() })
	return cancel, result
}

// running waits for RUNNING and returns the agent's target.
func (h *harness) running() agentapi.Target {
	h.t.Helper()
	var sb *state.Sandbox
	deadline := time.Now().Add(20 * time.Second)
	for {
		var err error
		sb, err = h.store.Get(context.Background(), h.userID)
		if err == nil && sb.State == state.Running {
			return agentapi.Target{Endpoint: sb.Endpoint, Token: sb.GatewayToken, UserID: h.userID}
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("never RUNNING: %v %v", sb, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (h *harness) record() *state.Sandbox {
	h.t.Helper()
	sb, err := h.store.Get(context.Background(), h.userID)
	if err != nil {
		h.t.Fatal(err)
	}
	return sb
}

func freePort(t testing.TB) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// gateway answers $connect as the Connect function does (records the connection),
// optionally holding the handshake open until release is closed.
type gateway struct {
	store     *state.Store
	connected chan string
	hold      atomic.Pointer[chan struct{}]
}

func (g *gateway) Invoke(ctx context.Context, fn string, payload []byte) ([]byte, error) {
	var ev events.APIGatewayWebsocketProxyRequest
	if err := json.Unmarshal(payload, &ev); err != nil {
		return nil, err
	}
	if ev.RequestContext.RouteKey == "$connect" {
		user := ev.QueryStringParameters["userId"]
		if _, err := g.store.AddConnection(ctx, user, ev.RequestContext.ConnectionID); err != nil {
			return nil, err
		}
		g.connected <- ev.RequestContext.ConnectionID
		if hold := g.hold.Load(); hold != nil {
			<-*hold
		}
	}
	return []byte(`{"statusCode":200}`), nil
}

// client is one of the user's WebSocket clients.
type client struct {
	t      testing.TB
	id     string
	frames chan []byte
	mu     sync.Mutex
	c      *websocket.Conn
}

// connect dials the gateway; it returns once the connection is recorded, which is
// before the handshake completes when the gateway holds it.
func (h *harness) connect() *client {
	h.t.Helper()
	cl := &client{t: h.t, frames: make(chan []byte, 1024)}
	dialed := make(chan error, 1)
	go func() {
		c, _, err := websocket.Dial(context.Background(), h.gw.WebSocketURL()+"?userId="+h.userID, nil)
		if err != nil {
			dialed <- err
			return
		}
		cl.mu.Lock()
		cl.c = c
		cl.mu.Unlock()
		dialed <- nil
		for {
			_, b, err := c.Read(context.Background())
			if err != nil {
				close(cl.frames)
				return
			}
			cl.frames <- b
		}
	}()
	select {
	case cl.id = <-h.inv.connected:
	case err := <-dialed:
		h.t.Fatalf("dial: %v", err)
	case <-time.After(10 * time.Second):
		h.t.Fatal("connection never recorded")
	}
	h.t.Cleanup(func() {
		cl.mu.Lock()
		defer cl.mu.Unlock()
		if cl.c != nil {
			cl.c.CloseNow()
		}
	})
	return cl
}

// closed waits until the client's connection is closed.
func (cl *client) closed() {
	cl.t.Helper()
	deadline := time.After(15 * time.Second)
	for {
		select {
		case _, ok := <-cl.frames:
			if !ok {
				return
			}
		case <-deadline:
			cl.t.Fatal("client connection still open")
		}
	}
}

// until reads frames until match accepts one and returns what it read.
func (cl *client) until(match func([]byte) bool) [][]byte {
	cl.t.Helper()
	var seen [][]byte
	deadline := time.After(15 * time.Second)
	for {
		select {
		case b, ok := <-cl.frames:
			if !ok {
				cl.t.Fatalf("client closed; saw %q", seen)
			}
			seen = append(seen, b)
			if match(b) {
				return seen
			}
		case <-deadline:
			cl.t.Fatalf("no matching frame; saw %q", seen)
		}
	}
}

func equals(s string) func([]byte) bool { return func(b []byte) bool { return string(b) == s } }

// spyStore is the real store with some calls counted, held or failed.
type spyStore struct {
	*state.Store
	mu       sync.Mutex
	calls    map[string]int
	reasons  []string
	inbox    chan struct{} // when set, Inbox waits for it to close
	inboxHit chan struct{}
	inboxErr error // when set, Inbox fails with it once inbox is closed
}

func newSpy(s *state.Store) *spyStore { return &spyStore{Store: s, calls: map[string]int{}} }

func (s *spyStore) count(op string) {
	s.mu.Lock()
	s.calls[op]++
	s.mu.Unlock()
}

func (s *spyStore) n(op string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[op]
}

func (s *spyStore) Inbox(ctx context.Context, userID string) ([]state.InboxItem, error) {
	s.count("Inbox")
	if s.inbox != nil {
		close(s.inboxHit)
		<-s.inbox
	}
	if s.inboxErr != nil {
		return nil, s.inboxErr
	}
	return s.Store.Inbox(ctx, userID)
}

func (s *spyStore) MarkStopping(ctx context.Context, l state.Lease) error {
	s.count("MarkStopping")
	return s.Store.MarkStopping(ctx, l)
}

func (s *spyStore) Stop(ctx context.Context, l state.Lease) error {
	s.count("Stop")
	return s.Store.Stop(ctx, l)
}

func (s *spyStore) Release(ctx context.Context, l state.Lease, reason string) error {
	s.count("Release")
	s.mu.Lock()
	s.reasons = append(s.reasons, reason)
	s.mu.Unlock()
	return s.Store.Release(ctx, l, reason)
}

// spyBucket is the real bucket with writes counted and faults on demand.
type spyBucket struct {
	objsync.Bucket
	puts     atomic.Int64
	failPuts atomic.Bool
	listErr  atomic.Pointer[error]
	hangPuts atomic.Bool   // Put waits for its context
	listHold chan struct{} // when set, List waits for it or the context
}

var errInjected = errors.New("injected store failure")

func (b *spyBucket) Put(ctx context.Context, in objsync.PutInput) (string, error) {
	b.puts.Add(1)
	if b.hangPuts.Load() {
		<-ctx.Done()
		return "", ctx.Err()
	}
	if b.failPuts.Load() {
		return "", errInjected
	}
	return b.Bucket.Put(ctx, in)
}

func (b *spyBucket) List(ctx context.Context, prefix, token string) (objsync.Page, error) {
	if p := b.listErr.Load(); p != nil {
		return objsync.Page{}, *p
	}
	if b.listHold != nil {
		select {
		case <-b.listHold:
		case <-ctx.Done():
			return objsync.Page{}, ctx.Err()
		}
	}
	return b.Bucket.List(ctx, prefix, token)
}

type lockedBuffer struct {
	mu sync.Mutex
	b  []byte
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.b = append(l.b, p...)
	return len(p), nil
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return string(l.b)
}

func writeFile(dir, name, content string) error {
	return os.WriteFile(dir+"/"+name, []byte(content), 0o644)
}
