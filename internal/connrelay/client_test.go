package connrelay_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/apigatewaymanagementapi"

	"github.com/sandgate/sandgate/infra/local/testkit"
	"github.com/sandgate/sandgate/internal/connrelay"
	"github.com/sandgate/sandgate/internal/relay"
)

// funcURL serves h as a function URL would, with the caller the test names, and
// counts the batches; gate, when set, holds each batch until it is closed.
type funcURL struct {
	h       *connrelay.Handler
	caller  string
	mu      sync.Mutex
	batches int
	gate    chan struct{}
}

func (f *funcURL) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !strings.Contains(r.Header.Get("Authorization"), "/lambda/aws4_request") {
		http.Error(w, `{"Message":"Forbidden"}`, http.StatusForbidden)
		return
	}
	f.mu.Lock()
	f.batches++
	gate := f.gate
	f.mu.Unlock()
	if gate != nil {
		<-gate
	}
	b, _ := io.ReadAll(r.Body)
	ev := events.LambdaFunctionURLRequest{RawPath: r.URL.Path, Body: string(b)}
	ev.RequestContext.HTTP.Method = r.Method
	ev.RequestContext.Authorizer = &events.LambdaFunctionURLRequestContextAuthorizerDescription{
		IAM: &events.LambdaFunctionURLRequestContextAuthorizerIAMDescription{UserARN: f.caller}}
	resp, err := f.h.Handle(r.Context(), ev)
	if err != nil {
		http.Error(w, err.Error(), 502)
		return
	}
	w.WriteHeader(resp.StatusCode)
	_, _ = io.WriteString(w, resp.Body)
}

func (f *funcURL) Batches() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.batches
}

func newClient(t *testing.T, e *env, task, user string) (*connrelay.Client, *funcURL) {
	t.Helper()
	f := &funcURL{h: e.h, caller: sandboxCaller(task)}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	c, err := connrelay.NewClient(srv.URL, user, credentials.NewStaticCredentialsProvider("ASIASANDBOX", "s", "t"), "eu-west-1", nil)
	if err != nil {
		t.Fatal(err)
	}
	return c, f
}

// Through the client, the relay is the management API as relay.Relay knows it: posts
// arrive, a gone or foreign connection is ErrGone, and a task the record does not name
// is refused.
func TestClient_AsManagementAPI(t *testing.T) {
	e := newEnv(t)
	e.start(t, "user_alice", taskA, "c1")
	e.start(t, "user_bob", taskB, "bob1")
	c, _ := newClient(t, e, taskA, "user_alice")
	r := &relay.Relay{API: c, Conns: e.store, Log: e.logs.Logger()}
	ctx := context.Background()
	if err := r.Send(ctx, "c1", []byte("hi")); err != nil {
		t.Fatal(err)
	}
	if live, err := r.Live(ctx, "c1"); err != nil || !live {
		t.Errorf("Live(c1) = %v, %v", live, err)
	}
	if err := r.Send(ctx, "bob1", []byte("hostile")); !errors.Is(err, relay.ErrGone) {
		t.Errorf("post to bob's connection: %v, want ErrGone", err)
	}
	if live, err := r.Live(ctx, "bob1"); err != nil || live {
		t.Errorf("Live(bob1) = %v, %v", live, err)
	}
	if err := r.Close(ctx, "c1"); err != nil {
		t.Errorf("Close: %v", err)
	}
	if calls := e.api.Calls(); strings.Join(calls, "|") != "post c1 hi|get c1 |delete c1 " {
		t.Errorf("management API calls %q", calls)
	}
	// Task A speaking for bob is refused whole.
	cb, _ := newClient(t, e, taskA, "user_bob")
	if err := (&relay.Relay{API: cb, Conns: e.store}).Send(ctx, "bob1", []byte("x")); !errors.Is(err, connrelay.ErrRefused) {
		t.Errorf("task A as bob: %v, want ErrRefused", err)
	}
}

// What is asked while a batch is on its way goes out together in the next: one call
// for many frames, each still answered on its own.
func TestClient_Batches(t *testing.T) {
	e := newEnv(t)
	const n = 20
	var conns []string
	for i := range n {
		conns = append(conns, fmt.Sprintf("c%02d", i))
	}
	e.start(t, "user_alice", taskA, append(conns, "first")...)
	c, f := newClient(t, e, taskA, "user_alice")
	c.MaxInFlight = 1
	gate := make(chan struct{})
	f.gate = gate
	ctx := context.Background()
	first := make(chan error, 1)
	go func() { first <- postTo(ctx, c, "first", "x") }()
	testkit.Eventually(t, 10*time.Second, func() bool { return f.Batches() == 1 }, func() string { return "the first batch never left" })
	errs := make(chan error, n)
	for _, id := range conns {
		go func() { errs <- postTo(ctx, c, id, "x") }()
	}
	testkit.Eventually(t, 10*time.Second, func() bool { return c.Queued() == n }, func() string { return "the posts never queued" })
	close(gate)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	for range n {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	if b := f.Batches(); b != 2 {
		t.Errorf("%d batches for %d posts, want 2", b, n+1)
	}
	if calls := e.api.Calls(); len(calls) != n+1 {
		t.Errorf("%d posts reached the management API", len(calls))
	}
}

// A connection's operations leave in the order asked, never two in one batch or in
// batches on their way at once.
func TestClient_OrderPerConnection(t *testing.T) {
	e := newEnv(t)
	e.start(t, "user_alice", taskA, "c1", "c2")
	c, _ := newClient(t, e, taskA, "user_alice")
	ctx := context.Background()
	var wg sync.WaitGroup
	for _, id := range []string{"c1", "c2"} {
		wg.Go(func() {
			for i := range 30 {
				if err := postTo(ctx, c, id, fmt.Sprint(i)); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	next := map[string]int{}
	for _, call := range e.api.Calls() {
		var id string
		var i int
		if _, err := fmt.Sscanf(call, "post %s %d", &id, &i); err != nil {
			t.Fatalf("call %q", call)
		}
		if i != next[id] {
			t.Fatalf("%s got frame %d, want %d", id, i, next[id])
		}
		next[id]++
	}
}

func postTo(ctx context.Context, c *connrelay.Client, id, data string) error {
	_, err := c.PostToConnection(ctx, &apigatewaymanagementapi.PostToConnectionInput{ConnectionId: aws.String(id), Data: []byte(data)})
	return err
}
