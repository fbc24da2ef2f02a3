package agent_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/apigatewaymanagementapi"
	"github.com/aws/aws-sdk-go-v2/service/apigatewaymanagementapi/types"

	"github.com/sandgate/sandgate/infra/local/testkit"
	"github.com/sandgate/sandgate/internal/agent"
	"github.com/sandgate/sandgate/internal/agentapi"
	"github.com/sandgate/sandgate/internal/frames"
	"github.com/sandgate/sandgate/internal/relay"
	"github.com/sandgate/sandgate/internal/state"
)

func isFrame(typ, stateOrReason string) func(string) bool {
	return func(f string) bool {
		fr, ok := testkit.Platform(f)
		return ok && fr.Type == typ && (fr.State == stateOrReason || fr.Reason == stateOrReason)
	}
}

// Frames the API accepts while the inbox is being drained are held and queued after
// it: the inbox's frames reach the workload first, then the held ones, in order.
func TestAgent_Run_FramesHeldUntilTheInboxIsQueued(t *testing.T) {
	h := newHarness(t, nil)
	cl := h.connect()
	h.acquire()
	ctx := context.Background()
	for i := range 3 {
		if _, err := h.store.Enqueue(ctx, h.userID, cl.id, fmt.Appendf(nil, "inbox-%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	spy := newSpy(h.store)
	spy.inbox, spy.inboxHit = make(chan struct{}), make(chan struct{})
	h.run(h.agent(spy, h.bucket))
	<-spy.inboxHit // RUNNING, and the drain has not read the inbox yet
	target := h.running()
	for i := range 3 {
		if err := h.api.Deliver(ctx, target, cl.id, fmt.Appendf(nil, "new-%d", i)); err != nil {
			t.Fatalf("Deliver during the drain: %v", err)
		}
	}
	close(spy.inbox)
	var got []string
	for len(got) < 6 {
		got = append(got, cl.until(func(f string) bool { return strings.Contains(f, "-") && !strings.HasPrefix(f, "{") }))
	}
	want := []string{"inbox-0", "inbox-1", "inbox-2", "new-0", "new-1", "new-2"}
	if !slices.Equal(got, want) {
		t.Fatalf("workload echoed %q, want %q", got, want)
	}
}

// A final sync that fails does not mark the sandbox stopped as if all were saved: the
// lease is released with that reason and Run reports ErrFinalSync.
func TestAgent_Run_FinalSyncFails_ReleasedNotStopped(t *testing.T) {
	h := newHarness(t, nil)
	h.acquire()
	spy, bucket, stop, result := h.runWithWork("unsaved.txt", "the store refuses this")
	bucket.failPuts.Store(true)
	stop()
	if err := result(); !errors.Is(err, agent.ErrFinalSync) {
		t.Fatalf("Run = %v, want ErrFinalSync", err)
	}
	if spy.n("Stop") != 0 || spy.n("Abort") != 1 || spy.reasons[0] != "final sync failed" {
		t.Fatalf("Stop %d, Abort %d %q", spy.n("Stop"), spy.n("Abort"), spy.reasons)
	}
	if rec := h.record(); rec.State != state.Stopped || rec.Reason != "final sync failed" {
		t.Fatalf("record %s %q", rec.State, rec.Reason)
	}
	// The user can start again at once.
	if _, err := h.store.Acquire(context.Background(), h.userID); err != nil {
		t.Fatalf("Acquire after the failed stop: %v", err)
	}
}

// A workload that keeps crashing is restarted MaxRestarts times, then the sandbox
// tells its clients, syncs, stops, and Run reports ErrWorkload.
func TestAgent_Run_WorkloadKeepsCrashing_StopsWithError(t *testing.T) {
	h := newHarness(t, map[string]string{"workload": "crashy"})
	cl := h.connect()
	h.acquire()
	spy := newSpy(h.store)
	a := h.agent(spy, h.bucket)
	a.MaxRestarts = 1
	a.RestartBackoff = 10 * time.Millisecond
	_, result := h.run(a)
	target := h.running()
	if err := writeFile(a.Config.Workspace(), "work.txt", "saved despite the crashes"); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	cl.until(isFrame(frames.TypeStatus, frames.Ready))
	h.api.Deliver(ctx, target, cl.id, []byte("crash"))
	cl.until(isFrame(frames.TypeError, frames.ReasonUnavailable))
	cl.until(testkit.Is(`{"type":"hello"}`)) // restarted and redialled
	h.api.Deliver(ctx, target, cl.id, []byte("crash"))
	cl.until(isFrame(frames.TypeStatus, frames.Stopping))
	if err := result(); !errors.Is(err, agent.ErrWorkload) {
		t.Fatalf("Run = %v, want ErrWorkload", err)
	}
	if rec := h.record(); rec.State != state.Stopped || spy.n("Stop") != 1 {
		t.Fatalf("record %s, Stop calls %d", rec.State, spy.n("Stop"))
	}
	_, body, err := h.bucket.Get(ctx, "users/"+h.userID+"/files/work.txt")
	if err != nil {
		t.Fatalf("final sync did not store the workload's file: %v", err)
	}
	body.Close()
}

// Over MESSAGE_RATE_LIMIT frames per second, bursts of twice that, Deliver answers
// ErrRateLimited; tokens come back with time and never beyond the burst.
func TestAgent_Deliver_RateLimit(t *testing.T) {
	h := newHarness(t, map[string]string{"MESSAGE_RATE_LIMIT": "2"})
	cl := h.connect()
	h.acquire()
	a := h.agent(h.store, h.bucket)
	clock := testkit.NewClock()
	a.Now = clock.Now
	h.run(a)
	target := h.running()
	deliver := func() error { return h.api.Deliver(context.Background(), target, cl.id, []byte("x")) }
	for i := range 4 {
		if err := deliver(); err != nil {
			t.Fatalf("frame %d of the burst: %v", i, err)
		}
	}
	if err := deliver(); !errors.Is(err, agentapi.ErrRateLimited) {
		t.Fatalf("fifth frame = %v, want ErrRateLimited", err)
	}
	clock.Advance(500 * time.Millisecond) // one token at 2/s
	if err := deliver(); err != nil {
		t.Fatalf("after half a second: %v", err)
	}
	if err := deliver(); !errors.Is(err, agentapi.ErrRateLimited) {
		t.Fatalf("second frame after half a second = %v", err)
	}
	clock.Advance(10 * time.Second) // the bucket holds the burst, no more
	for i := range 4 {
		if err := deliver(); err != nil {
			t.Fatalf("frame %d after ten seconds: %v", i, err)
		}
	}
	if err := deliver(); !errors.Is(err, agentapi.ErrRateLimited) {
		t.Fatalf("frame beyond the burst = %v", err)
	}
}

// A workload's reply to a connection still in its $connect (API Gateway answers 410
// until the handshake completes) is retried, not dropped, and the record is kept.
func TestAgent_Post_ConnectionStillConnecting_Retried(t *testing.T) {
	h := newHarness(t, nil)
	h.acquire()
	gone := make(chan struct{}, 64)
	h.mgmt = &goneSpy{API: h.mgmt, gone: gone}
	a := h.agent(h.store, h.bucket)
	h.run(a)
	target := h.running()
	release := h.conns.Hold()
	defer release()
	type dial struct {
		c   *testkit.Client
		err error
	}
	dialed := make(chan dial, 1)
	go func() {
		c, err := h.gw.TryDial(t, h.userID)
		dialed <- dial{c, err}
	}()
	id := h.conns.Next(t) // recorded, handshake held open
	if err := h.api.Open(context.Background(), target, id); err != nil {
		t.Fatal(err)
	}
	if err := h.api.Deliver(context.Background(), target, id, []byte("sent while connecting")); err != nil {
		t.Fatal(err)
	}
	select {
	case <-gone: // the greeting met a 410
	case <-time.After(10 * time.Second):
		t.Fatal("no post was refused while the handshake was held")
	}
	release()
	d := <-dialed
	if d.err != nil {
		t.Fatal(d.err)
	}
	cl := conn{Client: d.c, id: id}
	cl.until(testkit.Is("sent while connecting"))
	conns, err := h.store.Connections(context.Background(), h.userID)
	if err != nil || len(conns) != 1 || conns[0].ConnectionID != cl.id {
		t.Fatalf("records %v, %v: the connecting client's record must stay", conns, err)
	}
}

// goneSpy reports each post the management API refused with 410.
type goneSpy struct {
	relay.API
	gone chan struct{}
}

func (g *goneSpy) PostToConnection(ctx context.Context, in *apigatewaymanagementapi.PostToConnectionInput, opts ...func(*apigatewaymanagementapi.Options)) (*apigatewaymanagementapi.PostToConnectionOutput, error) {
	out, err := g.API.PostToConnection(ctx, in, opts...)
	var gone *types.GoneException
	if errors.As(err, &gone) {
		select {
		case g.gone <- struct{}{}:
		default:
		}
	}
	return out, err
}

// SIGTERM while the files are restoring releases the lease without a sync (no workload
// ran, nothing changed) and is a clean exit.
func TestAgent_Run_SIGTERMWhileRestoring_ReleasedCleanly(t *testing.T) {
	h := newHarness(t, nil)
	cl := h.connect()
	h.acquire()
	spy := newSpy(h.store)
	bucket := &spyBucket{Bucket: h.bucket, listHold: make(chan struct{})}
	stop, result := h.run(h.agent(spy, bucket))
	cl.until(isFrame(frames.TypeStatus, frames.Restoring))
	stop()
	if err := result(); err != nil {
		t.Fatalf("Run = %v, want a clean stop", err)
	}
	cl.until(isFrame(frames.TypeStatus, frames.Stopping))
	if rec := h.record(); rec.State != state.Stopped || rec.Reason != "stopped while starting" {
		t.Fatalf("record %s %q", rec.State, rec.Reason)
	}
	if n := bucket.puts.Load(); n != 0 {
		t.Fatalf("%d uploads", n)
	}
}

// A restore that fails releases the lease (the next connection starts afresh), tells
// the clients start_failed, and Run reports ErrStart.
func TestAgent_Run_RestoreFails_StartFailed(t *testing.T) {
	h := newHarness(t, nil)
	cl := h.connect()
	h.acquire()
	bucket := &spyBucket{Bucket: h.bucket}
	bucket.listErr.Store(&errInjected)
	_, result := h.run(h.agent(h.store, bucket))
	cl.until(isFrame(frames.TypeError, frames.ReasonStartFailed))
	if err := result(); !errors.Is(err, agent.ErrStart) || !errors.Is(err, errInjected) {
		t.Fatalf("Run = %v, want ErrStart wrapping the cause", err)
	}
	if rec := h.record(); rec.State != state.Stopped || !strings.Contains(rec.Reason, "restore") {
		t.Fatalf("record %s %q", rec.State, rec.Reason)
	}
	if n := bucket.puts.Load(); n != 0 {
		t.Fatalf("%d uploads", n)
	}
}

// A lease that is not STARTING with this task's token is not ours: Run returns
// ErrNotHolder and writes nothing.
func TestAgent_Run_NotTheHolder(t *testing.T) {
	h := newHarness(t, nil)
	h.acquire()
	real := h.lease
	h.lease.Token = "someone-elses-token"
	spy := newSpy(h.store)
	_, result := h.run(h.agent(spy, &spyBucket{Bucket: h.bucket}))
	if err := result(); !errors.Is(err, agent.ErrNotHolder) {
		t.Fatalf("Run = %v, want ErrNotHolder", err)
	}
	if rec := h.record(); rec.LeaseToken != real.Token || rec.State != state.Starting || rec.Version != 1 {
		t.Fatalf("record changed: %s v%d", rec.State, rec.Version)
	}
	if spy.n("Abort")+spy.n("Stop")+spy.n("MarkStopping") != 0 {
		t.Fatalf("writes: %v", spy.calls)
	}
}

// On SIGTERM the workload is stopped (and may flush) before the final sync, which
// therefore stores what it wrote while flushing.
func TestAgent_Run_WorkloadFlushesBeforeTheFinalSync(t *testing.T) {
	h := newHarness(t, map[string]string{"workload": "flusher"})
	h.acquire()
	stop, result := h.run(h.agent(h.store, h.bucket))
	h.running()
	stop()
	if err := result(); err != nil {
		t.Fatal(err)
	}
	_, body, err := h.bucket.Get(context.Background(), "users/"+h.userID+"/files/flushed-on-sigterm.txt")
	if err != nil {
		t.Fatalf("the workload's flush was not synced: %v", err)
	}
	body.Close()
}

// A final sync that hangs is cut off in time for the lease to be released before the
// stop timeout (when ECS would SIGKILL the task), and Run reports ErrFinalSync.
func TestAgent_Run_FinalSyncHangs_ReleasedWithinTheStopTimeout(t *testing.T) {
	// The stop keeps a fifth of STOP_TIMEOUT (3 s here) for the release: more than a
	// loaded machine takes for one write.
	const stopTimeout = 15 * time.Second
	h := newHarness(t, map[string]string{"STOP_TIMEOUT": stopTimeout.String(), "WORKLOAD_GRACE": "500ms"})
	h.acquire()
	spy, bucket, stop, result := h.runWithWork("pending.txt", "never stored")
	bucket.hangPuts.Store(true)
	begin := time.Now()
	stop()
	err := result()
	took := time.Since(begin)
	if !errors.Is(err, agent.ErrFinalSync) {
		t.Fatalf("Run = %v, want ErrFinalSync", err)
	}
	// A deadline of the contract, not a performance figure: past it ECS kills the task.
	if took >= stopTimeout {
		t.Fatalf("stop took %s, over STOP_TIMEOUT %s", took, stopTimeout)
	}
	if rec := h.record(); rec.State != state.Stopped || rec.Reason != "final sync failed" || spy.n("Stop") != 0 {
		t.Fatalf("record %s %q, Stop calls %d", rec.State, rec.Reason, spy.n("Stop"))
	}
}

// When the workload closes a client's WebSocket itself, the agent closes the client's
// connection too; the user's other connections go on.
func TestAgent_WorkloadClosesAConnection_ClientClosed(t *testing.T) {
	h := newHarness(t, map[string]string{"workload": "crashy"})
	done, other := h.connect(), h.connect()
	h.acquire()
	h.run(h.agent(h.store, h.bucket))
	target := h.running()
	ctx := context.Background()
	if err := h.api.Deliver(ctx, target, done.id, []byte("close")); err != nil {
		t.Fatal(err)
	}
	done.closed(t)
	if err := h.api.Deliver(ctx, target, other.id, []byte("still served")); err != nil {
		t.Fatal(err)
	}
	other.until(testkit.Is("still served"))
}

// Frames the API accepted (202) while the inbox was draining are not lost when the
// start fails after MarkReady (the inbox cannot be read, or SIGTERM comes): the stop
// writes them to the workload before stopping it, and the final sync keeps what the
// workload made of them.
func TestAgent_Run_StopDuringTheDrain_HeldFramesDelivered(t *testing.T) {
	for _, tc := range []struct {
		name    string
		sigterm bool
	}{{"InboxReadFails", false}, {"SIGTERM", true}} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, map[string]string{"workload": "recorder", envExpect: "3"})
			cl := h.connect()
			h.acquire()
			spy := newSpy(h.store)
			spy.inbox, spy.inboxHit = make(chan struct{}), make(chan struct{})
			if !tc.sigterm {
				spy.inboxErr = errInjected
			}
			stop, result := h.run(h.agent(spy, h.bucket))
			<-spy.inboxHit // RUNNING: the Lambdas deliver, and the router holds
			target := h.running()
			ctx := context.Background()
			for i := range 3 {
				if err := h.api.Deliver(ctx, target, cl.id, fmt.Appendf(nil, "new-%d", i)); err != nil {
					t.Fatalf("Deliver during the drain: %v", err)
				}
			}
			if tc.sigterm {
				stop()
			}
			close(spy.inbox)
			err := result()
			switch {
			case tc.sigterm && err != nil:
				t.Fatalf("Run = %v, want a clean stop", err)
			case !tc.sigterm && (!errors.Is(err, agent.ErrStart) || !errors.Is(err, errInjected)):
				t.Fatalf("Run = %v, want ErrStart wrapping the inbox failure", err)
			}
			if rec := h.record(); rec.State != state.Stopped {
				t.Fatalf("record %s %q", rec.State, rec.Reason)
			}
			_, body, err := h.bucket.Get(ctx, "users/"+h.userID+"/files/received.txt")
			if err != nil {
				t.Fatalf("the workload's record was not synced: %v", err)
			}
			defer body.Close()
			got, err := io.ReadAll(body)
			if err != nil {
				t.Fatal(err)
			}
			if want := "new-0\nnew-1\nnew-2\n"; string(got) != want {
				t.Fatalf("the workload received %q, want %q: accepted frames were lost", got, want)
			}
		})
	}
}
