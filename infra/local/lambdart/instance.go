package lambdart

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/sandgate/sandgate/infra/local/identity"
	"github.com/sandgate/sandgate/infra/local/proc"
	"github.com/sandgate/sandgate/internal/logging"
)

const runtimeAPI = "/2018-06-01/runtime"

// Runtime API headers (the contract aws-lambda-go and every custom runtime read).
const (
	headerRequestID   = "Lambda-Runtime-Aws-Request-Id"
	headerDeadline    = "Lambda-Runtime-Deadline-Ms"
	headerFunctionARN = "Lambda-Runtime-Invoked-Function-Arn"
	headerTraceID     = "Lambda-Runtime-Trace-Id"
	headerErrorType   = "Lambda-Runtime-Function-Error-Type"
)

type invocation struct {
	id       string
	payload  []byte
	deadline time.Time
	done     chan outcome // buffered: the first outcome wins
}

func (inv *invocation) finish(o outcome) {
	select {
	case inv.done <- o:
	default:
	}
}

type outcome struct {
	body []byte
	err  error
}

// instance is one process of a function and the Runtime API endpoint it polls. Each
// process gets its own listener, so a request's origin is never in doubt.
type instance struct {
	p    *pool
	proc *proc.Process
	srv  *http.Server
	out  *lineWriter
	errw *lineWriter

	next    chan *invocation // handed over by GET .../invocation/next
	started time.Time        // when the process was started
	// expires is when the process's credentials expire (zero: never); it takes no
	// invocation within the credential margin of it.
	expires time.Time

	mu      sync.Mutex
	polled  bool // the process has asked for its first invocation
	cur     *invocation
	initErr *FunctionError
	served  int // invocations handed over; a warm process has served at least one
}

// errStale means a warm process died while idle, before taking the invocation: the
// pool retries on a fresh process, as Lambda replaces a dead execution environment.
var errStale = errors.New("idle process exited")

func startInstance(p *pool) (*instance, error) {
	stream := logStreamName()
	sess, err := p.newSession(p.rt.ctx, stream)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", p.fn.Name, err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("start %s: listen: %w", p.fn.Name, err)
	}
	i := &instance{p: p, next: make(chan *invocation), expires: sess.creds.Expires}
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+runtimeAPI+"/invocation/next", i.handleNext)
	mux.HandleFunc("POST "+runtimeAPI+"/invocation/{id}/response", i.handleResponse)
	mux.HandleFunc("POST "+runtimeAPI+"/invocation/{id}/error", i.handleError)
	mux.HandleFunc("POST "+runtimeAPI+"/init/error", i.handleInitError)
	i.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = i.srv.Serve(ln) }()

	fn := p.fn
	cmd := exec.Command(fn.Path)
	cmd.Dir = filepath.Dir(fn.Path)
	cmd.Env = environ(p.rt, fn, ln.Addr().String(), stream, sess.creds)
	sink := p.rt.output
	if !sess.logs {
		sink = &lineSink{} // writes nowhere
	}
	i.out = &lineWriter{sink: sink, prefix: "[" + fn.Name + "] "}
	i.errw = &lineWriter{sink: sink, prefix: "[" + fn.Name + "] "}
	cmd.Stdout, cmd.Stderr = i.out, i.errw
	// A grandchild holding the pipes open must not hang Wait.
	cmd.WaitDelay = time.Second
	// Under the lock: the process's first request, on the server's goroutine, reads both.
	i.mu.Lock()
	i.started = time.Now()
	i.proc, err = proc.Start(cmd)
	i.mu.Unlock()
	if err != nil {
		_ = i.srv.Close()
		return nil, fmt.Errorf("start %s: %w", fn.Name, err)
	}
	p.log.Debug("process started", "pid", i.proc.Pid())
	go func() {
		<-i.proc.Done()
		i.out.flush()
		i.errw.flush()
		_ = i.srv.Close()
	}()
	return i, nil
}

// logStreamName returns a log stream name like Lambda's for a new process.
func logStreamName() string {
	return time.Now().UTC().Format("2006/01/02") + "/[$LATEST]" + randomHex(16)
}

