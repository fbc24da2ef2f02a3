package agent_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/sandgate/sandgate/infra/local/testkit"
	"github.com/sandgate/sandgate/internal/agent"
	"github.com/sandgate/sandgate/internal/state"
	"github.com/sandgate/sandgate/internal/vend"
)

// scriptedVendor answers each request with what the test hands it next, and tells the
// test each request it gets.
type scriptedVendor struct {
	asked   chan vend.Request
	answers chan vendAnswer
}

type vendAnswer struct {
	creds vend.Credentials
	err   error
}

func newScriptedVendor() *scriptedVendor {
	return &scriptedVendor{asked: make(chan vend.Request, 16), answers: make(chan vendAnswer, 16)}
}

func (v *scriptedVendor) Credentials(ctx context.Context, r vend.Request) (vend.Credentials, error) {
	v.asked <- r
	select {
	case a := <-v.answers:
		return a.creds, a.err
	case <-ctx.Done():
		return vend.Credentials{}, ctx.Err()
	}
}

// grant queues credentials valid for life from now on clock, named n.
func (v *scriptedVendor) grant(clock *testkit.Clock, n int, life time.Duration) {
	v.answers <- vendAnswer{creds: vend.Credentials{AccessKeyID: fmt.Sprintf("ASIA%d", n), SecretAccessKey: "s", SessionToken: "t",
		Expiration: clock.Now().Add(life)}}
}

func (v *scriptedVendor) fail(err error) { v.answers <- vendAnswer{err: err} }

// await waits for the next request, failing the test after a while.
func (v *scriptedVendor) await(t *testing.T) vend.Request {
	t.Helper()
	select {
	case r := <-v.asked:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("the vendor was never asked")
		return vend.Request{}
	}
}

// waiting waits until the credentials wait on the clock.
func waiting(t *testing.T, clock *testkit.Clock) {
	t.Helper()
	testkit.Eventually(t, 10*time.Second, func() bool { return clock.Waiters() > 0 }, func() string { return "the credentials never waited" })
}

func newCreds(v agent.Vendor, clock *testkit.Clock) *agent.Credentials {
	c := agent.NewCredentials(v, vend.Request{UserID: "user_alice", Generation: 2, LeaseToken: "tok"}, nil)
	c.Clock = clock
	return c
}

func accessKey(t *testing.T, c *agent.Credentials) string {
	t.Helper()
	got, err := c.Retrieve(context.Background())
	if err != nil {
		t.Fatalf("Retrieve: %v", err)
	}
	return got.AccessKeyID
}

// The first request is retried while the task is not recorded yet, then the
// credentials are what every client signs with, expiring for the SDK's cache when they
// would be given up.
func TestCredentials_Fetch_RetriesUntilRecorded(t *testing.T) {
	clock := testkit.NewClock()
	v := newScriptedVendor()
	c := newCreds(v, clock)
	if _, err := c.Retrieve(context.Background()); err == nil {
		t.Fatal("credentials before Fetch")
	}
	done := make(chan error, 1)
	go func() { done <- c.Fetch(context.Background()) }()
	if r := v.await(t); r != (vend.Request{UserID: "user_alice", Generation: 2, LeaseToken: "tok"}) {
		t.Errorf("request %+v", r)
	}
	v.fail(vend.ErrNotRecorded)
	waiting(t, clock)
	clock.Advance(time.Second)
	v.await(t)
	v.grant(clock, 1, time.Hour)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	got, err := c.Retrieve(context.Background())
	if err != nil || got.AccessKeyID != "ASIA1" || !got.CanExpire || !got.Expires.Equal(clock.Now().Add(55*time.Minute)) {
		t.Fatalf("Retrieve = %+v, %v", got, err)
	}
	// No storage credentials vended: the bucket signs with the session.
	if s, err := c.Storage().Retrieve(context.Background()); err != nil || s.AccessKeyID != "ASIA1" {
		t.Errorf("Storage = %+v, %v", s, err)
	}
}

// A refusal ends Fetch at once; a vendor that never answers in time ends it after
// RecordWait.
func TestCredentials_Fetch_RefusedOrTimedOut(t *testing.T) {
	clock := testkit.NewClock()
	v := newScriptedVendor()
	c := newCreds(v, clock)
	v.fail(vend.ErrRefused)
	if err := c.Fetch(context.Background()); !errors.Is(err, vend.ErrRefused) {
		t.Fatalf("Fetch = %v, want ErrRefused", err)
	}
	c = newCreds(v, clock)
	c.RecordWait = 3 * time.Second
	done := make(chan error, 1)
	go func() { done <- c.Fetch(context.Background()) }()
	for {
		v.await(t)
		v.fail(errors.New("vendor unreachable"))
		select {
		case err := <-done:
			if err == nil || errors.Is(err, vend.ErrRefused) {
				t.Fatalf("Fetch = %v", err)
			}
			return
		case <-time.After(10 * time.Millisecond):
		}
		waiting(t, clock)
		clock.Advance(5 * time.Second)
	}
}

// Credentials are renewed at two thirds of their life; the renewed ones replace them.
func TestCredentials_Run_RenewsAtTwoThirds(t *testing.T) {
	clock := testkit.NewClock()
	v := newScriptedVendor()
	c := newCreds(v, clock)
	v.grant(clock, 1, time.Hour)
	if err := c.Fetch(context.Background()); err != nil {
		t.Fatal(err)
	}
	<-v.asked
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go c.Run(ctx)
	for n := 2; n <= 4; n++ {
		waiting(t, clock)
		clock.Advance(40*time.Minute - time.Second)
		select {
		case <-v.asked:
			t.Fatal("renewed before two thirds of the credentials' life")
		default:
		}
		waiting(t, clock)
		clock.Advance(time.Second)
		v.await(t)
		v.grant(clock, n, time.Hour)
		testkit.Eventually(t, 10*time.Second, func() bool { return accessKey(t, c) == fmt.Sprintf("ASIA%d", n) },
			func() string { return "the renewed credentials never replaced the old" })
	}
	select {
	case <-c.Lost():
		t.Fatal("lost")
	default:
	}
}

