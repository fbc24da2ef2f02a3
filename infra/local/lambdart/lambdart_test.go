package lambdart_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sandgate/sandgate/infra/local/lambdart"
	"github.com/sandgate/sandgate/infra/local/testkit"
)

var fixture, initFail string

func TestMain(m *testing.M) {
	os.Exit(testkit.RunWithPrograms(m, map[*string]string{&fixture: "./testdata/fixture", &initFail: "./testdata/initfail"}))
}

type harness struct {
	rt   *lambdart.Runtime
	out  *testkit.Logs // the functions' output
	logs *testkit.Logs // the runtime's
	pids map[int]bool
	mu   sync.Mutex
}

func newRuntime(t *testing.T, fns ...lambdart.Function) *harness {
	t.Helper()
	return newRuntimeWith(t, nil, fns...)
}

// newRuntimeWith is newRuntime with the Runtime's fields set by configure (when not
// nil) before the functions are added.
func newRuntimeWith(t *testing.T, configure func(*lambdart.Runtime), fns ...lambdart.Function) *harness {
	t.Helper()
	h := &harness{out: &testkit.Logs{}, logs: &testkit.Logs{}, pids: map[int]bool{}}
	h.rt = lambdart.New(h.logs.Logger(), h.out)
	if configure != nil {
		configure(h.rt)
	}
	for _, fn := range fns {
		if fn.Path == "" {
			fn.Path = fixture
		}
		if err := h.rt.Add(fn); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		h.rt.Close()
		h.assertAllGone(t)
	})
	return h
}

type response struct {
	Op          string            `json:"op"`
	Value       string            `json:"value"`
	Pid         int               `json:"pid"`
	RequestID   string            `json:"requestId"`
	FunctionARN string            `json:"functionArn"`
	RemainingMs int64             `json:"remainingMs"`
	Env         map[string]string `json:"env"`
	Big         string            `json:"big"`
	KeyID       string            `json:"keyId"`
	ARN         string            `json:"arn"`
	STSError    string            `json:"stsError"`
}

func (h *harness) invoke(ctx context.Context, fn string, req map[string]any) (response, error) {
	b, _ := json.Marshal(req)
	out, err := h.rt.Invoke(ctx, fn, b)
	if err != nil {
		return response{}, err
	}
	var r response
	if err := json.Unmarshal(out, &r); err != nil {
		return r, fmt.Errorf("decode %s: %w", out, err)
	}
	h.mu.Lock()
	h.pids[r.Pid] = true
	h.mu.Unlock()
	return r, nil
}

func alive(pid int) bool { return syscall.Kill(pid, 0) == nil }

func (h *harness) assertAllGone(t *testing.T) {
	t.Helper()
	h.mu.Lock()
	defer h.mu.Unlock()
	for pid := range h.pids {
		if alive(pid) {
			t.Errorf("process %d survived Close", pid)
		}
	}
}

