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
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sandgate/sandgate/infra/local/ecslocal"
	"github.com/sandgate/sandgate/infra/local/stack"
	"github.com/sandgate/sandgate/infra/local/stacktest"
	"github.com/sandgate/sandgate/infra/local/testkit"
	"github.com/sandgate/sandgate/internal/frames"
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

var (
	build  *stacktest.Build // every function's bootstrap and the agent
	shared *stack.Stack
	output = &syncBuffer{} // every function's and task's output, for failure reports
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
	build, err = stacktest.NewBuild(filepath.Join(dir, "build"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ctx := context.Background()
	shared, err = stack.Start(ctx, stack.Options{
		Template: build.Template(), BuildDir: build.Dir, Agent: build.Agent(),
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
	if pids := stacktest.Leftovers(build.Dir); len(pids) > 0 {
		fmt.Fprintf(os.Stderr, "processes of the test's binaries left behind: %v\n", pids)
		code = 1
	}
	if code != 0 && os.Getenv("SANDGATE_TEST_OUTPUT") != "" {
		fmt.Fprintln(os.Stderr, output.String())
	}
	return code
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
func dial(t *testing.T, user string) *testkit.Client {
	t.Helper()
	c, err := tryDial(t, user)
	if err != nil {
		t.Fatalf("dial as %s: %v", user, err)
	}
	return c
}

func tryDial(t *testing.T, user string) (*testkit.Client, error) {
	t.Helper()
	u, err := shared.SignURL(user)
	if err != nil {
		t.Fatal(err)
	}
	return testkit.DialURL(t, u)
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
func until(t *testing.T, c *testkit.Client, what string, match func([]byte) bool) [][]byte {
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
		if testkit.TaskEnv(r)[taskenv.UserID] == user {
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
