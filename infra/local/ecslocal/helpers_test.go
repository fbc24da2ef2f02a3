package ecslocal_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/service/ecs"
	"github.com/aws/aws-sdk-go-v2/service/ecs/types"

	"github.com/sandgate/sandgate/infra/local/ecslocal"
	"github.com/sandgate/sandgate/infra/local/testkit"
	"github.com/sandgate/sandgate/internal/awsconf"
	"github.com/sandgate/sandgate/internal/logging"
)

// fixture is the test task program, built once per test binary by TestMain.
var fixture string

func TestMain(m *testing.M) {
	if f := os.Getenv(envHelperFixture); f != "" {
		// A copy of this binary run as another user by a test: the fixture is built.
		fixture = f
		os.Exit(m.Run())
	}
	code := testkit.RunWithPrograms(m, map[*string]string{&fixture: "./testdata/task"})
	closeEvaluator()
	os.Exit(code)
}

// outputs collects each task's stdout and stderr by task id.
type outputs struct {
	mu  sync.Mutex
	buf map[string]*testkit.Logs
}

func (o *outputs) writer(info ecslocal.TaskInfo) io.Writer {
	o.mu.Lock()
	defer o.mu.Unlock()
	l := &testkit.Logs{}
	o.buf[info.ID] = l
	return l
}

// given reports whether the task was given an output writer at all.
func (o *outputs) given(id string) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.buf[id] != nil
}

func (o *outputs) of(id string) string {
	o.mu.Lock()
	defer o.mu.Unlock()
	if l := o.buf[id]; l != nil {
		return l.String()
	}
	return ""
}

type testLogWriter struct{ t testing.TB }

func (w testLogWriter) Write(p []byte) (int, error) {
	w.t.Log(string(bytes.TrimSpace(p)))
	return len(p), nil
}

type env struct {
	srv    *ecslocal.Server
	ecs    *ecs.Client
	out    *outputs
	pool   netip.Prefix
	port   string
	defARN string
}

