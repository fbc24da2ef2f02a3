package e2e_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/sandgate/sandgate/infra/local/stack"
	"github.com/sandgate/sandgate/internal/frames"
	"github.com/sandgate/sandgate/internal/state"
)

// buildDir holds every function's bootstrap and the agent, built once per test binary
// exactly as make build-local builds them.
var buildDir string

// output collects every process's output; a failing test prints its tail.
var output = &lockedBuffer{}

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "sandgate-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	buildDir = dir
	code := func() int {
		if err := build(dir); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		return m.Run()
	}()
	os.RemoveAll(dir)
	os.Exit(code)
}

func build(dir string) error {
	fns, err := filepath.Glob("../../../functions/*/main.go")
	if err != nil || len(fns) == 0 {
		return fmt.Errorf("no functions found: %v", err)
	}
	type target struct{ out, pkg string }
	targets := []target{{filepath.Join(dir, "agent"), "../../../container"}}
	for _, f := range fns {
		name := filepath.Base(filepath.Dir(f))
		targets = append(targets, target{filepath.Join(dir, name, "bootstrap"), "../../../functions/" + name})
	}
	args := []string{"build", "-tags", "lambda.norpc", "-o"}
	for _, t := range targets {
		cmd := exec.Command("go", append(args, t.out, t.pkg)...)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("build %s: %v\n%s", t.pkg, err, out)
		}
	}
	return nil
}

// Short intervals, so idle stops, lease expiry and syncs happen within a test.
var fast = map[string]string{
	"SLEEP_AFTER":   "3s",
	"LEASE_TTL":     "15s",
	"SYNC_INTERVAL": "1s",
}

// start runs a stack for one test with the template, the built functions and agent.
func start(t *testing.T, mutate func(*stack.Options)) *stack.Stack {
	t.Helper()
	o := stack.Options{
		Template: "../../../template.yaml", BuildDir: buildDir, Agent: filepath.Join(buildDir, "agent"),
		Functions: true, Overrides: fast, Output: output,
		Log: slog.New(slog.NewJSONHandler(output, &slog.HandlerOptions{Level: slog.LevelWarn})),
	}
	if mutate != nil {
		mutate(&o)
	}
	if os.Getenv("E2E_DEBUG") != "" {
		o.Overrides = maps.Clone(o.Overrides)
		o.Overrides["LOG_LEVEL"] = "DEBUG"
	}
	s, err := stack.Start(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("process output (tail):\n%s", output.tail(6000))
			if path := os.Getenv("E2E_OUTPUT"); path != "" {
				os.WriteFile(path, []byte(output.tail(1<<30)), 0o644)
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		if err := s.Close(ctx); err != nil {
			t.Errorf("close stack: %v", err)
		}
	})
	return s
}

// client is one browser-like WebSocket client of a user.
type client struct {
	t      *testing.T
	user   string
	c      *websocket.Conn
	frames chan string
	done   chan struct{}
	// pending holds frames that arrived but no wait has matched yet, in arrival order:
	// a status frame and a workload reply may arrive in either order.
	pending []string
}

func dial(t *testing.T, s *stack.Stack, user string) *client {
	t.Helper()
	url, err := s.SignURL(user)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, url, nil)
	if err != nil {
		t.Fatalf("dial as %s: %v", user, err)
	}
	cl := &client{t: t, user: user, c: c, frames: make(chan string, 1024), done: make(chan struct{})}
	go func() {
		defer close(cl.done)
		for {
			_, b, err := c.Read(context.Background())
			if err != nil {
				return
			}
			cl.frames <- string(b)
		}
	}()
	t.Cleanup(func() { c.CloseNow(); <-cl.done })
	return cl
}

func (c *client) send(frame string) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.c.Write(ctx, websocket.MessageText, []byte(frame)); err != nil {
		c.t.Fatalf("%s send: %v", c.user, err)
	}
}

// next returns the earliest frame matching match, failing after timeout; frames that
// do not match stay pending for later waits.
func (c *client) next(timeout time.Duration, what string, match func(string) bool) string {
	c.t.Helper()
	for i, f := range c.pending {
		if match(f) {
			c.pending = append(c.pending[:i:i], c.pending[i+1:]...)
			return f
		}
	}
	deadline := time.After(timeout)
	for {
		select {
		case f := <-c.frames:
			if match(f) {
				return f
			}
			c.pending = append(c.pending, f)
		case <-c.done:
			c.t.Fatalf("%s: connection closed while waiting for %s", c.user, what)
		case <-deadline:
			c.t.Fatalf("%s: no %s within %s", c.user, what, timeout)
		}
	}
}

// status waits for a sandgate.status frame with state.
func (c *client) status(state string, timeout time.Duration) {
	c.t.Helper()
	c.next(timeout, "status "+state, func(f string) bool {
		var fr frames.Frame
		return json.Unmarshal([]byte(f), &fr) == nil && fr.Type == frames.TypeStatus && fr.State == state
	})
}

// errorFrame waits for a sandgate.error frame and returns its reason.
func (c *client) errorFrame(timeout time.Duration) string {
	c.t.Helper()
	f := c.next(timeout, "error frame", func(f string) bool {
		var fr frames.Frame
		return json.Unmarshal([]byte(f), &fr) == nil && fr.Type == frames.TypeError
	})
	var fr frames.Frame
	json.Unmarshal([]byte(f), &fr)
	return fr.Reason
}

// jsonFrame waits for a workload frame of the demo with the given type.
func (c *client) jsonFrame(typ string, timeout time.Duration) map[string]any {
	c.t.Helper()
	f := c.next(timeout, typ+" frame", func(f string) bool {
		var m map[string]any
		return json.Unmarshal([]byte(f), &m) == nil && m["type"] == typ
	})
	var m map[string]any
	json.Unmarshal([]byte(f), &m)
	return m
}

// notes asks the demo workload for the user's notes.
func (c *client) notes(timeout time.Duration) []string {
	c.t.Helper()
	c.send(`{"type":"notes"}`)
	m := c.jsonFrame("notes", timeout)
	var out []string
	for _, n := range m["notes"].([]any) {
		out = append(out, n.(string))
	}
	return out
}

// waitState polls the user's sandbox record until pred holds.
func waitState(t *testing.T, s *stack.Stack, user string, timeout time.Duration, what string, pred func(*state.Sandbox) bool) *state.Sandbox {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		sb, err := s.Store.Get(context.Background(), user)
		if err == nil && pred(sb) {
			return sb
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: sandbox never %s (last: %+v, %v)", user, what, sb, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

type lockedBuffer struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) tail(n int) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.buf.String()
	if len(s) > n {
		s = s[len(s)-n:]
	}
	return s
}

func quietLog() *slog.Logger { return slog.New(slog.NewJSONHandler(io.Discard, nil)) }