// Credentials that cannot be renewed (the vendor keeps failing) are given up when they
// would expire less the margin, not before; the renewal is retried until then.
func TestCredentials_Run_CannotRenew_Lost(t *testing.T) {
	clock := testkit.NewClock()
	v := newScriptedVendor()
	c := newCreds(v, clock)
	v.grant(clock, 1, time.Hour)
	if err := c.Fetch(context.Background()); err != nil {
		t.Fatal(err)
	}
	<-v.asked
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go c.Run(ctx)
	fence := clock.Now().Add(55 * time.Minute)
	waiting(t, clock)
	clock.Advance(40 * time.Minute)
	retries := 0
	for {
		select {
		case <-v.asked:
			v.fail(errors.New("vendor unreachable"))
			retries++
			waiting(t, clock)
			if clock.Now().Before(fence) {
				if accessKey(t, c) != "ASIA1" {
					t.Fatal("credentials changed")
				}
				clock.Advance(30 * time.Second) // the longest backoff

			}
			continue
		case <-c.Lost():
		}
		break
	}
	if clock.Now().Before(fence) {
		t.Errorf("lost at %s, before the fence %s", clock.Now(), fence)
	}
	if retries < 10 {
		t.Errorf("%d renewals tried in 15 minutes", retries)
	}
	if !errors.Is(c.Err(), agent.ErrCredentialsLost) {
		t.Errorf("Err = %v", c.Err())
	}
	if _, err := c.Retrieve(context.Background()); !errors.Is(err, agent.ErrCredentialsLost) {
		t.Errorf("Retrieve after loss: %v", err)
	}
}

// A refused renewal loses the credentials at once: the record no longer names this
// task with this lease.
func TestCredentials_Run_RenewalRefused_LostAtOnce(t *testing.T) {
	clock := testkit.NewClock()
	v := newScriptedVendor()
	c := newCreds(v, clock)
	v.grant(clock, 1, time.Hour)
	if err := c.Fetch(context.Background()); err != nil {
		t.Fatal(err)
	}
	<-v.asked
	go c.Run(context.Background())
	waiting(t, clock)
	clock.Advance(40 * time.Minute)
	v.await(t)
	v.fail(vend.ErrRefused)
	select {
	case <-c.Lost():
	case <-time.After(10 * time.Second):
		t.Fatal("not lost")
	}
	if !errors.Is(c.Err(), vend.ErrRefused) || !errors.Is(c.Err(), agent.ErrCredentialsLost) {
		t.Errorf("Err = %v", c.Err())
	}
}

// Storage credentials the vendor hands out (R2) are what the bucket signs with.
func TestCredentials_Storage(t *testing.T) {
	clock := testkit.NewClock()
	v := newScriptedVendor()
	c := newCreds(v, clock)
	v.answers <- vendAnswer{creds: vend.Credentials{AccessKeyID: "ASIA1", SecretAccessKey: "s", SessionToken: "t",
		Expiration: clock.Now().Add(time.Hour),
		Storage:    &vend.StorageCredentials{AccessKeyID: "r2key", SecretAccessKey: "r2secret", SessionToken: "r2token", Expiration: clock.Now().Add(time.Hour)}}}
	if err := c.Fetch(context.Background()); err != nil {
		t.Fatal(err)
	}
	s, err := c.Storage().Retrieve(context.Background())
	if err != nil || s.AccessKeyID != "r2key" || s.SecretAccessKey != "r2secret" || s.SessionToken != "r2token" {
		t.Errorf("Storage = %+v, %v", s, err)
	}
}

// An agent whose credentials the vendor refuses writes nothing and says it is not the
// holder; one whose renewal is refused while it runs stops as on a lost lease: no
// stop, no sync, no write.
func TestAgent_Run_Credentials(t *testing.T) {
	h := newHarness(t, nil)
	h.acquire()
	before, err := h.store.Get(context.Background(), h.userID)
	if err != nil {
		t.Fatal(err)
	}
	clock := testkit.NewClock()
	v := newScriptedVendor()
	a := h.agent(h.store, h.bucket)
	a.Credentials = newCreds(v, clock)
	v.fail(vend.ErrRefused)
	if err := a.Run(context.Background()); !errors.Is(err, agent.ErrNotHolder) {
		t.Fatalf("Run = %v, want ErrNotHolder", err)
	}
	if after, _ := h.store.Get(context.Background(), h.userID); after.Version != before.Version {
		t.Errorf("a refused agent wrote its record: %+v", after)
	}
	<-v.asked

	a = h.agent(h.store, h.bucket)
	a.Credentials = newCreds(v, clock)
	v.grant(clock, 1, time.Hour)
	_, result := h.run(a)
	h.running()
	<-v.asked
	running, _ := h.store.Get(context.Background(), h.userID)
	waiting(t, clock)
	clock.Advance(40 * time.Minute)
	v.await(t)
	v.fail(vend.ErrRefused)
	err = result()
	if !errors.Is(err, agent.ErrLeaseLost) || !errors.Is(err, agent.ErrCredentialsLost) {
		t.Fatalf("Run = %v, want a lost lease for lost credentials", err)
	}
	after, _ := h.store.Get(context.Background(), h.userID)
	if after.State != state.Running || after.Version != running.Version {
		t.Errorf("the agent wrote after losing its credentials: %+v (was version %d)", after, running.Version)
	}
}
