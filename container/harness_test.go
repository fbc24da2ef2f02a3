package main_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ecs"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/coder/websocket"

	"github.com/sandgate/sandgate/infra/local/apigw"
	"github.com/sandgate/sandgate/infra/local/ecslocal"
	"github.com/sandgate/sandgate/infra/local/stack"
	"github.com/sandgate/sandgate/internal/agentapi"
	"github.com/sandgate/sandgate/internal/frames"
	"github.com/sandgate/sandgate/internal/launcher"
	"github.com/sandgate/sandgate/internal/objsync"
	"github.com/sandgate/sandgate/internal/s3bucket"
	"github.com/sandgate/sandgate/internal/state"
)

// The agent binary, built once, and the local stack every test shares: DynamoDB
// Local, S3 (gofakes3) and ECS (tasks are agent processes with the task metadata
// endpoint). Tests isolate themselves by user id.
var (
	agentBin string
	shared   *stack.Stack
	taskLogs = &syncBuffer{}
)

func TestMain(m *testing.M) {
	// The test binary doubles as a workload that crashes on request (SANDBOX_COMMAND).
	if os.Getenv("SANDGATE_TEST_WORKLOAD") == "crashy" {
		os.Exit(crashyWorkload())
	}
	os.Exit(testMain(m))
}

// crashyWorkload greets each connection, echoes its frames, and exits with status 3
// on a "crash" frame.
func crashyWorkload() int {
	ln, err := net.Listen("tcp", net.JoinHostPort(os.Getenv("HOST"), os.Getenv("PORT")))
	if err != nil {
		return 1
	}
	http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
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
			if string(data) == "crash" {
				os.Exit(3)
			}
			c.Write(r.Context(), typ, data)
		}
	}))
	return 1
}

func testMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "sandgate-agent-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	agentBin = filepath.Join(dir, "sandgate-agent")
	build := exec.Command("go", "build", "-o", agentBin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build agent: %v\n%s", err, out)
		return 1
	}
	ctx := context.Background()
	shared, err = stack.Start(ctx, stack.Options{
		Template: "../template.yaml", Agent: agentBin, Root: filepath.Join(dir, "stack"),
		Output: taskLogs, Log: slog.New(slog.NewJSONHandler(io.Discard, nil)),
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "start stack:", err)
		return 1
	}
	code := m.Run()
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := shared.Close(cctx); err != nil {
		fmt.Fprintln(os.Stderr, "close stack:", err)
	}
	if code == 0 {
		if pids := agentProcesses(); len(pids) > 0 {
			fmt.Fprintf(os.Stderr, "processes of the agent binary left behind: %v\n", pids)
			return 1
		}
	}
	return code
}

// agentProcesses returns the pids of live processes running the test's agent binary
// (agents and demo workloads), so tests can prove none is left behind.
func agentProcesses() []int {
	var pids []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		var pid int
		if _, err := fmt.Sscan(e.Name(), &pid); err != nil {
			continue
		}
		exe, err := os.Readlink(filepath.Join("/proc", e.Name(), "exe"))
		if err != nil {
			// An agent is not dumpable (agent.ProtectProcess), so unless the tests run
			// as root its exe link is refused; its command line is not, and the stack
			// starts it by agentBin's path.
			cmdline, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
			exe, _, _ = strings.Cut(string(cmdline), "\x00")
		}
		if exe != agentBin {
			continue
		}
		if b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat")); err == nil {
			// A zombie is dead; its parent just has not reaped it yet.
			if f := strings.Fields(string(b)); len(f) > 2 && f[2] == "Z" {
				continue
			}
		}
		pids = append(pids, pid)
	}
	return pids
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// env is one test's view: its users, its task definition (the template's, with the
// test's timings), a gateway whose clients the test drives, a launcher, and recording
// proxies in front of S3 and DynamoDB through which its tasks reach them.
type env struct {
	t        *testing.T
	gw       *apigw.Server
	inv      *invoker
	launcher *launcher.Launcher
	ecs      *ecs.Client
	s3       *s3.Client
	bucket   *s3bucket.Bucket
	family   string
	api      agentapi.Client
	// s3rec and ddbrec see every request the test's tasks make.
	s3rec, ddbrec *recorder
}

