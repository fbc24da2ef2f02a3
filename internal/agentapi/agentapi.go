package agentapi

import (
	"bytes"
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"strings"
	"sync/atomic"
	"time"
)

// Limits and defaults.
const (
	// MaxFrameBytes is API Gateway's WebSocket message limit; nothing larger can arrive.
	MaxFrameBytes = 128 << 10
	// DefaultTimeout bounds one call from a Lambda to an agent: an agent that cannot take
	// a frame this fast is treated as unavailable and the frame is queued instead.
	DefaultTimeout = 2 * time.Second
	// HeaderUser names the user the caller believes the sandbox serves; the agent refuses
	// a mismatch, so a stale record pointing at a reused address cannot cross users.
	HeaderUser = "X-Sandgate-User"
	// HealthPath answers without a token, for the container HEALTHCHECK.
	HealthPath = "/healthz"
)

// Errors, as the client sees them and as a Handler returns them.
var (
	ErrUnauthorized = errors.New("agent refused the gateway token")
	ErrRateLimited  = errors.New("user is over the message rate limit")
	ErrTooLarge     = errors.New("frame too large")
	ErrStopping     = errors.New("sandbox is stopping")
	ErrUnavailable  = errors.New("agent unavailable")
	// ErrNoAnswer means the request reached the agent but no answer came back in time:
	// unlike the rest of ErrUnavailable, the frame may have been delivered. It is
	// always returned together with ErrUnavailable.
	ErrNoAnswer   = errors.New("agent did not answer; the frame may have been delivered")
	ErrBadRequest = errors.New("bad request")
)

// Handler is what the agent implements behind the API.
type Handler interface {
	// Open tells the agent a client connected, so the workload can greet it before its
	// first frame. Opening an open connection is not an error.
	Open(ctx context.Context, connectionID string) error
	// Deliver queues frame for connectionID's upstream, in arrival order per connection.
	Deliver(ctx context.Context, connectionID string, frame []byte) error
	// Close closes connectionID's upstream to the workload.
	Close(ctx context.Context, connectionID string) error
	// Healthy reports whether the agent is serving.
	Healthy() bool
}

// NewServer returns the agent's HTTP handler. token is the sandbox's gateway token and
// userID the user it serves; both must match on every request but health.
func NewServer(token, userID string, h Handler) http.Handler {
	mux := http.NewServeMux()
	auth := func(next http.HandlerFunc) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
			if !ok || subtle.ConstantTimeCompare([]byte(got), []byte(token)) != 1 ||
				subtle.ConstantTimeCompare([]byte(r.Header.Get(HeaderUser)), []byte(userID)) != 1 {
				http.Error(w, "unauthorized", http.StatusUnauthorized)
				return
			}
			next(w, r)
		}
	}
	mux.HandleFunc("POST /v1/connections/{id}/frames", auth(func(w http.ResponseWriter, r *http.Request) {
		frame, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxFrameBytes))
		if err != nil {
			writeErr(w, ErrTooLarge)
			return
		}
		writeErr(w, h.Deliver(r.Context(), r.PathValue("id"), frame))
	}))
	mux.HandleFunc("PUT /v1/connections/{id}", auth(func(w http.ResponseWriter, r *http.Request) {
		writeErr(w, h.Open(r.Context(), r.PathValue("id")))
	}))
	mux.HandleFunc("DELETE /v1/connections/{id}", auth(func(w http.ResponseWriter, r *http.Request) {
		writeErr(w, h.Close(r.Context(), r.PathValue("id")))
	}))
	mux.HandleFunc("GET "+HealthPath, func(w http.ResponseWriter, r *http.Request) {
		if !h.Healthy() {
			http.Error(w, "unhealthy", http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "ok\n")
	})
	return mux
}

var statusOf = []struct {
	err  error
	code int
}{
	{ErrUnauthorized, http.StatusUnauthorized},
	{ErrRateLimited, http.StatusTooManyRequests},
	{ErrTooLarge, http.StatusRequestEntityTooLarge},
	{ErrStopping, http.StatusServiceUnavailable},
	{ErrBadRequest, http.StatusBadRequest},
}

func writeErr(w http.ResponseWriter, err error) {
	if err == nil {
		w.WriteHeader(http.StatusAccepted)
		return
	}
	for _, s := range statusOf {
		if errors.Is(err, s.err) {
			http.Error(w, s.err.Error(), s.code)
			return
		}
	}
	http.Error(w, "internal error", http.StatusInternalServerError)
}

// Client calls agents. The zero value is usable; keep one per process so connections
// to warm agents are reused across invocations.
type Client struct {
	// HTTP is the client used; nil means http.DefaultClient.
	HTTP *http.Client
	// Timeout bounds each call (DefaultTimeout).
	Timeout time.Duration
}

// Target is one agent: where it listens and how to authenticate to it.
type Target struct {
	Endpoint string // http://10.0.3.7:8080
	Token    string // the sandbox's gateway token
	UserID   string
}

// Deliver sends one client frame to the agent. ErrUnavailable means the agent did not
// answer (network error, timeout, 5xx other than stopping): the caller queues the frame.
func (c *Client) Deliver(ctx context.Context, t Target, connectionID string, frame []byte) error {
	return c.do(ctx, http.MethodPost, t, "/v1/connections/"+connectionID+"/frames", frame)
}

// Open tells the agent that connectionID connected.
func (c *Client) Open(ctx context.Context, t Target, connectionID string) error {
	return c.do(ctx, http.MethodPut, t, "/v1/connections/"+connectionID, nil)
}

// Close tells the agent that connectionID is gone.
func (c *Client) Close(ctx context.Context, t Target, connectionID string) error {
	return c.do(ctx, http.MethodDelete, t, "/v1/connections/"+connectionID, nil)
}

func (c *Client) do(ctx context.Context, method string, t Target, path string, body []byte) error {
	err := c.send(ctx, method, t.Endpoint, path, t.Token, t.UserID, bytes.NewReader(body))
	var st statusError
	if errors.As(err, &st) {
		for _, s := range statusOf {
			if st.code == s.code {
				return s.err
			}
		}
		return fmt.Errorf("%w: status %d", ErrUnavailable, st.code)
	}
	return err
}

// statusError is an agent's answer other than 2xx.
type statusError struct{ code int }

func (e statusError) Error() string { return fmt.Sprintf("agent answered status %d", e.code) }

// send makes one call with the bearer token (and the user header unless userID is
// empty): nil for a 2xx answer, a statusError for another, ErrUnavailable (with
// ErrNoAnswer once the request was written) when no answer came.
func (c *Client) send(ctx context.Context, method, endpoint, path, token, userID string, body io.Reader) error {
	timeout := c.Timeout
	if timeout == 0 {
		timeout = DefaultTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimSuffix(endpoint, "/")+path, body)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrBadRequest, err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	if userID != "" {
		req.Header.Set(HeaderUser, userID)
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	// Whether the request was written tells a refused or unreachable agent (the frame
	// certainly not delivered, safe to send elsewhere) from one that went silent after
	// taking it (maybe delivered: sending it again could deliver it twice).
	var wrote atomic.Bool
	req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{
		WroteRequest: func(httptrace.WroteRequestInfo) { wrote.Store(true) },
	}))
	resp, err := hc.Do(req)
	if err != nil {
		if wrote.Load() {
			return fmt.Errorf("%w: %w: %v", ErrUnavailable, ErrNoAnswer, err)
		}
		return fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
	if resp.StatusCode/100 == 2 {
		return nil
	}
	return statusError{code: resp.StatusCode}
}
