package agent_test

import (
	"context"
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

	"github.com/coder/websocket"

	"github.com/sandgate/sandgate/infra/local/dynamodblocal"
	"github.com/sandgate/sandgate/infra/local/s3local"
	"github.com/sandgate/sandgate/infra/local/testkit"
	"github.com/sandgate/sandgate/internal/agent"
	"github.com/sandgate/sandgate/internal/agentapi"
	"github.com/sandgate/sandgate/internal/config"
	"github.com/sandgate/sandgate/internal/demoworkload"
	"github.com/sandgate/sandgate/internal/logging"
	"github.com/sandgate/sandgate/internal/objsync"
	"github.com/sandgate/sandgate/internal/relay"
	"github.com/sandgate/sandgate/internal/s3bucket"
	"github.com/sandgate/sandgate/internal/state"
	"github.com/sandgate/sandgate/internal/taskenv"
	"github.com/sandgate/sandgate/internal/workload"
)

// The test binary doubles as the workload (testkit.EnvWorkload): the demo, or an echo
// server that exits on a "crash" frame, among others.
func TestMain(m *testing.M) {
	workload.RunLauncher()
	switch os.Getenv(testkit.EnvWorkload) {
	case "demo":
		os.Exit(demoWorkload())
	case testkit.WorkloadCrashy:
		os.Exit(testkit.ServeCrashy())
	case "flusher":
		os.Exit(flusherWorkload())
	case "recorder":
		os.Exit(recorderWorkload())
	case modeProtectHelper:
		os.Exit(protectHelper())
	case modePeek:
		os.Exit(peekWorkload())
	case modeCapBound:
		os.Exit(capBound())
	case modeCapAgent:
		os.Exit(capAgent())
	case modeCapWriter:
		os.Exit(capWriter())
	case modeCaller:
		os.Exit(callerWorkload())
	}
	os.Exit(dynamodblocal.RunTests(m))
}

func demoWorkload() int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	s := &demoworkload.Server{Dir: os.Getenv("SANDGATE_WORKSPACE"), Log: slog.New(slog.DiscardHandler)}
	if err := s.Serve(ctx, testkit.ListenWorkload()); err != nil {
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
	if err := s.Serve(ctx, testkit.ListenWorkload()); err != nil {
		return 1
	}
	time.Sleep(300 * time.Millisecond) // the flush takes a while
	if err := os.WriteFile(dir+"/flushed-on-sigterm.txt", []byte("flushed"), 0o644); err != nil {
		return 1
	}
	return 0
}