// timings are the variables a test sets in its task definition.
type timings map[string]string

var defaults = timings{
	"SLEEP_AFTER": "60s", "MAX_LIFETIME": "10m", "SYNC_INTERVAL": "1s", "LEASE_TTL": "6s",
	"STOP_TIMEOUT": "15s", "WORKLOAD_GRACE": "2s", "MESSAGE_RATE_LIMIT": "1000", "LOG_LEVEL": "DEBUG",
}

var unsafeChars = regexp.MustCompile(`[^A-Za-z0-9]+`)

// newTemplateEnv is newEnv with the stack's own sandbox task definition, exactly as
// template.yaml declares it (its timings, no recording proxies).
func newTemplateEnv(t *testing.T) *env {
	t.Helper()
	e := newEnv(t, nil)
	e.launcher.Config.TaskDefinition = shared.TaskDefinition
	return e
}

func newEnv(t *testing.T, over timings) *env {
	t.Helper()
	e := &env{t: t, inv: &invoker{store: shared.Store, tags: map[string]chan string{}, users: map[string]string{}}}
	e.gw = apigw.New(apigw.Config{WebSocket: &apigw.WebSocketAPI{
		Stage: "test", RouteSelectionExpression: "$request.body.action",
		Routes: map[string]apigw.Route{"$connect": {Function: "connect"}, "$disconnect": {Function: "disconnect"}},
	}}, e.inv, slog.New(slog.NewJSONHandler(io.Discard, nil)))
	e.gw.SequentialDispatch = true
	if err := e.gw.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.gw.Close() })

	e.s3rec = newRecorder(t, shared.Endpoints["AWS_ENDPOINT_URL_S3"])
	e.ddbrec = newRecorder(t, shared.Endpoints["AWS_ENDPOINT_URL_DYNAMODB"])

	// The template's container environment, the data volume mapped into the task's
	// directory as the stack does, the recording endpoints, and the test's timings.
	td := shared.Template.TaskDefinitions["SandboxTaskDefinition"]
	c := td.Containers[0]
	vars := map[string]string{}
	for k, v := range c.Environment {
		vars[k] = v
	}
	vars["DATA_DIR"] = "mnt/data"
	vars["AWS_ENDPOINT_URL_S3"] = e.s3rec.url
	vars["AWS_ENDPOINT_URL_DYNAMODB"] = e.ddbrec.url
	for k, v := range defaults {
		vars[k] = v
	}
	for k, v := range over {
		if v == "" {
			delete(vars, k)
		} else {
			vars[k] = v
		}
	}
	e.family = "sandbox-" + strings.ToLower(unsafeChars.ReplaceAllString(t.Name(), "-"))
	if len(e.family) > 200 {
		e.family = e.family[:200]
	}
	if _, err := shared.ECS.RegisterTaskDefinition(ecslocal.TaskDefinition{
		Family: e.family, ContainerName: c.Name, Command: []string{agentBin},
		Environment: vars, Port: c.Ports[0], StopTimeout: 30 * time.Second,
	}); err != nil {
		t.Fatal(err)
	}
	e.ecs = ecs.NewFromConfig(shared.AWS, func(o *ecs.Options) {
		o.BaseEndpoint = aws.String(shared.Endpoints["AWS_ENDPOINT_URL_ECS"])
	})
	e.launcher = launcher.New(e.ecs, launcher.Config{
		Cluster: shared.Cluster, TaskDefinition: e.family, Container: c.Name,
		Subnets: []string{"subnet-0local"}, Table: shared.Table, Bucket: shared.Bucket,
		ManagementEndpoint: e.gw.ManagementEndpoint(),
	}, slog.New(slog.NewJSONHandler(io.Discard, nil)))
	e.s3 = s3.NewFromConfig(shared.AWS, func(o *s3.Options) {
		o.BaseEndpoint = aws.String(shared.Endpoints["AWS_ENDPOINT_URL_S3"])
		o.UsePathStyle = true
	})
	e.bucket = s3bucket.New(e.s3, shared.Bucket)
	return e
}

// user returns a user id unique to this test and run.
func (e *env) user(name string) string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return "user_" + name + hex.EncodeToString(b[:])
}

// sandbox is one launched task.
type sandbox struct {
	e      *env
	userID string
	lease  state.Lease
	arn    string
}

