package agent_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/sandgate/sandgate/infra/local/testkit"
	"github.com/sandgate/sandgate/internal/agent"
	"github.com/sandgate/sandgate/internal/apiproxy"
	"github.com/sandgate/sandgate/internal/config"
	"github.com/sandgate/sandgate/internal/state"
)

// modeCaller is a workload that calls its upstream through the agent's proxy and tells
// the agent it is busy, on its client's word:
//
//	call <path>   POST the proxy's <path> with a placeholder key; answers "status <code> <body>"
//	env           answers its environment, one variable a line
//	beat <n>      POSTs the activity endpoint n times, 100 ms apart, then writes beats-done
//	              in the workspace; answers "beating" at once
const modeCaller = "caller"

func callerWorkload() int {
	return serveText(func(ctx context.Context, frame string) string {
		cmd, arg, _ := strings.Cut(frame, " ")
		switch cmd {
		case "call":
			req, _ := http.NewRequestWithContext(ctx, "POST", os.Getenv("SANDGATE_UPSTREAM_MODEL_URL")+arg, strings.NewReader(`{}`))
			req.Header.Set("X-Api-Key", "placeholder")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return "error " + err.Error()
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			return fmt.Sprintf("status %d %s", resp.StatusCode, b)
		case "env":
			return strings.Join(os.Environ(), "\n")
		case "beat":
			n, _ := strconv.Atoi(arg)
			go func() {
				for range n {
					resp, err := http.Post(os.Getenv("SANDGATE_ACTIVITY_URL"), "", nil)
					if err != nil || resp.StatusCode != http.StatusNoContent {
						os.Exit(4)
					}
					resp.Body.Close()
					time.Sleep(100 * time.Millisecond)
				}
				_ = os.WriteFile(os.Getenv("SANDGATE_WORKSPACE")+"/beats-done", []byte(strconv.Itoa(n)), 0o644)
			}()
			return "beating"
		}
		return frame
	})
}

// serveText serves one WebSocket per client, answering each text frame with answer's.
func serveText(answer func(ctx context.Context, frame string) string) int {
	_ = http.Serve(testkit.ListenWorkload(), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
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
			go func() {
				_ = c.Write(r.Context(), websocket.MessageText, []byte(answer(r.Context(), string(data))))
			}()
		}
	}))
	return 1
}

const upstreamKey = "sk-agent-test-0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e"

// modelStub is a TLS upstream that wants the key, and holds an answer while hold is
// set.
type modelStub struct {
	*httptest.Server
	mu      sync.Mutex
	keys    []string
	hold    chan struct{}
	release sync.Once
	entry   chan struct{} // receives when a held call arrives
}

// letGo answers the held calls.
func (m *modelStub) letGo() {
	m.release.Do(func() {
		if m.hold != nil {
			close(m.hold)
		}
	})
}

