package lambdart

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/sandgate/sandgate/infra/local/identity"
	"github.com/sandgate/sandgate/internal/logging"
)

// Defaults for a Runtime and its functions.
const (
	// DefaultMaxConcurrency bounds the processes of one function, like a reserved
	// concurrency; further invocations wait for a free process.
	DefaultMaxConcurrency = 10
	// DefaultTimeout is Lambda's default function timeout.
	DefaultTimeout = 3 * time.Second
	// DefaultMemoryMB is Lambda's default memory size, reported to the function only.
	DefaultMemoryMB = 128
	// DefaultStopGrace is how long Close waits after SIGTERM before SIGKILL.
	DefaultStopGrace = 500 * time.Millisecond
	// DefaultRegion and DefaultAccountID appear in ARNs and AWS_REGION.
	DefaultRegion    = "us-east-1"
	DefaultAccountID = "000000000000"
	// DefaultAsyncRetries is how often Lambda retries a failed asynchronous invocation.
	DefaultAsyncRetries = 2
	// DefaultAsyncRetryDelay is the wait before an asynchronous retry (Lambda waits
	// one, then two minutes; the local stack retries sooner).
	DefaultAsyncRetryDelay = 5 * time.Second

	// MaxPayloadBytes is Lambda's limit on a synchronous request and response (6 MB).
	MaxPayloadBytes = 6 * 1024 * 1024
	// MaxResponseBytes is the response size at which Lambda fails the invocation.
	MaxResponseBytes = 6291556
	// MaxAsyncPayloadBytes is Lambda's limit on an asynchronous (Event) request.
	MaxAsyncPayloadBytes = 1024 * 1024
	// MaxEventAge is how long Lambda keeps an asynchronous event it could not yet run
	// (throttled) before it drops it: the default MaximumEventAgeInSeconds, 6 hours.
	MaxEventAge = 6 * time.Hour

	// DefaultSessionDuration is the length of each process's execution-role session
	// (a role's default maximum).
	DefaultSessionDuration = identity.DefaultSessionDuration
	// DefaultCredentialMargin is how long before its session expires a process stops
	// taking invocations: Lambda's longest timeout, so no invocation outlives the
	// credentials it started with.
	DefaultCredentialMargin = 15 * time.Minute
)

const keyFunction = "function"

// Function is one function the runtime can invoke.
type Function struct {
	// Name identifies the function to Invoke and becomes AWS_LAMBDA_FUNCTION_NAME.
	Name string
	// Path is the bootstrap executable; its directory is LAMBDA_TASK_ROOT.
	Path string
	// Handler becomes _HANDLER (provided runtimes ignore it).
	Handler string
	// Timeout bounds each invocation; DefaultTimeout when zero.
	Timeout time.Duration
	// MemoryMB becomes AWS_LAMBDA_FUNCTION_MEMORY_SIZE; DefaultMemoryMB when zero.
	MemoryMB int
	// LogFormat ("JSON" or "Text") and LogLevel become AWS_LAMBDA_LOG_FORMAT and
	// AWS_LAMBDA_LOG_LEVEL when set.
	LogFormat, LogLevel string
	// Env is the function's own environment.
	Env map[string]string
	// MaxConcurrency bounds the function's processes; DefaultMaxConcurrency when zero.
	MaxConcurrency int
	// AsyncRetries, when set, replaces the Runtime's for this function, as
	// EventInvokeConfig.MaximumRetryAttempts does in Lambda (0 to 2).
	AsyncRetries *int
	// Role is the execution role's ARN. With Runtime.Sessions set, each process runs
	// with a session of it (session name: the function's name), and Lambda's own uses
	// of it (log writes, VPC network interfaces) are authorised with it.
	Role string
	// LogGroup is the log group the function writes to; /aws/lambda/<Name> when empty.
	LogGroup string
	// InVPC reports a function attached to subnets: Add checks that its role may
	// manage the network interfaces, as Lambda does.
	InVPC bool
	// URLAuthType gives the function a function URL: AuthTypeIAM or AuthTypeNone
	// (FunctionUrlConfig.AuthType); empty for none. See Runtime.FunctionURL.
	URLAuthType string
	// URLAddr is the loopback address the function URL listens on; a free port on
	// 127.0.0.1 when empty.
	URLAddr string
	// URLListener, when set, is the function URL's listener, already open (it wins over
	// URLAddr): a caller that must know the address before the function runs keeps the
	// port it chose, which closing and listening again would give any other process
	// meanwhile. The runtime owns it once Add is called.
	URLListener net.Listener
}

// logGroup returns the function's log group.
func (fn Function) logGroup() string {
	if fn.LogGroup != "" {
		return fn.LogGroup
	}
	return "/aws/lambda/" + fn.Name
}