// start takes the user's lease and launches the agent as the Lambdas do.
func (e *env) start(userID string) *sandbox {
	e.t.Helper()
	ctx := context.Background()
	l, err := shared.Store.Acquire(ctx, userID)
	if err != nil {
		e.t.Fatal(err)
	}
	return e.launch(userID, l)
}

func (e *env) launch(userID string, l state.Lease) *sandbox {
	e.t.Helper()
	ctx := context.Background()
	arn, err := e.launcher.Launch(ctx, launcher.Spec{UserID: userID, LeaseToken: l.Token, Generation: l.Generation})
	if err != nil {
		e.t.Fatal(err)
	}
	if err := shared.Store.SetTask(ctx, l, arn); err != nil {
		e.t.Fatal(err)
	}
	sb := &sandbox{e: e, userID: userID, lease: l, arn: arn}
	e.t.Cleanup(func() {
		if e.t.Failed() || os.Getenv("SANDGATE_TEST_LOGS") != "" {
			sb.dumpLogs()
		}
		_ = e.launcher.Stop(context.Background(), arn, "test over")
	})
	return sb
}

// dumpLogs prints the task's output (the agent's JSON lines and the workload's).
func (sb *sandbox) dumpLogs() {
	id := sb.arn[strings.LastIndex(sb.arn, "/")+1:]
	if len(id) < 8 {
		return
	}
	prefix := "[task " + id[:8] + "] "
	for _, line := range strings.Split(taskLogs.String(), "\n") {
		if strings.HasPrefix(line, prefix) {
			sb.e.t.Log(line)
		}
	}
}

// logTime returns the time of the task's first log line with message msg.
func (sb *sandbox) logTime(msg string) time.Time {
	id := sb.arn[strings.LastIndex(sb.arn, "/")+1:]
	prefix := "[task " + id[:8] + "] "
	for _, line := range strings.Split(taskLogs.String(), "\n") {
		rest, ok := strings.CutPrefix(line, prefix)
		if !ok {
			continue
		}
		var l struct {
			Time time.Time `json:"time"`
			Msg  string    `json:"msg"`
		}
		if json.Unmarshal([]byte(rest), &l) == nil && l.Msg == msg {
			return l.Time
		}
	}
	return time.Time{}
}

func (sb *sandbox) info() ecslocal.TaskInfo {
	for _, ti := range shared.ECS.Tasks() {
		if ti.ARN == sb.arn {
			return ti
		}
	}
	return ecslocal.TaskInfo{}
}

// waitState waits until the user's record is in st and returns it.
func (sb *sandbox) waitState(st state.State) *state.Sandbox {
	sb.e.t.Helper()
	var rec *state.Sandbox
	eventually(sb.e.t, 20*time.Second, func() bool {
		var err error
		rec, err = shared.Store.Get(context.Background(), sb.userID)
		return err == nil && rec.State == st
	}, func() string { return fmt.Sprintf("%s never became %s; last %v", sb.userID, st, rec) })
	return rec
}

// target is how the Lambdas reach the running agent.
func (sb *sandbox) target() agentapi.Target {
	rec := sb.waitState(state.Running)
	return agentapi.Target{Endpoint: rec.Endpoint, Token: rec.GatewayToken, UserID: sb.userID}
}

// exitCode waits for the task to stop and returns its container's exit code.
func (sb *sandbox) exitCode(within time.Duration) int {
	sb.e.t.Helper()
	var code *int32
	var last string
	eventually(sb.e.t, within, func() bool {
		out, err := sb.e.ecs.DescribeTasks(context.Background(), &ecs.DescribeTasksInput{
			Cluster: aws.String(shared.Cluster), Tasks: []string{sb.arn},
		})
		if err != nil || len(out.Tasks) == 0 {
			return false
		}
		t := out.Tasks[0]
		last = aws.ToString(t.LastStatus)
		if last != "STOPPED" || len(t.Containers) == 0 {
			return false
		}
		code = t.Containers[0].ExitCode
		return true
	}, func() string { return "task still " + last })
	if code == nil {
		sb.e.t.Fatal("stopped task has no exit code")
	}
	return int(*code)
}

