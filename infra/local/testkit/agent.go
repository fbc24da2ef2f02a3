package testkit

import (
	"context"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/sandgate/sandgate/internal/agentapi"
)

// Call is one call an Agent received.
type Call struct {
	Op           string // "open", "deliver" or "close"
	ConnectionID string
	Frame        []byte
}

// Agent serves the real agent API (agentapi.NewServer, token and user checks included)
// over a handler that records calls and answers with Err: the stand-in for the
// sandbox's agent until a test runs the real one.
type Agent struct {
	URL    string
	Token  string
	UserID string

	// Hook, when set, runs before each call is answered; a non-nil error is the
	// answer. Set it before the first call.
	Hook func(Call) error
	// Discard accepts calls without recording them (benchmarks). Set it before the
	// first call.
	Discard bool

	mu    sync.Mutex
	err   error
	calls []Call
	ch    chan Call
	srv   *http.Server
}

// StartAgent serves an agent for userID on loopback until the test ends.
func StartAgent(tb testing.TB, userID string) *Agent {
	tb.Helper()
	a := &Agent{Token: "gw-" + userID + "-token", UserID: userID, ch: make(chan Call, 1024)}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	a.URL = "http://" + ln.Addr().String()
	a.srv = &http.Server{Handler: agentapi.NewServer(a.Token, userID, a), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = a.srv.Serve(ln) }()
	tb.Cleanup(func() { a.Stop() })
	return a
}

// Stop closes the agent's listener and connections: it stops answering.
func (a *Agent) Stop() { _ = a.srv.Close() }

// SetErr makes every later call answer err (nil: accept).
func (a *Agent) SetErr(err error) {
	a.mu.Lock()
	a.err = err
	a.mu.Unlock()
}

func (a *Agent) record(c Call) error {
	if a.Hook != nil {
		if err := a.Hook(c); err != nil {
			return err
		}
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.err != nil {
		return a.err
	}
	if a.Discard {
		return nil
	}
	a.calls = append(a.calls, c)
	a.ch <- c
	return nil
}

// Open records an open.
func (a *Agent) Open(_ context.Context, id string) error {
	return a.record(Call{Op: "open", ConnectionID: id})
}

// Deliver records a frame.
func (a *Agent) Deliver(_ context.Context, id string, frame []byte) error {
	return a.record(Call{Op: "deliver", ConnectionID: id, Frame: append([]byte(nil), frame...)})
}

// Close records a close.
func (a *Agent) Close(_ context.Context, id string) error {
	return a.record(Call{Op: "close", ConnectionID: id})
}

// Healthy reports true.
func (a *Agent) Healthy() bool { return true }

// Calls returns the accepted calls so far.
func (a *Agent) Calls() []Call {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]Call(nil), a.calls...)
}

// Next returns the next accepted call, failing the test if none comes within Wait.
func (a *Agent) Next(tb testing.TB) Call {
	tb.Helper()
	select {
	case c := <-a.ch:
		return c
	case <-time.After(Wait):
		tb.Fatal("the agent received no call within the wait")
	}
	return Call{}
}
