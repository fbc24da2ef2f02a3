package message_test

import (
	"context"

	"fmt"
	"github.com/aws/aws-lambda-go/events"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sandgate/sandgate/infra/local/testkit"
	"github.com/sandgate/sandgate/internal/agentapi"
	"github.com/sandgate/sandgate/internal/frames"
	"github.com/sandgate/sandgate/internal/message"
	"github.com/sandgate/sandgate/internal/metrics"
)

// sendAll sends n frames and waits until the Message function has handled each.
func (e *env) sendAll(t *testing.T, c *testkit.Client, n int) {
	t.Helper()
	for i := range n {
		c.Send(fmt.Sprintf("f%d", i))
	}
	e.handled.Wait(t, n)
}

// Frames over the user's rate are refused in the Message process before anything else
// is done with them — no DynamoDB call, no agent call — and the sender hears
// rate_limited once a second, not once per frame; the rate refills with time, and
// another user is not held back.
func TestHandler_Handle_FrameRateBeforeWork(t *testing.T) {
	e := newEnv(t)
	e.h.FrameRate, e.h.FrameBurst = 5, 10
	agent := testkit.StartAgent(t, "user_a")
	e.running(t, agent)
	c := e.gw.Dial(t, "user_a")
	e.db.Calls.Reset()
	e.sendAll(t, c, 30)
	if n := len(agent.Calls()); n != 10 {
		t.Fatalf("the agent got %d frames, want the burst of 10", n)
	}
	// Frames handled at once may each read the record before one of them caches it;
	// the refused ones read nothing.
	if n, w := e.db.Calls.Calls("DynamoDB", ""), e.db.Writes(); n > 10 || w != 0 {
		t.Fatalf("%d DynamoDB calls, %d writes for 30 frames, want at most a read per frame delivered", n, w)
	}
	wantFrame(t, c.NextFrame(), frames.TypeError, frames.ReasonRateLimited)
	noMore(t, c)
	e.db.Clock.Advance(time.Second)
	e.sendAll(t, c, 6)
	if n := len(agent.Calls()); n != 15 {
		t.Fatalf("after a second the agent got %d frames in all, want 15", n)
	}
	wantFrame(t, c.NextFrame(), frames.TypeError, frames.ReasonRateLimited)
	other := testkit.StartAgent(t, "user_b")
	e.running(t, other)
	d := e.gw.Dial(t, "user_b")
	e.sendAll(t, d, 10)
	if n := len(other.Calls()); n != 10 {
		t.Fatalf("another user's frames: %d delivered, want 10", n)
	}
	noMore(t, d)
}

// A connection that keeps sending over the rate is told and closed after
// RateLimitCloseAfter refusals; the close is counted.
func TestHandler_Handle_RateLimitedConnectionClosed(t *testing.T) {
	e := newEnv(t)
	e.h.FrameRate, e.h.FrameBurst, e.h.RateLimitCloseAfter = 5, 5, 20
	e.h.Metrics = metrics.New(e.logs)
	agent := testkit.StartAgent(t, "user_a")
	e.running(t, agent)
	c := e.gw.Dial(t, "user_a")
	e.sendAll(t, c, 5+19)
	select {
	case <-c.Closed():
		t.Fatal("closed before the threshold")
	default:
	}
	c.Send("one too many")
	e.handled.Wait(t, 1)
	wantFrame(t, c.NextFrame(), frames.TypeError, frames.ReasonRateLimited)
	f := c.NextFrame()
	if f.Reason != frames.ReasonRateLimited || f.Message == "" {
		t.Fatalf("close frame %+v", f)
	}
	select {
	case <-c.Closed():
	case <-time.After(testkit.Wait):
		t.Fatal("the connection was not closed")
	}
	if len(e.logs.With(t, metrics.RateLimitCloses, 1.0)) != 1 {
		t.Fatal("the close was not counted")
	}
}

// The agent holds the user's exact bucket: when it refuses a frame for the rate, this
// process stops calling it for the user until its own bucket refills.
func TestHandler_Handle_AgentRefusalDrainsBucket(t *testing.T) {
	e := newEnv(t)
	e.h.FrameRate, e.h.FrameBurst = 5, 10
	agent := testkit.StartAgent(t, "user_a")
	e.running(t, agent)
	c := e.gw.Dial(t, "user_a")
	var calls atomic.Int64
	agent.Hook = func(testkit.Call) error { calls.Add(1); return agentapi.ErrRateLimited }
	for i := range 6 {
		e.send(t, c, fmt.Sprint(i))
	}
	if n := calls.Load(); n != 1 {
		t.Fatalf("the agent was called %d times after refusing the first frame, want 1", n)
	}
	wantFrame(t, c.NextFrame(), frames.TypeError, frames.ReasonRateLimited)
	noMore(t, c)
}

// In one process, frames of one user handled concurrently take exactly the burst.
func TestHandler_Handle_FrameRateConcurrent(t *testing.T) {
	e := newEnv(t)
	e.h.FrameRate, e.h.FrameBurst = 1, 25
	agent := testkit.StartAgent(t, "user_a")
	e.running(t, agent)
	c := e.gw.Dial(t, "user_a")
	id := e.connectionID(t, 0)
	var wg sync.WaitGroup
	for i := range 100 {
		wg.Go(func() {
			ev := events.APIGatewayWebsocketProxyRequest{Body: fmt.Sprint(i), RequestContext: events.APIGatewayWebsocketProxyRequestContext{
				EventType: "MESSAGE", RouteKey: "$default", ConnectionID: id, Stage: testkit.Stage, Authorizer: map[string]any{"userId": "user_a"}}}
			if _, err := e.h.Handle(context.Background(), ev); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if n := len(agent.Calls()); n != 25 {
		t.Fatalf("%d frames reached the agent, want exactly the burst of 25", n)
	}
	// Refused frames were answered at most once a second.
	if f := c.NextFrame(); f.Reason != frames.ReasonRateLimited {
		t.Fatalf("frame %+v", f)
	}
	noMore(t, c)
}

// The limiter's tables are bounded: a flood of users starts them over rather than grow.
func TestHandler_RateLimitWindow(t *testing.T) {
	if message.RateLimitWindow < time.Second {
		t.Fatalf("the window %s is shorter than the answer interval", message.RateLimitWindow)
	}
}