// start starts a server on a random /24 inside 127/8, so concurrent tests (and other test
// binaries) never hand out the same address, and registers the fixture as "sandbox".
func start(t testing.TB, configure ...func(*ecslocal.Server)) *env {
	t.Helper()
	pool := ecslocal.RandomAddressPool()
	e := &env{out: &outputs{buf: map[string]*testkit.Logs{}}, pool: pool, port: freePort(t)}
	root := t.TempDir()
	// Traversable, as a container's root is, so a task may run as another user.
	if err := os.Chmod(filepath.Dir(root), 0o711); err != nil {
		t.Fatal(err)
	}
	s := ecslocal.NewServer(root)
	s.Logger = logging.New(testLogWriter{t}, slog.LevelInfo)
	if _, ok := t.(*testing.B); ok {
		s.Logger = slog.New(slog.DiscardHandler) // benchmarks print every logged line
	}
	s.AddressPool = pool
	s.Clusters = []string{"sandboxes", "other"}
	s.Env = map[string]string{"STACK_ENDPOINT": "http://127.0.0.1:1"}
	s.Output = e.out.writer
	for _, c := range configure {
		c(s)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.Close(ctx); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	e.srv = s
	e.defARN = e.register(t, ecslocal.TaskDefinition{})
	e.ecs = newClient(t, s.Endpoint(), 1)
	return e
}

// register registers the fixture under family "sandbox" with td's fields as overrides.
func (e *env) register(t testing.TB, td ecslocal.TaskDefinition) string {
	t.Helper()
	if td.Family == "" {
		td.Family = "sandbox"
	}
	if td.ContainerName == "" {
		td.ContainerName = "agent"
	}
	if td.Command == nil {
		td.Command = []string{fixture, "-mode", "serve"}
	}
	if td.Environment == nil {
		td.Environment = map[string]string{"PORT": e.port, "FROM_DEFINITION": "definition"}
	}
	if td.StopTimeout == 0 {
		td.StopTimeout = 5 * time.Second
	}
	arn, err := e.srv.RegisterTaskDefinition(td)
	if err != nil {
		t.Fatal(err)
	}
	return arn
}

// newClient returns a real ECS client of the endpoint, making attempts attempts per call
// without backoff.
func newClient(t testing.TB, endpoint string, attempts int) *ecs.Client {
	t.Helper()
	cfg, err := awsconf.Load(context.Background(), awsconf.Loopback(endpoint)...)
	if err != nil {
		t.Fatal(err)
	}
	return ecs.NewFromConfig(cfg, func(o *ecs.Options) {
		o.Retryer = retry.NewStandard(func(so *retry.StandardOptions) {
			so.MaxAttempts = attempts
			so.Backoff = retry.BackoffDelayerFunc(func(int, error) (time.Duration, error) { return 0, nil })
			so.RateLimiter = noRateLimit{}
		})
	})
}

type noRateLimit struct{}

func (noRateLimit) GetToken(context.Context, uint) (func() error, error) {
	return func() error { return nil }, nil
}
func (noRateLimit) AddTokens(uint) error { return nil }

func freePort(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
}

// runInput is a RunTask input as the launcher sends it.
func runInput(token string) *ecs.RunTaskInput {
	return &ecs.RunTaskInput{
		Cluster:        aws.String("sandboxes"),
		TaskDefinition: aws.String("sandbox"),
		ClientToken:    aws.String(token),
		Count:          aws.Int32(1),
		LaunchType:     types.LaunchTypeFargate,
		StartedBy:      aws.String("sandgate"),
		NetworkConfiguration: &types.NetworkConfiguration{AwsvpcConfiguration: &types.AwsVpcConfiguration{
			Subnets: []string{"subnet-0abc"}, SecurityGroups: []string{"sg-0abc"}, AssignPublicIp: types.AssignPublicIpDisabled,
		}},
	}
}

func (e *env) run(t testing.TB, in *ecs.RunTaskInput) types.Task {
	t.Helper()
	out, err := e.ecs.RunTask(context.Background(), in)
	if err != nil {
		t.Fatalf("RunTask: %v", err)
	}
	if len(out.Failures) != 0 || len(out.Tasks) != 1 {
		t.Fatalf("RunTask: %d tasks, failures %+v", len(out.Tasks), out.Failures)
	}
	return out.Tasks[0]
}

func (e *env) describe(t testing.TB, arn string, include ...types.TaskField) types.Task {
	t.Helper()
	out, err := e.ecs.DescribeTasks(context.Background(), &ecs.DescribeTasksInput{
		Cluster: aws.String("sandboxes"), Tasks: []string{arn}, Include: include,
	})
	if err != nil {
		t.Fatalf("DescribeTasks: %v", err)
	}
	if len(out.Tasks) != 1 {
		t.Fatalf("DescribeTasks %s: failures %+v", arn, out.Failures)
	}
	return out.Tasks[0]
}

// waitStatus polls DescribeTasks until the task's lastStatus is status.
func (e *env) waitStatus(t testing.TB, arn, status string) types.Task {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		task := e.describe(t, arn)
		if aws.ToString(task.LastStatus) == status {
			return task
		}
		if time.Now().After(deadline) {
			t.Fatalf("task %s is %s, want %s", arn, aws.ToString(task.LastStatus), status)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

type whoami struct {
	IP       string   `json:"ip"`
	Pid      int      `json:"pid"`
	Cwd      string   `json:"cwd"`
	TaskArn  string   `json:"taskArn"`
	ChildPid int      `json:"childPid"`
	Args     []string `json:"args"`
}

// get fetches path from the task's own server, waiting for it to come up.
func (e *env) get(t testing.TB, ip, path string) (int, []byte) {
	t.Helper()
	url := "http://" + net.JoinHostPort(ip, e.port) + path
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get(url)
		if err == nil {
			defer resp.Body.Close()
			b, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatal(err)
			}
			return resp.StatusCode, b
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s: %v", url, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (e *env) whoami(t testing.TB, ip string) whoami {
	t.Helper()
	code, body := e.get(t, ip, "/whoami")
	var w whoami
	if code != http.StatusOK || json.Unmarshal(body, &w) != nil {
		t.Fatalf("whoami on %s: %d %s", ip, code, body)
	}
	return w
}

func privateIP(task types.Task) string {
	for _, a := range task.Attachments {
		for _, d := range a.Details {
			if aws.ToString(d.Name) == "privateIPv4Address" {
				return aws.ToString(d.Value)
			}
		}
	}
	return ""
}

func taskID(arn string) string { return arn[len(arn)-32:] }

// alive reports whether pid runs. A zombie counts as gone: an orphan's zombie waits for
// whatever reaps orphans here, which need not be a real init.
func alive(pid int) bool {
	if pid <= 0 || syscall.Kill(pid, 0) != nil {
		return false
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 || i+2 >= len(stat) {
		return true
	}
	state := stat[i+2]
	return state != 'Z' && state != 'X'
}

// waitGone waits for pid to exit.
func waitGone(t testing.TB, pid int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for alive(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("process %d is still alive", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// code prints an exit code that may be absent.
func code(c *int32) string {
	if c == nil {
		return "none"
	}
	return strconv.Itoa(int(*c))
}