func TestRuntime_Invoke_Echo(t *testing.T) {
	h := newRuntime(t, lambdart.Function{Name: "Echo"})
	r, err := h.invoke(context.Background(), "Echo", map[string]any{"op": "echo", "value": "héllo"})
	if err != nil {
		t.Fatal(err)
	}
	if r.Value != "héllo" || r.FunctionARN != "arn:aws:lambda:us-east-1:000000000000:function:Echo" {
		t.Fatalf("response = %+v", r)
	}
	if !regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`).MatchString(r.RequestID) {
		t.Fatalf("request id %q is not UUID-shaped", r.RequestID)
	}
}

func TestRuntime_Invoke_Environment(t *testing.T) {
	t.Setenv("SANDGATE_PARENT_ONLY", "leak")
	h := newRuntime(t, lambdart.Function{Name: "Env", Handler: "bootstrap", MemoryMB: 256, LogFormat: "JSON",
		Env: map[string]string{"TABLE_NAME": "t1", "AWS_REGION": "xx-fake-1"}})
	h.rt.Env = map[string]string{"AWS_ENDPOINT_URL_DYNAMODB": "http://127.0.0.1:9", "TABLE_NAME": "stack"}
	r, err := h.invoke(context.Background(), "Env", map[string]any{"op": "env"})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"AWS_LAMBDA_FUNCTION_NAME":        "Env",
		"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256",
		"AWS_LAMBDA_FUNCTION_VERSION":     "$LATEST",
		"AWS_REGION":                      "us-east-1", // reserved: the function cannot override it
		"_HANDLER":                        "bootstrap",
		"AWS_LAMBDA_LOG_FORMAT":           "JSON",
		"TABLE_NAME":                      "t1", // the function's own value wins over the stack's
		"AWS_ENDPOINT_URL_DYNAMODB":       "http://127.0.0.1:9",
		"LAMBDA_TASK_ROOT":                filepath.Dir(fixture),
	}
	for k, v := range want {
		if r.Env[k] != v {
			t.Errorf("%s = %q, want %q", k, r.Env[k], v)
		}
	}
	if !regexp.MustCompile(`^127\.0\.0\.1:\d+$`).MatchString(r.Env["AWS_LAMBDA_RUNTIME_API"]) {
		t.Errorf("AWS_LAMBDA_RUNTIME_API = %q, want a loopback host:port", r.Env["AWS_LAMBDA_RUNTIME_API"])
	}
	if _, ok := r.Env["SANDGATE_PARENT_ONLY"]; ok {
		t.Error("the parent's environment leaked into the function")
	}
}

func TestRuntime_Invoke_DeadlineFromTimeout(t *testing.T) {
	h := newRuntime(t, lambdart.Function{Name: "Deadline", Timeout: 2 * time.Second})
	r, err := h.invoke(context.Background(), "Deadline", map[string]any{"op": "deadline"})
	if err != nil {
		t.Fatal(err)
	}
	if r.RemainingMs <= 0 || r.RemainingMs > 2000 || r.RemainingMs < 1000 {
		t.Fatalf("handler saw %d ms left of a 2 s timeout", r.RemainingMs)
	}
}

func TestRuntime_Invoke_HandlerError(t *testing.T) {
	h := newRuntime(t, lambdart.Function{Name: "Fail"})
	_, err := h.invoke(context.Background(), "Fail", map[string]any{"op": "fail", "value": "bad input"})
	var fe *lambdart.FunctionError
	if !errors.As(err, &fe) || !errors.Is(err, lambdart.ErrHandler) {
		t.Fatalf("err = %v, want a handler FunctionError", err)
	}
	if fe.Type != "CustomError" || fe.Message != "custom failure: bad input" || fe.RequestID == "" {
		t.Fatalf("error = %+v", fe)
	}
	var payload map[string]any
	if err := json.Unmarshal(fe.Payload, &payload); err != nil || payload["errorType"] != "CustomError" {
		t.Fatalf("payload = %s", fe.Payload)
	}
	// The process survives a handler error and serves the next invocation.
	if _, err := h.invoke(context.Background(), "Fail", map[string]any{"op": "echo"}); err != nil {
		t.Fatal(err)
	}
}

func TestRuntime_Invoke_Crash(t *testing.T) {
	h := newRuntime(t, lambdart.Function{Name: "Crash"})
	first, err := h.invoke(context.Background(), "Crash", map[string]any{"op": "echo"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = h.invoke(context.Background(), "Crash", map[string]any{"op": "crash"})
	var fe *lambdart.FunctionError
	if !errors.As(err, &fe) || !errors.Is(err, lambdart.ErrExit) || fe.Type != lambdart.TypeExit {
		t.Fatalf("err = %v, want Runtime.ExitError", err)
	}
	if !strings.HasPrefix(fe.Message, "RequestId: "+fe.RequestID+" Error: Runtime exited with error: exit status 3") {
		t.Fatalf("message = %q", fe.Message)
	}
	next, err := h.invoke(context.Background(), "Crash", map[string]any{"op": "echo"})
	if err != nil {
		t.Fatal(err)
	}
	if next.Pid == first.Pid || alive(first.Pid) {
		t.Fatalf("crashed process %d still serves or lives (next pid %d)", first.Pid, next.Pid)
	}
}

func TestRuntime_Invoke_Timeout(t *testing.T) {
	h := newRuntime(t, lambdart.Function{Name: "Slow", Timeout: time.Second})
	_, err := h.invoke(context.Background(), "Slow", map[string]any{"op": "sleep", "ms": 30000})
	var fe *lambdart.FunctionError
	if !errors.As(err, &fe) || !errors.Is(err, lambdart.ErrTimeout) || fe.Type != lambdart.TypeTimeout {
		t.Fatalf("err = %v, want a timeout", err)
	}
	if !strings.HasSuffix(fe.Message, "Task timed out after 1.00 seconds") {
		t.Fatalf("message = %q", fe.Message)
	}
	m := regexp.MustCompile(`\[Slow\] pid (\d+) sleeping`).FindStringSubmatch(h.out.String())
	if m == nil {
		t.Fatalf("no tagged output line:\n%s", h.out.String())
	}
	pid, _ := strconv.Atoi(m[1])
	if alive(pid) {
		t.Fatalf("timed-out process %d still alive", pid)
	}
}

func TestRuntime_Invoke_ContextCancelled(t *testing.T) {
	h := newRuntime(t, lambdart.Function{Name: "Slow", Timeout: time.Minute})
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err := h.invoke(ctx, "Slow", map[string]any{"op": "sleep", "ms": 30000})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v", err)
	}
	if r, err := h.invoke(context.Background(), "Slow", map[string]any{"op": "echo"}); err != nil || r.Op != "echo" {
		t.Fatalf("after a cancelled invocation: %v", err)
	}
}

func TestRuntime_Invoke_ConcurrencyLimitAndWarmReuse(t *testing.T) {
	const limit = 3
	h := newRuntime(t, lambdart.Function{Name: "Pool", MaxConcurrency: limit, Timeout: 10 * time.Second})
	var wg sync.WaitGroup
	pids := make(chan int, 2*limit)
	for range 2 * limit {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := h.invoke(context.Background(), "Pool", map[string]any{"op": "sleep", "ms": 300})
			if err != nil {
				t.Error(err)
				return
			}
			pids <- r.Pid
		}()
	}
	wg.Wait()
	close(pids)
	seen := map[int]int{}
	for p := range pids {
		seen[p]++
	}
	if len(seen) != limit {
		t.Fatalf("%d invocations ran in %d processes, want exactly %d (the limit)", 2*limit, len(seen), limit)
	}
	for range 5 {
		r, err := h.invoke(context.Background(), "Pool", map[string]any{"op": "echo"})
		if err != nil {
			t.Fatal(err)
		}
		if seen[r.Pid] == 0 {
			t.Fatalf("sequential invocation started process %d instead of reusing a warm one", r.Pid)
		}
	}
}

func TestRuntime_Invoke_OutputTagged(t *testing.T) {
	h := newRuntime(t, lambdart.Function{Name: "Logger"})
	if _, err := h.invoke(context.Background(), "Logger", map[string]any{"op": "log", "value": "hi"}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(h.out.String(), "[Logger] stderr says hi\n") && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	out := h.out.String()
	for _, line := range []string{"[Logger] stdout says hi\n", "[Logger] stderr says hi\n"} {
		if !strings.Contains(out, line) {
			t.Errorf("output lacks %q:\n%s", line, out)
		}
	}
	h.rt.Close()
	if !strings.Contains(h.out.String(), "[Logger] no trailing newline\n") {
		t.Errorf("unterminated last line lost:\n%s", h.out.String())
	}
}

func TestRuntime_Invoke_BadInput(t *testing.T) {
	h := newRuntime(t, lambdart.Function{Name: "Echo"})
	if _, err := h.rt.Invoke(context.Background(), "Nope", []byte(`{}`)); !errors.Is(err, lambdart.ErrUnknownFunction) {
		t.Errorf("unknown function: %v", err)
	}
	big := bytes.Repeat([]byte("x"), lambdart.MaxPayloadBytes+1)
	if _, err := h.rt.Invoke(context.Background(), "Echo", big); !errors.Is(err, lambdart.ErrPayloadTooLarge) {
		t.Errorf("7 MB payload: %v", err)
	}
	if err := h.rt.InvokeAsync("Echo", big[:lambdart.MaxAsyncPayloadBytes+1]); !errors.Is(err, lambdart.ErrPayloadTooLarge) {
		t.Errorf("async payload over 1 MB: %v", err)
	}
	// Not JSON: aws-lambda-go fails to decode and reports it as a handler error.
	if _, err := h.rt.Invoke(context.Background(), "Echo", []byte(`not json`)); !errors.Is(err, lambdart.ErrHandler) {
		t.Errorf("non-JSON payload: %v", err)
	}
	if err := h.rt.Add(lambdart.Function{Name: "Echo", Path: fixture}); err == nil {
		t.Error("duplicate Add accepted")
	}
	if err := h.rt.Add(lambdart.Function{Name: "Missing", Path: "/nonexistent/bootstrap"}); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing bootstrap: %v", err)
	}
	if err := h.rt.Add(lambdart.Function{Name: "Dir", Path: t.TempDir()}); err == nil {
		t.Error("directory accepted as bootstrap")
	}
}

func TestRuntime_Invoke_ResponseTooLarge(t *testing.T) {
	h := newRuntime(t, lambdart.Function{Name: "Big", Timeout: 10 * time.Second})
	_, err := h.invoke(context.Background(), "Big", map[string]any{"op": "big", "size": lambdart.MaxResponseBytes})
	var fe *lambdart.FunctionError
	if !errors.As(err, &fe) || !errors.Is(err, lambdart.ErrResponseTooLarge) || fe.Type != lambdart.TypeResponseTooLarge {
		t.Fatalf("err = %v", err)
	}
	if _, err := h.invoke(context.Background(), "Big", map[string]any{"op": "big", "size": 1 << 20}); err != nil {
		t.Fatalf("1 MB response: %v", err)
	}
}

func TestRuntime_Invoke_InitError(t *testing.T) {
	h := newRuntime(t, lambdart.Function{Name: "Init", Path: initFail})
	_, err := h.rt.Invoke(context.Background(), "Init", []byte(`{}`))
	var fe *lambdart.FunctionError
	if !errors.As(err, &fe) || !errors.Is(err, lambdart.ErrInit) || fe.Type != "Runtime.ConfigError" || fe.Message != "missing configuration" {
		t.Fatalf("err = %v", err)
	}
}

func TestRuntime_InvokeAsync_RetriesThenGivesUp(t *testing.T) {
	h := newRuntime(t, lambdart.Function{Name: "Async"})
	h.rt.AsyncRetryDelay = 10 * time.Millisecond
	if err := h.rt.InvokeAsync("Async", []byte(`{"op":"fail","value":"x"}`)); err != nil {
		t.Fatal(err)
	}
	if err := h.rt.InvokeAsync("Nope", []byte(`{}`)); !errors.Is(err, lambdart.ErrUnknownFunction) {
		t.Fatalf("unknown function: %v", err)
	}
	if tries := h.asyncTries(t); tries != 3 {
		t.Fatalf("async invocation tried %d times, want 3 (first try and two retries):\n%s", tries, h.logs.String())
	}
}

// asyncTries waits until the runtime drops the (one) failed asynchronous invocation and
// returns how often it was tried, checking that every try was logged as a failure.
func (h *harness) asyncTries(t *testing.T) int {
	t.Helper()
	// The runtime's lines of failed tries carry "attempt", the one of the drop "attempts".
	with := func(key string) []map[string]any {
		var out []map[string]any
		for _, l := range h.logs.Lines(t) {
			if _, ok := l[key]; ok {
				out = append(out, l)
			}
		}
		return out
	}
	var dropped []map[string]any
	for deadline := time.Now().Add(30 * time.Second); len(dropped) == 0 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
		dropped = with("attempts")
	}
	if len(dropped) != 1 {
		t.Fatalf("%d invocations dropped, want 1:\n%s", len(dropped), h.logs.String())
	}
	tries, _ := dropped[0]["attempts"].(float64)
	if failed := len(with("attempt")); failed != int(tries) {
		t.Fatalf("%d failures logged for %v tries:\n%s", failed, tries, h.logs.String())
	}
	return int(tries)
}

// A function's own AsyncRetries (EventInvokeConfig.MaximumRetryAttempts) replaces the
// runtime's: with 0, a failed asynchronous invocation is not tried again.
func TestRuntime_InvokeAsync_FunctionRetries(t *testing.T) {
	none := 0
	h := newRuntime(t, lambdart.Function{Name: "Once", AsyncRetries: &none})
	h.rt.AsyncRetryDelay = 10 * time.Millisecond
	if err := h.rt.InvokeAsync("Once", []byte(`{"op":"fail","value":"x"}`)); err != nil {
		t.Fatal(err)
	}
	if tries := h.asyncTries(t); tries != 1 {
		t.Fatalf("async invocation tried %d times, want 1 (no retry):\n%s", tries, h.logs.String())
	}
}

func TestRuntime_Close_NoProcessRemains(t *testing.T) {
	h := newRuntime(t, lambdart.Function{Name: "A", MaxConcurrency: 4, Timeout: 30 * time.Second}, lambdart.Function{Name: "B"})
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() { defer wg.Done(); _, _ = h.invoke(context.Background(), "A", map[string]any{"op": "echo"}) }()
	}
	wg.Wait()
	if _, err := h.invoke(context.Background(), "B", map[string]any{"op": "echo"}); err != nil {
		t.Fatal(err)
	}
	// One invocation still in flight when Close runs.
	errc := make(chan error, 1)
	go func() {
		_, err := h.invoke(context.Background(), "A", map[string]any{"op": "sleep", "ms": 30000})
		errc <- err
	}()
	for !strings.Contains(h.out.String(), "sleeping") {
		time.Sleep(10 * time.Millisecond)
	}
	if len(h.pids) < 2 {
		t.Fatalf("only %d processes seen", len(h.pids))
	}
	if err := h.rt.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; !errors.Is(err, lambdart.ErrClosed) {
		t.Fatalf("in-flight invocation: %v, want ErrClosed", err)
	}
	m := regexp.MustCompile(`pid (\d+) sleeping`).FindStringSubmatch(h.out.String())
	pid, _ := strconv.Atoi(m[1])
	h.pids[pid] = true
	h.assertAllGone(t)
	if _, err := h.rt.Invoke(context.Background(), "A", []byte(`{}`)); !errors.Is(err, lambdart.ErrClosed) {
		t.Fatalf("Invoke after Close: %v", err)
	}
}

func TestRuntime_Handler_InvokeAPI(t *testing.T) {
	h := newRuntime(t, lambdart.Function{Name: "Api"})
	srv := httptest.NewServer(h.rt.Handler())
	defer srv.Close()
	post := func(path, typ, body string) (*http.Response, string) {
		req, _ := http.NewRequest("POST", srv.URL+path, strings.NewReader(body))
		if typ != "" {
			req.Header.Set("X-Amz-Invocation-Type", typ)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	resp, body := post("/2015-03-31/functions/arn:aws:lambda:us-east-1:000000000000:function:Api/invocations", "", `{"op":"echo","value":"v"}`)
	if resp.StatusCode != 200 || !strings.Contains(body, `"value":"v"`) || resp.Header.Get("X-Amz-Executed-Version") != "$LATEST" {
		t.Fatalf("invoke: %d %s", resp.StatusCode, body)
	}
	resp, body = post("/2015-03-31/functions/Api/invocations", "RequestResponse", `{"op":"fail","value":"v"}`)
	if resp.StatusCode != 200 || resp.Header.Get("X-Amz-Function-Error") != "Unhandled" || !strings.Contains(body, "CustomError") {
		t.Fatalf("failed invoke: %d %v %s", resp.StatusCode, resp.Header, body)
	}
	resp, _ = post("/2015-03-31/functions/Api/invocations", "Event", `{"op":"echo"}`)
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("event invoke: %d", resp.StatusCode)
	}
	resp, _ = post("/2015-03-31/functions/Api/invocations", "DryRun", `{}`)
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("dry run: %d", resp.StatusCode)
	}
	resp, body = post("/2015-03-31/functions/Nope/invocations", "", `{}`)
	if resp.StatusCode != 404 || resp.Header.Get("X-Amzn-Errortype") != "ResourceNotFoundException" {
		t.Fatalf("unknown function: %d %s", resp.StatusCode, body)
	}
}

// Each process's init (start to its first request for an invocation) is recorded
// once: a warm invocation adds none, a second process adds its own, and the time
// covers the function's own init.
func TestRuntime_InitDurations_OnePerProcess(t *testing.T) {
	const initMs = 300
	h := newRuntime(t, lambdart.Function{Name: "Slow", MaxConcurrency: 2, Timeout: 10 * time.Second,
		Env: map[string]string{"FIXTURE_INIT_MS": strconv.Itoa(initMs)}},
		lambdart.Function{Name: "Init", Path: initFail})
	for range 3 {
		if _, err := h.invoke(context.Background(), "Slow", map[string]any{"op": "echo"}); err != nil {
			t.Fatal(err)
		}
	}
	d, err := h.rt.InitDurations("Slow")
	if err != nil || len(d) != 1 || d[0] < initMs*time.Millisecond {
		t.Fatalf("after one cold and two warm invocations: %v, %v; want one init of at least %d ms", d, err, initMs)
	}
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			if _, err := h.invoke(context.Background(), "Slow", map[string]any{"op": "sleep", "ms": 500}); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if d, _ := h.rt.InitDurations("Slow"); len(d) != 2 {
		t.Fatalf("two processes, %d inits: %v", len(d), d)
	}
	h.rt.Invoke(context.Background(), "Init", []byte(`{}`))
	if d, err := h.rt.InitDurations("Init"); err != nil || len(d) != 0 {
		t.Fatalf("a failed init recorded %v, %v", d, err)
	}
	if _, err := h.rt.InitDurations("Nope"); !errors.Is(err, lambdart.ErrUnknownFunction) {
		t.Fatalf("unknown function: %v", err)
	}
}