// stop asks ECS to stop the task: SIGTERM, as a deploy or StopTask does.
func (sb *sandbox) stop() {
	sb.e.t.Helper()
	if err := sb.e.launcher.Stop(context.Background(), sb.arn, "test"); err != nil {
		sb.e.t.Fatal(err)
	}
}

// signal sends sig to the agent process itself.
func (sb *sandbox) signal(sig syscall.Signal) {
	sb.e.t.Helper()
	pid := sb.info().Pid
	if pid == 0 {
		sb.e.t.Fatal("task has no process")
	}
	if err := syscall.Kill(pid, sig); err != nil {
		sb.e.t.Fatal(err)
	}
}

// object returns the bytes stored for the user's path, or nil when absent.
func (e *env) object(userID, rel string) []byte {
	e.t.Helper()
	_, body, err := e.bucket.Get(context.Background(), "users/"+userID+"/"+objsync.FilesDir+rel)
	if errors.Is(err, objsync.ErrNotFound) {
		return nil
	}
	if err != nil {
		e.t.Fatal(err)
	}
	defer body.Close()
	b, err := io.ReadAll(body)
	if err != nil {
		e.t.Fatal(err)
	}
	return b
}

// keys lists the user's stored keys.
func (e *env) keys(userID string) []string {
	e.t.Helper()
	var keys []string
	token := ""
	for {
		page, err := e.bucket.List(context.Background(), "users/"+userID+"/", token)
		if err != nil {
			e.t.Fatal(err)
		}
		for _, o := range page.Objects {
			keys = append(keys, o.Key)
		}
		if token = page.Next; token == "" {
			return keys
		}
	}
}

// marker returns the user's .last-sync marker, or nil.
func (e *env) marker(userID string) *objsync.Marker {
	e.t.Helper()
	_, body, err := e.bucket.Get(context.Background(), objsync.MarkerKey("users/"+userID+"/"))
	if errors.Is(err, objsync.ErrNotFound) {
		return nil
	}
	if err != nil {
		e.t.Fatal(err)
	}
	defer body.Close()
	var m objsync.Marker
	if err := json.NewDecoder(body).Decode(&m); err != nil {
		e.t.Fatal(err)
	}
	return &m
}

// eventually polls cond until it holds or within passes: for state held in other
// processes (DynamoDB, the bucket, ECS) that announce no event the test could await.
func eventually(t *testing.T, within time.Duration, cond func() bool, msg func() string) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal(msg())
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// invoker stands in for the Connect and Disconnect functions behind the test's
// gateway: it records and removes connections as they do, and reports each
// connection's id under the tag its client dialled with. Tests deliver frames to the
// agent themselves, as the Message function would, to control their order.
type invoker struct {
	store *state.Store

	mu    sync.Mutex
	tags  map[string]chan string
	users map[string]string // connection id → user id
}

func (inv *invoker) tag(name string) chan string {
	inv.mu.Lock()
	defer inv.mu.Unlock()
	ch := inv.tags[name]
	if ch == nil {
		ch = make(chan string, 1)
		inv.tags[name] = ch
	}
	return ch
}

func (inv *invoker) Invoke(ctx context.Context, fn string, payload []byte) ([]byte, error) {
	var ev events.APIGatewayWebsocketProxyRequest
	if err := json.Unmarshal(payload, &ev); err != nil {
		return nil, err
	}
	id := ev.RequestContext.ConnectionID
	user := ev.QueryStringParameters["userId"]
	switch ev.RequestContext.RouteKey {
	case "$connect":
		if _, err := inv.store.AddConnection(ctx, user, id); err != nil {
			return nil, err
		}
		inv.mu.Lock()
		inv.users[id] = user
		inv.mu.Unlock()
		inv.tag(ev.QueryStringParameters["tag"]) <- id
	case "$disconnect":
		inv.mu.Lock()
		user = inv.users[id]
		inv.mu.Unlock()
		if user != "" {
			if err := inv.store.RemoveConnection(ctx, user, id); err != nil {
				return nil, err
			}
		}
	}
	return []byte(`{"statusCode":200}`), nil
}

// client is a user's WebSocket client connected through the test's gateway.
type client struct {
	t      *testing.T
	c      *websocket.Conn
	id     string
	userID string
	frames chan []byte
}

