package functions_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sandgate/sandgate/infra/local/ecslocal"
	"github.com/sandgate/sandgate/infra/local/stack"
	"github.com/sandgate/sandgate/internal/frames"
	"github.com/sandgate/sandgate/internal/sandbox/sandboxtest"
	"github.com/sandgate/sandgate/internal/taskenv"
)

// Test-wide settings of the shared stack.
const (
	// launchDelay rehearses Fargate's cold start; long enough that a client's first
	// frames are handled while the sandbox starts.
	launchDelay = 1500 * time.Millisecond
	// rateLimit is the agent's per-user frames per second (burst twice that).
	rateLimit = 5
)

// names are the functions under functions/, each built into <build>/<name>/bootstrap.
var names = []string{"authorize", "connect", "message", "disconnect", "status", "prewarm", "cleanup"}

var (
	binDir   string // the built binaries
	buildDir string // <name>/bootstrap for the stack
	shared   *stack.Stack
	output   = &syncBuffer{} // every function's and task's output, for failure reports
)

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

func TestMain(m *testing.M) { os.Exit(testMain(m)) }

func testMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "sandgate-functions-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	binDir, buildDir = filepath.Join(dir, "bin"), filepath.Join(dir, "build")
	// One go build for all: the packages compile in parallel and share the cache.
	build := exec.Command("go", "build", "-tags", "lambda.norpc", "-o", binDir+"/", "./...", "../container")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build functions and agent: %v\n%s", err, out)
		return 1
	}
	for _, n := range names {
		if err := os.MkdirAll(filepath.Join(buildDir, n), 0o755); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		if err := os.Rename(filepath.Join(binDir, n), filepath.Join(buildDir, n, "bootstrap")); err != nil {
			fmt.Fprintln(os.Stderr, "function binary:", err)
			return 1
		}
	}
	ctx := context.Background()
	shared, err = stack.Start(ctx, stack.Options{
		Template: "../template.yaml", BuildDir: buildDir, Agent: filepath.Join(binDir, "container"),
		Root: filepath.Join(dir, "stack"), Functions: true, LaunchDelay: launchDelay,
		// Frames of one connection are handled in the order sent, so order can be asserted
		// (API Gateway gives no such promise; see docs/ARCHITECTURE.md).
		SequentialDispatch: true,
		Params:             map[string]string{"RetentionDays": "1"},
		Overrides:          map[string]string{"MESSAGE_RATE_LIMIT": fmt.Sprint(rateLimit), "SYNC_INTERVAL": "1s", "LOG_LEVEL": "DEBUG"},
		Output:             output, Log: slog.New(slog.NewJSONHandler(io.Discard, nil)),
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "start stack:", err)
		return 1
	}
	code := m.Run()
	cctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if err := shared.Close(cctx); err != nil {
		fmt.Fprintln(os.Stderr, "close stack:", err)
		code = 1
	}
	if pids := leftovers(); len(pids) > 0 {
		fmt.Fprintf(os.Stderr, "processes of the test's binaries left behind: %v\n", pids)
		code = 1
	}
	if code != 0 && os.Getenv("SANDGATE_TEST_OUTPUT") != "" {
		fmt.Fprintln(os.Stderr, output.String())
	}
	return code
}

// leftovers returns the live processes running one of the test's binaries.
func leftovers() []string {
	var out []string
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		exe, err := os.Readlink(filepath.Join("/proc", e.Name(), "exe"))
		if err != nil || !strings.HasPrefix(exe, filepath.Dir(binDir)+"/") {
			continue
		}
		if b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat")); err == nil {
			if f := strings.Fields(string(b)); len(f) > 2 && f[2] == "Z" {
				continue // dead, not yet reaped by its parent
			}
		}
		out = append(out, e.Name()+":"+exe)
	}
	return out
}

// dump reports the stack's process output with a test failure, when asked to.
func dump(t *testing.T) {
	t.Helper()
	if t.Failed() {
		t.Logf("process output (tail):\n%s", tail(output.String(), 200))
	}
}

func tail(s string, lines int) string {
	l := strings.Split(s, "\n")
	if len(l) > lines {
		l = l[len(l)-lines:]
	}
	return strings.Join(l, "\n")
}

// dial connects as user through the stack's gateway.
func dial(t *testing.T, user string) *sandboxtest.Client {
	t.Helper()
	c, err := tryDial(t, user)
	if err != nil {
		t.Fatalf("dial as %s: %v", user, err)
	}
	return c
}

func tryDial(t *testing.T, user string) (*sandboxtest.Client, error) {
	t.Helper()
	u, err := shared.SignURL(user)
	if err != nil {
		t.Fatal(err)
	}
	return sandboxtest.DialURL(t, u)
}

// frame decodes a platform frame, or returns ok false for a workload's frame.
func platform(b []byte) (frames.Frame, bool) {
	var f frames.Frame
	if !frames.IsPlatform(b) || json.Unmarshal(b, &f) != nil {
		return frames.Frame{}, false
	}
	return f, true
}

// until reads messages until one satisfies match, and returns those read before it.
func until(t *testing.T, c *sandboxtest.Client, what string, match func([]byte) bool) [][]byte {
	t.Helper()
	var before [][]byte
	for {
		b := c.Next()
		if match(b) {
			return before
		}
		before = append(before, b)
		if len(before) > 10000 {
			t.Fatalf("no %s among %d messages", what, len(before))
		}
	}
}

func isStatus(state string) func([]byte) bool {
	return func(b []byte) bool {
		f, ok := platform(b)
		return ok && f.Type == frames.TypeStatus && f.State == state
	}
}

// runTasks returns the RunTask calls made for user.
func runTasks(user string) []*ecslocal.RunTaskRequest {
	var out []*ecslocal.RunTaskRequest
	for _, r := range shared.ECS.RunTaskRequests() {
		if sandboxtest.TaskEnv(r)[taskenv.UserID] == user {
			out = append(out, r)
		}
	}
	return out
}

// taskOf returns the live ECS task the user's record names, if any.
func taskOf(t *testing.T, user string) (ecslocal.TaskInfo, bool) {
	t.Helper()
	sb, err := shared.Store.Get(context.Background(), user)
	if err != nil {
		return ecslocal.TaskInfo{}, false
	}
	for _, ti := range shared.ECS.Tasks() {
		if ti.ARN == sb.TaskARN {
			return ti, true
		}
	}
	return ecslocal.TaskInfo{}, false
}

// httpAPI calls the stack's HTTP API with a query signed for user (or the raw query).
func httpAPI(t *testing.T, method, path, rawQuery string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(method, shared.Gateway.HTTPURL()+path+"?"+rawQuery, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("%s %s: %d %q is not JSON", method, path, resp.StatusCode, b)
	}
	return resp.StatusCode, m
}

func signedQuery(t *testing.T, user string) string {
	t.Helper()
	u, err := shared.SignURL(user)
	if err != nil {
		t.Fatal(err)
	}
	_, q, _ := strings.Cut(u, "?")
	return q
}