// environ builds the process environment the way Lambda does: nothing inherited from
// this process, the stack's variables, the function's, then Lambda's reserved ones,
// the credentials among them when creds holds a session.
func environ(rt *Runtime, fn Function, api, stream string, creds identity.Credentials) []string {
	env := map[string]string{}
	for k, v := range rt.Env {
		env[k] = v
	}
	for k, v := range fn.Env {
		env[k] = v
	}
	dir := filepath.Dir(fn.Path)
	reserved := map[string]string{
		"AWS_LAMBDA_FUNCTION_NAME":        fn.Name,
		"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": strconv.Itoa(fn.MemoryMB),
		"AWS_LAMBDA_FUNCTION_VERSION":     "$LATEST",
		"AWS_LAMBDA_INITIALIZATION_TYPE":  "on-demand",
		"AWS_LAMBDA_LOG_GROUP_NAME":       fn.logGroup(),
		"AWS_LAMBDA_LOG_STREAM_NAME":      stream,
		"AWS_LAMBDA_RUNTIME_API":          api,
		"AWS_REGION":                      rt.Region,
		"AWS_DEFAULT_REGION":              rt.Region,
		"_HANDLER":                        fn.Handler,
		"LAMBDA_TASK_ROOT":                dir,
		"LAMBDA_RUNTIME_DIR":              dir,
		"LANG":                            "en_US.UTF-8",
		"TZ":                              ":UTC",
		"PATH":                            "/usr/local/bin:/usr/bin/:/bin:/opt/bin",
	}
	if fn.LogFormat != "" {
		reserved["AWS_LAMBDA_LOG_FORMAT"] = fn.LogFormat
	}
	if fn.LogLevel != "" {
		reserved["AWS_LAMBDA_LOG_LEVEL"] = fn.LogLevel
	}
	if creds.AccessKeyID != "" {
		// A session of the execution role; no other key reaches the process.
		delete(env, "AWS_SESSION_TOKEN")
		for k, v := range creds.Env() {
			reserved[k] = v
		}
	}
	for k, v := range reserved {
		env[k] = v
	}
	out := make([]string, 0, len(env))
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	sort.Strings(out)
	return out
}

func (i *instance) exited() bool {
	select {
	case <-i.proc.Done():
		return true
	default:
		return false
	}
}

// stop ends the process (and its group) and its endpoint, waiting for both.
func (i *instance) stop(grace time.Duration) {
	_ = i.proc.Stop(grace)
	i.out.flush()
	i.errw.flush()
	_ = i.srv.Close()
}

// run hands inv to the process and waits for its outcome. healthy reports whether
// the process may serve another invocation; an unhealthy one has been stopped.
func (i *instance) run(ctx context.Context, inv *invocation) (outcome, bool) {
	name := i.p.fn.Name
	timer := time.NewTimer(time.Until(inv.deadline))
	defer timer.Stop()
	fail := func(err error) (outcome, bool) {
		i.stop(0)
		return outcome{err: err}, false
	}
	timedOut := func() (outcome, bool) {
		i.p.log.Warn("invocation timed out", logging.RequestID, inv.id, "pid", i.proc.Pid())
		return fail(platformError(name, inv.id, TypeTimeout,
			fmt.Sprintf("Task timed out after %.2f seconds", i.p.fn.Timeout.Seconds()), ErrTimeout))
	}
	select {
	case i.next <- inv:
	case <-i.proc.Done():
		i.mu.Lock()
		warm := i.served > 0
		i.mu.Unlock()
		if warm {
			return outcome{err: errStale}, false
		}
		return outcome{err: i.exitError(inv)}, false
	case <-timer.C:
		return timedOut()
	case <-ctx.Done():
		return fail(fmt.Errorf("invoke %s: %w", name, ctx.Err()))
	}
	select {
	case o := <-inv.done:
		return o, true
	case <-i.proc.Done():
		// A response posted just before the exit still counts.
		select {
		case o := <-inv.done:
			return o, false
		default:
		}
		return outcome{err: i.exitError(inv)}, false
	case <-timer.C:
		return timedOut()
	case <-ctx.Done():
		return fail(fmt.Errorf("invoke %s: %w", name, ctx.Err()))
	}
}

func (i *instance) exitError(inv *invocation) error {
	i.mu.Lock()
	initErr := i.initErr
	i.mu.Unlock()
	if initErr != nil {
		initErr.RequestID = inv.id
		return initErr
	}
	msg := "Runtime exited without providing a reason"
	if err := i.proc.Err(); err != nil {
		msg = "Runtime exited with error: " + err.Error()
	}
	i.p.log.Warn("process exited", logging.RequestID, inv.id, "pid", i.proc.Pid(), logging.Error, msg)
	return platformError(i.p.fn.Name, inv.id, TypeExit, msg, ErrExit)
}