// connect opens a client for userID and waits until its connection is recorded.
func (e *env) connect(userID string) *client {
	e.t.Helper()
	var b [4]byte
	_, _ = rand.Read(b[:])
	tag := hex.EncodeToString(b[:])
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, e.gw.WebSocketURL()+"?userId="+userID+"&tag="+tag, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	c.SetReadLimit(1 << 20)
	cl := &client{t: e.t, c: c, userID: userID, frames: make(chan []byte, 4096)}
	select {
	case cl.id = <-e.inv.tag(tag):
	case <-ctx.Done():
		e.t.Fatal("connection never recorded")
	}
	go func() {
		defer close(cl.frames)
		for {
			_, data, err := c.Read(context.Background())
			if err != nil {
				return
			}
			cl.frames <- data
		}
	}()
	e.t.Cleanup(func() { c.CloseNow() })
	return cl
}

// next returns the next frame, failing the test after within.
func (cl *client) next(within time.Duration) []byte {
	cl.t.Helper()
	select {
	case f, ok := <-cl.frames:
		if !ok {
			cl.t.Fatal("client connection closed")
		}
		return f
	case <-time.After(within):
		cl.t.Fatalf("no frame within %s", within)
		return nil
	}
}

// until returns frames read until match accepts one (included), failing after within.
func (cl *client) until(within time.Duration, match func([]byte) bool) [][]byte {
	cl.t.Helper()
	deadline := time.Now().Add(within)
	var seen [][]byte
	for {
		left := time.Until(deadline)
		if left <= 0 {
			cl.t.Fatalf("no matching frame within %s; saw %q", within, seen)
		}
		f := cl.next(left)
		seen = append(seen, f)
		if match(f) {
			return seen
		}
	}
}

// status matches a platform status frame in state st.
func status(st string) func([]byte) bool {
	return func(b []byte) bool {
		var f frames.Frame
		return json.Unmarshal(b, &f) == nil && f.Type == frames.TypeStatus && f.State == st
	}
}

// jsonType matches a workload frame of the given "type".
func jsonType(typ string) func([]byte) bool {
	return func(b []byte) bool {
		var f struct {
			Type string `json:"type"`
		}
		return json.Unmarshal(b, &f) == nil && f.Type == typ
	}
}

// recorder is a reverse proxy in front of an emulator that records each request's
// method and operation (DynamoDB's X-Amz-Target, or the S3 path) and can cut the
// network: while cut, connections are dropped without an answer.
type recorder struct {
	url string
	cut atomic.Bool

	mu   sync.Mutex
	reqs []recorded
}

type recorded struct {
	at     time.Time
	method string
	op     string
}

func newRecorder(t *testing.T, target string) *recorder {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	r := &recorder{}
	proxy := httputil.NewSingleHostReverseProxy(u)
	proxy.ErrorLog = log.New(io.Discard, "", 0) // a cut or a killed task's request is expected
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if r.cut.Load() {
			if hj, ok := w.(http.Hijacker); ok {
				if c, _, err := hj.Hijack(); err == nil {
					c.Close()
					return
				}
			}
			http.Error(w, "cut", http.StatusServiceUnavailable)
			return
		}
		op := req.Header.Get("X-Amz-Target")
		if op == "" {
			op = req.URL.Path
		}
		r.mu.Lock()
		r.reqs = append(r.reqs, recorded{at: time.Now(), method: req.Method, op: op})
		r.mu.Unlock()
		proxy.ServeHTTP(w, req)
	}))
	t.Cleanup(srv.Close)
	r.url = srv.URL
	return r
}

// writes returns the recorded writes since since: S3 PUT, POST and DELETE requests,
// DynamoDB calls other than reads.
func (r *recorder) writes(since time.Time) []recorded {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []recorded
	for _, q := range r.reqs {
		if q.at.Before(since) {
			continue
		}
		if strings.HasPrefix(q.op, "DynamoDB_") {
			switch strings.TrimPrefix(q.op, "DynamoDB_20120810.") {
			case "GetItem", "Query", "Scan", "BatchGetItem", "DescribeTable":
				continue
			}
			out = append(out, q)
			continue
		}
		if q.method != http.MethodGet && q.method != http.MethodHead {
			out = append(out, q)
		}
	}
	return out
}