// recorderWorkload appends every frame it reads to received.txt in the workspace, one
// a line, and on SIGTERM exits only once it has read envExpect frames
// (the agent kills it after WORKLOAD_GRACE otherwise). The final sync then shows which
// frames the agent wrote to the workload before stopping it, whatever the timing.
func recorderWorkload() int {
	want, _ := strconv.Atoi(os.Getenv(envExpect))
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
	go http.Serve(testkit.ListenWorkload(), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
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

// harness wires an Agent to DynamoDB Local, s3local, the API Gateway emulator (whose
// $connect and $disconnect record the connections), its management API and a task
// metadata endpoint, all on loopback.
type harness struct {
	t      testing.TB
	userID string
	store  *state.Store
	lease  state.Lease
	s3     *s3local.Server
	bucket *s3bucket.Bucket
	gw     *testkit.Gateway
	conns  *testkit.Connections
	mgmt   relay.API
	vars   map[string]string
	logs   *testkit.Logs
	api    agentapi.Client
}

func newHarness(t testing.TB, vars map[string]string) *harness {
	t.Helper()
	h := &harness{t: t, userID: "user_" + strconv.FormatInt(time.Now().UnixNano(), 36), logs: &testkit.Logs{}}
	t.Cleanup(func() {
		if t.Failed() {
			t.Log(h.logs.String())
		}
	})

	db := testkit.NewDB(t)
	h.store = state.New(db.Raw, db.Table)

	s3 := testkit.StartS3(t, s3local.Config{Log: slog.New(slog.DiscardHandler)})
	h.s3, h.bucket = s3.Server, s3.Bucket(s3bucket.Options{UsePathStyle: true})

	h.conns = testkit.NewConnections(h.store)
	h.gw = testkit.StartGateway(t, slog.New(slog.DiscardHandler), h.conns.Routes(), h.conns.Funcs())
	h.mgmt = h.gw.Mgmt

	meta := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, `{"Networks":[{"NetworkMode":"awsvpc","IPv4Addresses":["127.0.0.1"]}]}`)
	}))
	t.Cleanup(meta.Close)

	h.vars = map[string]string{
		taskenv.UserID: h.userID, taskenv.Table: db.Table, taskenv.Bucket: h.s3.Bucket(),
		taskenv.Prefix: taskenv.UserPrefix(h.userID), taskenv.ManagementEndpoint: h.gw.Server.ManagementEndpoint(),
		agent.EnvMetadataURI: meta.URL, agent.EnvPort: strconv.Itoa(freePort(t)),
		agent.EnvDataDir: dataDir(t), agent.EnvSleepAfter: "1h", agent.EnvSyncInterval: "1h",
		agent.EnvLeaseTTL: "60s", agent.EnvStopTimeout: "10s", agent.EnvWorkloadGrace: "2s",
		agent.EnvMessageRateLimit: "1000",
		// The test binary, through the launcher (this binary too), in the mode the
		// declared SANDGATE_TEST_WORKLOAD names: the only way a variable reaches it.
		agent.EnvCommand: "/proc/self/exe", testkit.EnvWorkload: "demo",
		agent.EnvWorkloadEnv: testkit.EnvWorkload + "," + envExpect + ",GORACE", "GORACE": "atexit_sleep_ms=0",
	}
	if os.Geteuid() != 0 {
		// No second uid to give the workload: it runs as ours, isolated by nothing.
		h.vars[agent.EnvWorkloadUID], h.vars[agent.EnvWorkloadGID] = strconv.Itoa(os.Geteuid()), strconv.Itoa(os.Getegid())
	}
	for k, v := range vars {
		h.vars[k] = v
	}
	if m, ok := vars["workload"]; ok {
		h.vars[testkit.EnvWorkload] = m
		delete(h.vars, "workload")
	}
	return h
}

// envExpect tells the recorder workload how many frames to wait for.
const envExpect = "SANDGATE_AGENT_TEST_EXPECT"

// dataDir is a DATA_DIR the workload's uid can reach: t.TempDir's parent is private
// to root, so it is opened for search (the agent makes DATA_DIR searchable itself).
func dataDir(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.Chmod(filepath.Dir(dir), 0o711); err != nil {
		t.Fatal(err)
	}
	return dir
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
	log := h.logs.Logger().With(logging.UserID, h.userID)
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

// runWithWork runs an agent over spies of the store and the bucket until it is
// RUNNING, then writes a file as its workload would.
func (h *harness) runWithWork(name, content string) (spy *spyStore, bucket *spyBucket, stop func(), result func() error) {
	h.t.Helper()
	spy, bucket = newSpy(h.store), &spyBucket{Bucket: h.bucket}
	a := h.agent(spy, bucket)
	stop, result = h.run(a)
	h.running()
	if err := writeFile(a.Config.Workspace(), name, content); err != nil {
		h.t.Fatal(err)
	}
	return spy, bucket, stop, result
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

// conn is one of the user's clients and its connection's id.
type conn struct {
	*testkit.Client
	id string
}

// connect dials the gateway and returns once the connection is recorded.
func (h *harness) connect() conn {
	h.t.Helper()
	c, id := h.conns.Dial(h.t, h.gw, h.userID)
	return conn{Client: c, id: id}
}

// until waits for a frame that matches.
func (c conn) until(match func(string) bool) string {
	return c.Next(testkit.Wait, "frame", match)
}

// closed waits until the client's connection is closed.
func (c conn) closed(t testing.TB) {
	t.Helper()
	select {
	case <-c.Closed():
	case <-time.After(testkit.Wait):
		t.Fatal("client connection still open")
	}
}

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

func (s *spyStore) Abort(ctx context.Context, l state.Lease, reason string) error {
	s.count("Abort")
	s.mu.Lock()
	s.reasons = append(s.reasons, reason)
	s.mu.Unlock()
	return s.Store.Abort(ctx, l, reason)
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

func writeFile(dir, name, content string) error {
	return os.WriteFile(dir+"/"+name, []byte(content), 0o644)
}