// Runtime runs functions as child processes behind the Lambda Runtime API.
type Runtime struct {
	// Region and AccountID appear in AWS_REGION and function ARNs.
	Region, AccountID string
	// Env is added to every function's environment before its own variables: the
	// stack's endpoints (AWS_ENDPOINT_URL_*) and credentials.
	Env map[string]string
	// StopGrace is the wait between SIGTERM and SIGKILL in Close.
	StopGrace time.Duration
	// AsyncRetries and AsyncRetryDelay govern InvokeAsync.
	AsyncRetries    int
	AsyncRetryDelay time.Duration

	// Sessions, when set, gives every process the credentials of a session of its
	// function's Role, issued to iampolicy.LambdaService, in AWS_ACCESS_KEY_ID,
	// AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN (a function must then have a Role).
	// A process whose session would expire within CredentialMargin (or the function's
	// timeout, if longer) takes no more invocations: it finishes the one in flight and
	// exits, and a new process starts with a fresh session, as Lambda recycles
	// execution environments. Nil: processes get Env's credentials, if any. Set it,
	// like the fields below, before Add.
	Sessions identity.SessionIssuer
	// SessionDuration is each session's length (DefaultSessionDuration when zero);
	// CredentialMargin the time before expiry at which a process retires
	// (DefaultCredentialMargin when zero).
	SessionDuration, CredentialMargin time.Duration
	// Now is the clock sessions are judged by: the Authority's (time.Now when nil).
	Now func() time.Time

	// Authority, when set, verifies the SigV4 signature of every Invoke API request
	// and every request to an AWS_IAM function URL.
	Authority *identity.Authority
	// AccountConcurrency, when positive, is the account's concurrent-executions quota
	// (DefaultAccountConcurrency in AWS): an invocation of a function without reserved
	// concurrency that would take the functions without one past AccountConcurrency
	// less every reservation is throttled with Lambda's TooManyRequestsException
	// (ReasonAccount), as is one of a function past its reservation (ReasonReserved).
	// Invocations waiting for one of a function's processes count: in Lambda they would
	// run. Zero enforces reservations only. Set it before Add.
	AccountConcurrency int
	// UnreservedMinimum is what reservations must leave unreserved
	// (DefaultUnreservedMinimum when zero).
	UnreservedMinimum int

	// Authorizer, when set, authorises Invoke API calls (lambda:InvokeFunction),
	// function URL calls (lambda:InvokeFunctionUrl and lambda:InvokeFunction), and,
	// with Sessions, what Lambda does with a function's role: its log writes (a
	// process whose role may not write its log stream runs with its output dropped)
	// and a VPC function's network interfaces (Add refuses the function).
	Authorizer identity.Authorizer

	log    *slog.Logger
	output *lineSink

	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc
	mu     sync.Mutex
	pools  map[string]*pool
	closed bool
	async  sync.WaitGroup

	// concMu guards the concurrency emulation (account.go): the unreserved
	// invocations in flight and each function's statistics.
	concMu     sync.Mutex
	unreserved int
	stats      map[string]*Stats
}

// New returns a Runtime that logs to log and writes each process's output lines to
// output, prefixed with the function name.
func New(log *slog.Logger, output io.Writer) *Runtime {
	ctx, cancel := context.WithCancel(context.Background())
	return &Runtime{
		Region:          DefaultRegion,
		AccountID:       DefaultAccountID,
		StopGrace:       DefaultStopGrace,
		AsyncRetries:    DefaultAsyncRetries,
		AsyncRetryDelay: DefaultAsyncRetryDelay,
		log:             log,
		output:          &lineSink{w: output},
		ctx:             ctx,
		cancel:          cancel,
		pools:           map[string]*pool{},
		stats:           map[string]*Stats{},
	}
}

// Add registers fn. The executable must exist; no process starts until the first
// invocation.
func (r *Runtime) Add(fn Function) error {
	if fn.Name == "" {
		return fmt.Errorf("add function: empty name")
	}
	switch fn.URLAuthType {
	case "", AuthTypeIAM, AuthTypeNone:
	default:
		return fmt.Errorf("add function %s: function URL auth type %q: want %s or %s", fn.Name, fn.URLAuthType, AuthTypeIAM, AuthTypeNone)
	}
	st, err := os.Stat(fn.Path)
	if err != nil {
		return fmt.Errorf("add function %s: %w (run make build-local)", fn.Name, err)
	}
	// The process runs in the bootstrap's directory, as in Lambda's /var/task, so a
	// relative path would no longer name it there.
	if fn.Path, err = filepath.Abs(fn.Path); err != nil {
		return fmt.Errorf("add function %s: %w", fn.Name, err)
	}
	if st.IsDir() || st.Mode()&0o111 == 0 {
		return fmt.Errorf("add function %s: %s is not an executable", fn.Name, fn.Path)
	}
	if fn.Timeout <= 0 {
		fn.Timeout = DefaultTimeout
	}
	if fn.MemoryMB <= 0 {
		fn.MemoryMB = DefaultMemoryMB
	}
	if fn.MaxConcurrency <= 0 {
		fn.MaxConcurrency = DefaultMaxConcurrency
	}
	if r.isClosed() {
		return ErrClosed
	}
	if r.exists(fn.Name) {
		return fmt.Errorf("add function %s: already added", fn.Name)
	}
	if err := r.checkRole(fn); err != nil {
		return fmt.Errorf("add function %s: %w", fn.Name, err)
	}
	p := &pool{
		rt:    r,
		fn:    fn,
		slots: make(chan struct{}, fn.MaxConcurrency),
		all:   map[*instance]struct{}{},
		log:   r.log.With(keyFunction, fn.Name),
	}
	if fn.URLAuthType != "" {
		if err := p.listenURL(); err != nil {
			return fmt.Errorf("add function %s: function url: %w", fn.Name, err)
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	_, dup := r.pools[fn.Name]
	if r.closed || dup {
		p.closeURL()
		if dup {
			return fmt.Errorf("add function %s: already added", fn.Name)
		}
		return ErrClosed
	}
	r.pools[fn.Name] = p
	r.concMu.Lock()
	r.stats[fn.Name] = &Stats{}
	r.concMu.Unlock()
	return nil
}

func (r *Runtime) exists(name string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.pools[name]
	return ok
}

// Functions returns the names of the registered functions.
func (r *Runtime) Functions() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]string, 0, len(r.pools))
	for n := range r.pools {
		out = append(out, n)
	}
	return out
}

