package state_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/sandgate/sandgate/infra/local/dynamodblocal"
	"github.com/sandgate/sandgate/internal/awsconf"
	"github.com/sandgate/sandgate/internal/state"
)

// expected reports whether err is one of the Store's typed outcomes.
func expected(err error) bool {
	for _, target := range []error{
		state.ErrUnavailable, state.ErrHeld, state.ErrLeaseLost, state.ErrCapacity,
		state.ErrInboxFull, state.ErrState, state.ErrRunning, state.ErrPurging,
	} {
		if errors.Is(err, target) {
			return true
		}
	}
	return err == nil
}

// DynamoDB goes away in the middle of a concurrent workload, then comes back (same
// port, same data directory). While it is away every operation returns
// ErrUnavailable; afterwards the state is whole: the counter equals the live records,
// no record holds half a lease, every inbox counter matches its items.
func TestStore_EndpointStopped_TypedErrorsNoPartialState(t *testing.T) {
	ctx := context.Background()
	srv, err := dynamodblocal.Start(ctx, dynamodblocal.Options{DBPath: t.TempDir(), StopGrace: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Stop() })
	e := newEnvOn(t, srv, func(o *dynamodb.Options) {
		// Fail fast: two attempts, short back-off, short attempt timeout.
		o.Retryer = retry.NewStandard(func(so *retry.StandardOptions) {
			so.MaxAttempts = 2
			so.MaxBackoff = 20 * time.Millisecond
		})
		o.HTTPClient = awsconf.NewHTTPClient().WithTimeout(2 * time.Second)
	})
	e.store.MaxSandboxes = 1000
	for i := range 10 {
		l := mustAcquire(t, e.store, fmt.Sprintf("user_%d", i))
		if i%2 == 0 {
			if _, err := e.store.MarkReady(ctx, l, "http://10.0.0.1:8080", "gw"); err != nil {
				t.Fatal(err)
			}
		}
	}

	// The workload: starts, stops, heartbeats, inbox traffic, connections.
	var (
		stop        = make(chan struct{})
		wg          sync.WaitGroup
		unavailable atomic.Int64
		next        atomic.Int64
		progress    atomic.Int64
		running     = make(chan struct{}) // closed once the workload is under way
		runningOnce sync.Once
	)
	next.Store(100)
	for g := range 6 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				user := "user_" + strconv.FormatInt(next.Add(1), 10)
				var err error
				switch i % 3 {
				case 0:
					var l state.Lease
					if l, err = e.store.Acquire(ctx, user); err == nil {
						if _, err = e.store.Heartbeat(ctx, l, time.Time{}); err == nil && g%2 == 0 {
							err = stopFully(ctx, e.store, l)
						}
					}
				case 1:
					inboxUser := "user_inbox" + strconv.Itoa(g)
					var it state.InboxItem
					if it, err = e.store.Enqueue(ctx, inboxUser, "c", []byte("payload")); err == nil && i%2 == 0 {
						err = e.store.Ack(ctx, it)
					}
				case 2:
					_, err = e.store.AddConnection(ctx, user, "conn")
				}
				if !expected(err) {
					t.Errorf("workload: untyped error %v", err)
					return
				}
				if errors.Is(err, state.ErrUnavailable) {
					unavailable.Add(1)
				}
				if progress.Add(1) == 60 {
					runningOnce.Do(func() { close(running) })
				}
			}
		})
	}
	// DynamoDB goes away once the workload has had 60 operations through.
	select {
	case <-running:
	case <-time.After(time.Minute):
		close(stop)
		wg.Wait()
		t.Fatal("the workload made no progress")
	}
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); unavailable.Load() < 6 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	if unavailable.Load() == 0 {
		t.Fatal("the workload never saw ErrUnavailable")
	}

	// Every operation, while DynamoDB is away.
	l := state.Lease{UserID: "user_0", Token: "t", Generation: 1}
	sb := &state.Sandbox{UserID: "user_0", State: state.Running, LeaseToken: "t", Generation: 1}
	ops := map[string]func() error{
		"Acquire":      func() error { _, err := e.store.Acquire(ctx, "user_x"); return err },
		"Get":          func() error { _, err := e.store.Get(ctx, "user_0"); return err },
		"Capacity":     func() error { _, err := e.store.Capacity(ctx); return err },
		"SetTask":      func() error { return e.store.SetTask(ctx, l, "arn") },
		"MarkReady":    func() error { _, err := e.store.MarkReady(ctx, l, "http://x", "gw"); return err },
		"Heartbeat":    func() error { _, err := e.store.Heartbeat(ctx, l, time.Time{}); return err },
		"MarkStopping": func() error { return e.store.MarkStopping(ctx, l) },
		"Stop":         func() error { return e.store.Stop(ctx, l) },
		"Abort":        func() error { return e.store.Abort(ctx, l, "x") },
		"Release":      func() error { return e.store.Release(ctx, l, "x") },
		"TaskExited": func() error {
			_, err := e.store.TaskExited(ctx, state.TaskRef{UserID: "user_0", Generation: 1}, "x")
			return err
		},
		"TaskStopped": func() error {
			_, err := e.store.TaskStopped(ctx, state.TaskRef{UserID: "user_0", Generation: 1}, "x")
			return err
		},
		"ReturnSlot":        func() error { _, err := e.store.ReturnSlot(ctx, "user_0", 1); return err },
		"ReconcileCapacity": func() error { _, err := e.store.ReconcileCapacity(ctx); return err },
		"Reap":              func() error { return e.store.Reap(ctx, sb) },
		"ListSandboxes":     func() error { return e.store.ListSandboxes(ctx, func(*state.Sandbox) error { return nil }) },
		"ListSandboxesIndexed": func() error {
			return e.store.ListSandboxesIndexed(ctx, func(*state.Sandbox) error { return nil })
		},
		"BackfillSandboxIndex": func() error { _, err := e.store.BackfillSandboxIndex(ctx); return err },
		"AcquirePurge":         func() error { _, err := e.store.AcquirePurge(ctx, "user_x"); return err },
		"FinishPurge":          func() error { return e.store.FinishPurge(ctx, l) },
		"BeginPurge":           func() error { return e.store.BeginPurge(ctx, l) },
		"ReleasePurge":         func() error { return e.store.ReleasePurge(ctx, l) },
		"AcquirePurgeIfInactive": func() error {
			_, err := e.store.AcquirePurgeIfInactive(ctx, "user_x", e.clock.Now())
			return err
		},
		"AddConnection":    func() error { _, err := e.store.AddConnection(ctx, "user_0", "c"); return err },
		"RemoveConnection": func() error { return e.store.RemoveConnection(ctx, "user_0", "c") },
		"Connections":      func() error { _, err := e.store.Connections(ctx, "user_0"); return err },
		"Enqueue":          func() error { _, err := e.store.Enqueue(ctx, "user_0", "c", []byte("m")); return err },
		"Inbox":            func() error { _, err := e.store.Inbox(ctx, "user_0"); return err },
		"Ack":              func() error { return e.store.Ack(ctx, state.InboxItem{UserID: "user_0", Seq: 1}) },
	}
	sb.LeaseDeadline = e.clock.Now().Add(-time.Second) // expired, so Reap reaches DynamoDB
	for name, op := range ops {
		err := op()
		var ue *state.UnavailableError
		if !errors.As(err, &ue) || !errors.Is(err, state.ErrUnavailable) || ue.Err == nil {
			t.Errorf("%s with DynamoDB stopped = %v, want *UnavailableError", name, err)
		}
	}

	if err := srv.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	// The restarted emulator's first Scan can outlast the store's 2 s attempt timeout
	// (a cold JVM on a loaded machine), and the calls refused above have spent the
	// SDK's retry quota: let the uncounted client, with its default timeouts, make
	// that first Scan.
	tn := e.table
	if _, err := e.client.Scan(ctx, &dynamodb.ScanInput{TableName: &tn}); err != nil {
		t.Fatal(err)
	}
	live := e.checkInvariants(t)
	t.Logf("after restart: %d live sandboxes, %d ErrUnavailable seen by the workload", live, unavailable.Load())
	for g := range 6 {
		checkInboxCounter(t, e, "user_inbox"+strconv.Itoa(g))
	}
	// And it works again.
	mustAcquire(t, e.store, "user_after")
	e.checkInvariants(t)
}

// checkInboxCounter asserts the user's inbox counter counts exactly its items.
func checkInboxCounter(t *testing.T, e *env, user string) {
	t.Helper()
	items := inbox(t, e.store, user)
	meta := e.raw(t, "USER#"+user, "INBOXMETA")
	if meta == nil {
		if len(items) != 0 {
			t.Fatalf("%s: %d items without a counter", user, len(items))
		}
		return
	}
	n, _ := strconv.Atoi(meta["count"].(*types.AttributeValueMemberN).Value)
	b, _ := strconv.Atoi(meta["bytes"].(*types.AttributeValueMemberN).Value)
	size := 0
	for _, it := range items {
		size += len(it.Payload)
	}
	if n != len(items) || b != size {
		t.Fatalf("%s: counter says %d items / %d bytes, inbox holds %d / %d", user, n, b, len(items), size)
	}
}
