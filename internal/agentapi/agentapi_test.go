package agentapi_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sandgate/sandgate/internal/agentapi"
)

type handler struct {
	mu      sync.Mutex
	frames  map[string][]string
	closed  []string
	opened  []string
	err     error
	healthy bool
	block   chan struct{}
}

func (h *handler) Deliver(ctx context.Context, id string, frame []byte) error {
	if h.block != nil {
		<-h.block
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.err != nil {
		return h.err
	}
	if h.frames == nil {
		h.frames = map[string][]string{}
	}
	h.frames[id] = append(h.frames[id], string(frame))
	return nil
}

func (h *handler) Open(ctx context.Context, id string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.opened = append(h.opened, id)
	return nil
}

func (h *handler) Close(ctx context.Context, id string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = append(h.closed, id)
	return nil
}

func (h *handler) Healthy() bool { return h.healthy }

func serve(t *testing.T, h *handler) agentapi.Target {
	t.Helper()
	srv := httptest.NewServer(agentapi.NewServer("good-token", "user_a", h))
	t.Cleanup(srv.Close)
	return agentapi.Target{Endpoint: srv.URL, Token: "good-token", UserID: "user_a"}
}

func TestClient_Deliver(t *testing.T) {
	h := &handler{}
	target := serve(t, h)
	var c agentapi.Client
	if err := c.Open(context.Background(), target, "conn1="); err != nil || len(h.opened) != 1 || h.opened[0] != "conn1=" {
		t.Fatalf("Open: %v %v", err, h.opened)
	}
	for _, f := range []string{"one", "two", `{"action":"x"}`} {
		if err := c.Deliver(context.Background(), target, "conn1=", []byte(f)); err != nil {
			t.Fatal(err)
		}
	}
	if got := strings.Join(h.frames["conn1="], "|"); got != `one|two|{"action":"x"}` {
		t.Fatalf("frames = %s", got)
	}
	if err := c.Close(context.Background(), target, "conn1="); err != nil || h.closed[0] != "conn1=" {
		t.Fatalf("Close: %v %v", err, h.closed)
	}
}

func TestServer_RefusesWrongTokenOrUser(t *testing.T) {
	h := &handler{}
	target := serve(t, h)
	var c agentapi.Client
	for name, tt := range map[string]agentapi.Target{
		"other sandbox's token": {Endpoint: target.Endpoint, Token: "other-token", UserID: "user_a"},
		"empty token":           {Endpoint: target.Endpoint, Token: "", UserID: "user_a"},
		"token prefix":          {Endpoint: target.Endpoint, Token: "good", UserID: "user_a"},
		"other user":            {Endpoint: target.Endpoint, Token: "good-token", UserID: "user_b"},
	} {
		if err := c.Deliver(context.Background(), tt, "c", []byte("x")); !errors.Is(err, agentapi.ErrUnauthorized) {
			t.Errorf("%s: %v", name, err)
		}
		if err := c.Open(context.Background(), tt, "c"); !errors.Is(err, agentapi.ErrUnauthorized) {
			t.Errorf("%s open: %v", name, err)
		}
		if err := c.Close(context.Background(), tt, "c"); !errors.Is(err, agentapi.ErrUnauthorized) {
			t.Errorf("%s close: %v", name, err)
		}
	}
	if len(h.frames) != 0 || len(h.closed) != 0 || len(h.opened) != 0 {
		t.Fatalf("refused requests reached the handler: %v %v", h.frames, h.closed)
	}
	// No Authorization header at all.
	resp, err := http.Post(target.Endpoint+"/v1/connections/c/frames", "text/plain", strings.NewReader("x"))
	if err != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("no header: %v %v", resp.StatusCode, err)
	}
}

func TestClient_Deliver_Errors(t *testing.T) {
	var c agentapi.Client
	for _, want := range []error{agentapi.ErrRateLimited, agentapi.ErrStopping, agentapi.ErrTooLarge} {
		target := serve(t, &handler{err: want})
		if err := c.Deliver(context.Background(), target, "c", []byte("x")); !errors.Is(err, want) {
			t.Errorf("got %v, want %v", err, want)
		}
	}
	target := serve(t, &handler{err: errors.New("boom")})
	if err := c.Deliver(context.Background(), target, "c", []byte("x")); !errors.Is(err, agentapi.ErrUnavailable) {
		t.Errorf("internal error: %v", err)
	}
	target = serve(t, &handler{})
	big := make([]byte, agentapi.MaxFrameBytes+1)
	if err := c.Deliver(context.Background(), target, "c", big); !errors.Is(err, agentapi.ErrTooLarge) {
		t.Errorf("oversized frame: %v", err)
	}
}

func TestClient_Deliver_Unavailable(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close()
	c := agentapi.Client{Timeout: time.Second}
	err := c.Deliver(context.Background(), agentapi.Target{Endpoint: url, Token: "t", UserID: "user_a"}, "c", []byte("x"))
	if !errors.Is(err, agentapi.ErrUnavailable) || errors.Is(err, agentapi.ErrNoAnswer) {
		t.Fatalf("closed port: %v, want unavailable and certainly not delivered", err)
	}
	// A hung agent costs the timeout, not the caller's whole deadline.
	h := &handler{block: make(chan struct{})}
	defer close(h.block)
	hung := serve(t, h)
	c.Timeout = 50 * time.Millisecond
	if err := c.Deliver(context.Background(), hung, "c", []byte("x")); !errors.Is(err, agentapi.ErrUnavailable) {
		t.Fatalf("hung agent: %v, want unavailable", err)
	}
	// The frame a hung agent took may have been delivered. The call's deadline passes
	// once the request is written (the caller's trace runs after the client's own), so
	// the answer does not depend on how fast a loaded machine writes it.
	c.Timeout = time.Minute
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{WroteRequest: func(httptrace.WroteRequestInfo) { cancel() }})
	if err := c.Deliver(ctx, hung, "c", []byte("x")); !errors.Is(err, agentapi.ErrUnavailable) || !errors.Is(err, agentapi.ErrNoAnswer) {
		t.Fatalf("hung agent that took the frame: %v, want unavailable with no answer", err)
	}
}

func TestServer_Health(t *testing.T) {
	for healthy, code := range map[bool]int{true: 200, false: 503} {
		target := serve(t, &handler{healthy: healthy})
		resp, err := http.Get(target.Endpoint + agentapi.HealthPath)
		if err != nil || resp.StatusCode != code {
			t.Fatalf("healthy=%v: %v %v", healthy, resp.StatusCode, err)
		}
	}
}