func (r *Runtime) pool(name string) (*pool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil, ErrClosed
	}
	p, ok := r.pools[name]
	if !ok {
		return nil, fmt.Errorf("invoke %s: %w", name, ErrUnknownFunction)
	}
	return p, nil
}

// InitDurations returns, for each process function has started, the time from its
// start to its first request for an invocation (what Lambda reports as Init Duration),
// in the order the processes got there. A process whose init failed has none.
func (r *Runtime) InitDurations(function string) ([]time.Duration, error) {
	p, err := r.pool(function)
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]time.Duration(nil), p.inits...), nil
}

// Invoke runs function with payload and returns its response (a synchronous,
// RequestResponse invocation). A failed invocation returns a *FunctionError; an
// invocation whose ctx ends first kills the process serving it and returns ctx's error.
func (r *Runtime) Invoke(ctx context.Context, function string, payload []byte) ([]byte, error) {
	p, err := r.pool(function)
	if err != nil {
		return nil, err
	}
	if len(payload) > MaxPayloadBytes {
		return nil, fmt.Errorf("invoke %s: %w: %d bytes", function, ErrPayloadTooLarge, len(payload))
	}
	return p.invoke(ctx, payload)
}

// InvokeAsync queues an asynchronous (Event) invocation and returns at once, as
// Lambda answers 202. A failure is retried AsyncRetries times (the function's own
// AsyncRetries when set), each failure logged, then the invocation is dropped and
// logged once more. An attempt throttled by a reserved concurrency of 0 is tried
// again without counting, as Lambda keeps such an event, until MaxEventAge.
func (r *Runtime) InvokeAsync(function string, payload []byte) error {
	p, err := r.pool(function)
	if err != nil {
		return err
	}
	if len(payload) > MaxAsyncPayloadBytes {
		return fmt.Errorf("invoke %s: %w: %d bytes", function, ErrPayloadTooLarge, len(payload))
	}
	body := append([]byte(nil), payload...)
	r.async.Add(1)
	go func() {
		defer r.async.Done()
		queued := time.Now()
		for attempt := 0; ; attempt++ {
			_, err := p.invoke(r.ctx, body)
			if err == nil || r.ctx.Err() != nil {
				return
			}
			if errors.Is(err, ErrThrottled) {
				// Lambda keeps a throttled event and tries it again, without counting
				// the attempt, until the event's maximum age.
				attempt--
				if time.Since(queued) > MaxEventAge {
					p.log.Error("async invocation dropped: throttled past the maximum event age", "age", time.Since(queued).String())
					return
				}
			} else {
				p.log.Warn("async invocation failed", logging.Error, err.Error(), "attempt", attempt+1)
				retries := r.AsyncRetries
				if p.fn.AsyncRetries != nil {
					retries = *p.fn.AsyncRetries
				}
				if attempt >= retries {
					// Lambda would send the event to the function's on-failure destination.
					p.log.Error("async invocation dropped", "attempts", attempt+1)
					return
				}
			}
			select {
			case <-time.After(r.AsyncRetryDelay):
			case <-r.ctx.Done():
				return
			}
		}
	}()
	return nil
}

// Close stops every process (SIGTERM, then SIGKILL after StopGrace) and waits for
// them and for queued asynchronous invocations to end. In-flight invocations fail.
func (r *Runtime) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	pools := make([]*pool, 0, len(r.pools))
	for _, p := range r.pools {
		pools = append(pools, p)
	}
	r.mu.Unlock()
	for _, p := range pools {
		p.closeURL()
	}
	r.cancel()
	var wg sync.WaitGroup
	for _, p := range pools {
		for _, inst := range p.closeAll() {
			wg.Add(1)
			go func() { defer wg.Done(); inst.stop(r.StopGrace) }()
		}
	}
	wg.Wait()
	r.async.Wait()
	return nil
}

func (r *Runtime) isClosed() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.closed
}

func (r *Runtime) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

func (r *Runtime) arn(fn string) string {
	return "arn:aws:lambda:" + r.Region + ":" + r.AccountID + ":function:" + fn
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// newRequestID returns a UUID-shaped id like Lambda's.
func newRequestID() string {
	h := randomHex(16)
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}