func startModelStub(t *testing.T) *modelStub {
	m := &modelStub{entry: make(chan struct{}, 1)}
	m.Server = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		m.mu.Lock()
		m.keys = append(m.keys, r.Header.Get("X-Api-Key"))
		hold := m.hold
		m.mu.Unlock()
		if r.Header.Get("X-Api-Key") != upstreamKey {
			http.Error(w, `{"type":"error"}`, http.StatusUnauthorized)
			return
		}
		if hold != nil && r.URL.Path == "/v1/hold" {
			m.entry <- struct{}{}
			<-hold
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"answer":"ok","echo":%q,"usage":{"input_tokens":1,"output_tokens":2}}`, r.Header.Get("X-Api-Key"))
	}))
	t.Cleanup(func() { m.letGo(); m.Close() })
	return m
}

func upstreamVars(m *modelStub, sleepAfter string) map[string]string {
	return map[string]string{
		"workload": modeCaller, apiproxy.EnvUpstreams: "model",
		"UPSTREAM_MODEL_URL": m.URL, "UPSTREAM_MODEL_KEY": upstreamKey, "UPSTREAM_MODEL_HEADER": "x-api-key",
		agent.EnvSleepAfter: sleepAfter,
	}
}

// The workload reaches its upstream through the agent's proxy, which adds the team's
// key: the upstream gets it, the workload holds it nowhere — not in its environment,
// not in the answer (an echo is scrubbed) — and its environment says where the proxy
// and the activity endpoint are.
func TestAgent_Upstream_WorkloadCallsWithoutTheKey(t *testing.T) {
	m := startModelStub(t)
	h := newHarness(t, upstreamVars(m, "1h"))
	h.acquire()
	a := h.agent(h.store, h.bucket)
	a.UpstreamTransport = m.Client().Transport
	h.run(a)
	target := h.running()
	c := h.connect()
	send := func(frame string) {
		if err := h.api.Deliver(context.Background(), target, c.id, []byte(frame)); err != nil {
			t.Fatal(err)
		}
	}
	send("call /v1/messages")
	answer := c.until(func(f string) bool { return strings.HasPrefix(f, "status ") || strings.HasPrefix(f, "error ") })
	if !strings.HasPrefix(answer, "status 200 ") || strings.Contains(answer, upstreamKey) || !strings.Contains(answer, apiproxy.Redacted) {
		t.Fatalf("the workload's call: %s", answer)
	}
	m.mu.Lock()
	keys := slicesClone(m.keys)
	m.mu.Unlock()
	if len(keys) != 1 || keys[0] != upstreamKey {
		t.Fatalf("the upstream got keys %q", keys)
	}
	send("env")
	env := c.until(func(f string) bool { return strings.Contains(f, "SANDGATE_WORKSPACE=") })
	if strings.Contains(env, upstreamKey) || strings.Contains(env, "UPSTREAM_MODEL_KEY") {
		t.Fatalf("the workload's environment holds the key:\n%s", env)
	}
	for _, want := range []string{"SANDGATE_UPSTREAM_MODEL_URL=http://127.0.0.1:", agent.EnvWorkloadActivityURL + "=http://127.0.0.1:",
		agent.EnvWorkloadSleepAfter + "=3600"} {
		if !strings.Contains(env, want) {
			t.Errorf("the workload's environment lacks %s:\n%s", want, env)
		}
	}
	if strings.Contains(h.logs.String(), upstreamKey) {
		t.Fatal("the agent's log holds the key")
	}
	if !strings.Contains(h.logs.String(), `"msg":"upstream call"`) {
		t.Errorf("no log line of the call:\n%s", h.logs)
	}
}

// A workload that says it is busy keeps its sandbox awake past SLEEP_AFTER with no
// client; once it stops saying so, the sandbox goes idle and stops as before.
func TestAgent_Activity_KeepsTheSandboxAwake(t *testing.T) {
	const beats = 40 // 4 s of heartbeats, four times SLEEP_AFTER
	m := startModelStub(t)
	h := newHarness(t, upstreamVars(m, "1s"))
	h.vars[agent.EnvLeaseTTL] = "3s" // a heartbeat a second: the events this test waits on
	h.acquire()
	a := h.agent(h.store, h.bucket)
	stop, result := h.run(a)
	defer stop()
	target := h.running()
	c := h.connect()
	if err := h.api.Deliver(context.Background(), target, c.id, fmt.Appendf(nil, "beat %d", beats)); err != nil {
		t.Fatal(err)
	}
	c.until(testkit.Is("beating"))
	c.Close()
	began := time.Now()
	// The agent heartbeats its lease with its last activity: wait until it has done so
	// 3 s after the client left, with the workload still beating.
	rec := waitRecord(t, h, func(sb *state.Sandbox) bool { return sb.HeartbeatAt.After(began.Add(3 * time.Second)) })
	if rec.State != state.Running {
		t.Fatalf("with the workload busy the sandbox is %s %s", rec.State, rec.Reason)
	}
	if _, err := os.Stat(a.Config.Workspace() + "/beats-done"); err == nil {
		t.Fatal("the workload stopped beating before the check: the test proves nothing")
	}
	rec = waitRecord(t, h, func(sb *state.Sandbox) bool { return sb.State == state.Stopped })
	done, err := os.Stat(a.Config.Workspace() + "/beats-done")
	if err != nil {
		t.Fatal("stopped before the workload stopped beating")
	}
	// The workload writes beats-done 100 ms after its last beat: the last activity is
	// at most that long before it, and the stop must come SLEEP_AFTER after it.
	if lastBeat := done.ModTime().Add(-100 * time.Millisecond); !rec.StateSince.After(lastBeat.Add(time.Second)) {
		t.Errorf("stopped at %s, under SLEEP_AFTER after the last beat (by %s)", rec.StateSince, lastBeat)
	}
	if err := result(); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(h.logs.String(), `"reason":"idle"`) {
		t.Errorf("not stopped as idle:\n%s", h.logs)
	}
}

// An upstream call in flight keeps the sandbox awake however long it takes.
func TestAgent_Activity_CallInFlightKeepsTheSandboxAwake(t *testing.T) {
	m := startModelStub(t)
	m.hold = make(chan struct{})
	h := newHarness(t, upstreamVars(m, "1s"))
	h.vars[agent.EnvLeaseTTL] = "3s"
	h.acquire()
	a := h.agent(h.store, h.bucket)
	a.UpstreamTransport = m.Client().Transport
	stop, result := h.run(a)
	defer stop()
	target := h.running()
	c := h.connect()
	if err := h.api.Deliver(context.Background(), target, c.id, []byte("call /v1/hold")); err != nil {
		t.Fatal(err)
	}
	select {
	case <-m.entry:
	case <-time.After(testkit.Wait):
		t.Fatal("the call never reached the upstream")
	}
	c.Close()
	began := time.Now()
	rec := waitRecord(t, h, func(sb *state.Sandbox) bool { return sb.HeartbeatAt.After(began.Add(3 * time.Second)) })
	if rec.State != state.Running {
		t.Fatalf("with a call in flight the sandbox is %s", rec.State)
	}
	m.letGo()
	waitRecord(t, h, func(sb *state.Sandbox) bool { return sb.State == state.Stopped })
	if err := result(); err != nil {
		t.Fatal(err)
	}
}

// waitRecord waits for the user's record to match.
func waitRecord(t *testing.T, h *harness, match func(*state.Sandbox) bool) *state.Sandbox {
	t.Helper()
	deadline := time.Now().Add(testkit.Wait)
	for {
		sb, err := h.store.Get(context.Background(), h.userID)
		if err == nil && match(sb) {
			return sb
		}
		if time.Now().After(deadline) {
			t.Fatalf("the record never matched: %+v %v", sb, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func slicesClone(s []string) []string { return append([]string(nil), s...) }

// WORKLOAD_ENV cannot hand the workload an upstream's key, nor shadow what the agent
// tells it.
func TestLoadConfig_Workload_UpstreamKeyRefused(t *testing.T) {
	for _, name := range []string{"UPSTREAM_MODEL_KEY", "UPSTREAM_OTHER_KEY", "SANDGATE_UPSTREAM_MODEL_URL", agent.EnvWorkloadActivityURL} {
		vars := map[string]string{"WORKLOAD_ENV": name, name: "x", "UPSTREAMS": "model",
			"UPSTREAM_MODEL_URL": "https://api.example.com", "UPSTREAM_MODEL_KEY": upstreamKey}
		_, err := loadConfig(vars)
		if err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("WORKLOAD_ENV=%s: %v", name, err)
		}
		if err != nil && strings.Contains(err.Error(), upstreamKey) {
			t.Errorf("the error quotes the key: %v", err)
		}
	}
	cfg, err := loadConfig(map[string]string{"UPSTREAMS": "model", "UPSTREAM_MODEL_URL": "https://api.example.com", "UPSTREAM_MODEL_KEY": upstreamKey})
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Upstreams) != 1 || cfg.Upstreams[0].Key != upstreamKey {
		t.Fatalf("upstreams %v", cfg.Upstreams)
	}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s"} {
		if s := fmt.Sprintf(verb, cfg); strings.Contains(s, upstreamKey) {
			t.Errorf("the configuration printed with %s holds the key", verb)
		}
	}
}

// loadConfig loads the configuration of a task with vars beside the per-task ones.
func loadConfig(vars map[string]string) (agent.Config, error) {
	all := taskVars()
	for k, v := range vars {
		all[k] = v
	}
	env := config.New(config.Map(all))
	cfg := agent.LoadConfig(env)
	return cfg, env.Err()
}