func (i *instance) handleNext(w http.ResponseWriter, r *http.Request) {
	i.mu.Lock()
	first := !i.polled
	i.polled = true
	started, pid := i.started, i.proc.Pid()
	i.mu.Unlock()
	if first {
		// Lambda's Init Duration: process start to the first call for an invocation.
		d := time.Since(started)
		i.p.recordInit(d)
		i.p.log.Debug("process initialised", "pid", pid, logging.Duration, d.Milliseconds())
	}
	select {
	case inv := <-i.next:
		i.mu.Lock()
		i.cur = inv
		i.served++
		i.mu.Unlock()
		h := w.Header()
		h.Set(headerRequestID, inv.id)
		h.Set(headerDeadline, strconv.FormatInt(inv.deadline.UnixMilli(), 10))
		h.Set(headerFunctionARN, i.p.rt.arn(i.p.fn.Name))
		h.Set(headerTraceID, traceID())
		h.Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(inv.payload)
	case <-r.Context().Done():
		// The process is being stopped or has died; it gets no answer.
	}
}

// take returns the in-flight invocation with id and clears it, or nil.
func (i *instance) take(id string) *invocation {
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.cur == nil || i.cur.id != id {
		return nil
	}
	inv := i.cur
	i.cur = nil
	return inv
}

func (i *instance) handleResponse(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, MaxResponseBytes+1))
	if err != nil {
		apiError(w, http.StatusBadRequest, "InvalidRequest", err.Error())
		return
	}
	inv := i.take(r.PathValue("id"))
	if inv == nil {
		apiError(w, http.StatusBadRequest, "InvalidRequestID", "invalid request id")
		return
	}
	if len(body) > MaxResponseBytes {
		msg := fmt.Sprintf("Response payload size exceeded maximum allowed payload size (%d bytes).", MaxResponseBytes)
		b, _ := json.Marshal(errorPayload{ErrorType: TypeResponseTooLarge, ErrorMessage: msg})
		inv.finish(outcome{err: &FunctionError{Function: i.p.fn.Name, RequestID: inv.id, Type: TypeResponseTooLarge,
			Message: msg, Payload: b, kind: ErrResponseTooLarge}})
		apiError(w, http.StatusRequestEntityTooLarge, "RequestEntityTooLarge", msg)
		return
	}
	inv.finish(outcome{body: body})
	w.WriteHeader(http.StatusAccepted)
	_, _ = w.Write([]byte(`{"status":"OK"}`))
}

func (i *instance) handleError(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(io.LimitReader(r.Body, MaxPayloadBytes))
	inv := i.take(r.PathValue("id"))
	if inv == nil {
		apiError(w, http.StatusBadRequest, "InvalidRequestID", "invalid request id")
		return
	}
	fe := decodeError(i.p.fn.Name, inv.id, body, r.Header.Get(headerErrorType), ErrHandler)
	inv.finish(outcome{err: fe})
	w.WriteHeader(http.StatusAccepted)
	_, _ = w.Write([]byte(`{"status":"OK"}`))
}

func (i *instance) handleInitError(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(io.LimitReader(r.Body, MaxPayloadBytes))
	fe := decodeError(i.p.fn.Name, "", body, r.Header.Get(headerErrorType), ErrInit)
	if fe.Type == "" {
		fe.Type = TypeInit
	}
	i.mu.Lock()
	i.initErr = fe
	i.mu.Unlock()
	i.p.log.Warn("init error", logging.Error, fe.Message)
	w.WriteHeader(http.StatusAccepted)
	_, _ = w.Write([]byte(`{"status":"OK"}`))
	// Lambda discards an environment whose init failed.
	go func() { _ = i.proc.Stop(0) }()
}

func decodeError(fn, id string, body []byte, headerType string, kind error) *FunctionError {
	var p errorPayload
	fe := &FunctionError{Function: fn, RequestID: id, Payload: body, kind: kind}
	if err := json.Unmarshal(body, &p); err == nil && (p.ErrorMessage != "" || p.ErrorType != "") {
		fe.Type, fe.Message = p.ErrorType, p.ErrorMessage
	} else {
		fe.Message = string(body)
	}
	if fe.Type == "" {
		fe.Type = headerType
	}
	if !errors.Is(kind, ErrInit) && fe.Type == "" {
		fe.Type = "Unhandled"
	}
	return fe
}

func apiError(w http.ResponseWriter, status int, typ, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	b, _ := json.Marshal(errorPayload{ErrorType: typ, ErrorMessage: msg})
	_, _ = w.Write(b)
}

// traceID returns an X-Ray trace header like the one Lambda passes.
func traceID() string {
	return fmt.Sprintf("Root=1-%08x-%s;Parent=%s;Sampled=0", time.Now().Unix(), randomHex(12), randomHex(8))
}
