package state_test

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"

	"github.com/sandgate/sandgate/infra/local/dynamodblocal"
	"github.com/sandgate/sandgate/internal/state"
)

// 1,000 goroutines start sandboxes for 100 users at once: exactly one winner per
// user, every loser sees the winner's lease, and the counter is exactly 100.
func TestStore_Acquire_Race1000Goroutines100Users(t *testing.T) {
	e := newEnv(t)
	e.store.MaxSandboxes = 1000
	const users, perUser = 100, 10
	type result struct {
		user  string
		lease state.Lease
		err   error
	}
	results := make(chan result, users*perUser)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range users * perUser {
		user := fmt.Sprintf("user_%03d", i%users)
		wg.Go(func() {
			<-start
			l, err := e.store.Acquire(context.Background(), user)
			results <- result{user, l, err}
		})
	}
	close(start)
	wg.Wait()
	close(results)

	winners := map[string]state.Lease{}
	var losers []result
	for r := range results {
		switch {
		case r.err == nil:
			if w, dup := winners[r.user]; dup {
				t.Fatalf("two winners for %s: %+v and %+v", r.user, w, r.lease)
			}
			winners[r.user] = r.lease
		case errors.Is(r.err, state.ErrHeld):
			losers = append(losers, r)
		default:
			t.Fatalf("Acquire(%s) = %v", r.user, r.err)
		}
	}
	if len(winners) != users || len(losers) != users*(perUser-1) {
		t.Fatalf("%d winners, %d losers; want %d, %d", len(winners), len(losers), users, users*(perUser-1))
	}
	for _, r := range losers {
		var held *state.HeldError
		errors.As(r.err, &held)
		if w := winners[r.user]; held.Sandbox.LeaseToken != w.Token || held.Sandbox.Generation != w.Generation {
			t.Fatalf("loser for %s saw generation %d, winner has %d", r.user, held.Sandbox.Generation, w.Generation)
		}
	}
	// Losers learnt the winner from their failed write (ALL_OLD): one read each, no more.
	if got := e.calls.Calls("DynamoDB", "GetItem"); got != users*perUser {
		t.Fatalf("%d GetItem calls, want %d", got, users*perUser)
	}
	if live := e.checkInvariants(t); live != users {
		t.Fatalf("%d live, want %d", live, users)
	}
}

// With MaxSandboxes 10 and 50 users racing, exactly 10 are admitted and the rest get
// a capacity error; stopping one admits exactly one more.
func TestStore_Acquire_CapacityRace(t *testing.T) {
	e := newEnv(t)
	e.store.MaxSandboxes = 10
	race := func(users []string) (won map[string]state.Lease, refused []string) {
		won = map[string]state.Lease{}
		var mu sync.Mutex
		var wg sync.WaitGroup
		start := make(chan struct{})
		for _, u := range users {
			wg.Go(func() {
				<-start
				l, err := e.store.Acquire(context.Background(), u)
				mu.Lock()
				defer mu.Unlock()
				var ce *state.CapacityError
				switch {
				case err == nil:
					won[u] = l
				case errors.As(err, &ce) && errors.Is(err, state.ErrCapacity):
					if ce.Max != 10 || ce.Live != 10 {
						t.Errorf("CapacityError %+v, want 10 of 10", *ce)
					}
					refused = append(refused, u)
				default:
					t.Errorf("Acquire(%s) = %v", u, err)
				}
			})
		}
		close(start)
		wg.Wait()
		return won, refused
	}
	var users []string
	for i := range 50 {
		users = append(users, fmt.Sprintf("user_%02d", i))
	}
	won, refused := race(users)
	if len(won) != 10 || len(refused) != 40 {
		t.Fatalf("%d admitted, %d refused; want 10, 40", len(won), len(refused))
	}
	if e.checkInvariants(t) != 10 {
		t.Fatal("counter not 10")
	}
	for _, l := range won {
		if err := stopFully(context.Background(), e.store, l); err != nil {
			t.Fatal(err)
		}
		break
	}
	won2, refused2 := race(refused)
	if len(won2) != 1 || len(refused2) != 39 {
		t.Fatalf("after one stop: %d admitted, %d refused; want 1, 39", len(won2), len(refused2))
	}
	if e.checkInvariants(t) != 10 {
		t.Fatal("counter not 10")
	}
}

// conflictProxy sits between the SDK and DynamoDB Local and answers the first n
// write requests with the conflict errors real DynamoDB sends when transactions touch
// one item at once (DynamoDB Local serializes them and never does). It speaks the
// JSON 1.0 wire protocol; everything else is passed through.
//
// It can also lose answers: while lostAnswers > 0, an UpdateItem reaches DynamoDB
// and commits, but the client gets a retryable 500 instead of the answer, so the
// SDK sends the same request again (a response lost on the network, or a 500 after
// the write, on AWS). And before, when set, runs once before the next UpdateItem
// is forwarded: another writer acting between a caller's read and its write.
type conflictProxy struct {
	*httptest.Server
	left        atomic.Int64
	injected    atomic.Int64
	lostAnswers atomic.Int64
	lost        atomic.Int64
	before      atomic.Pointer[func()]
}

func newConflictProxy(tb testing.TB, target string, n int64) *conflictProxy {
	u, err := url.Parse(target)
	if err != nil {
		tb.Fatal(err)
	}
	p := &conflictProxy{}
	p.left.Store(n)
	rp := httputil.NewSingleHostReverseProxy(u)
	p.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		op := strings.TrimPrefix(r.Header.Get("X-Amz-Target"), "DynamoDB_20120810.")
		if (op == "TransactWriteItems" || op == "UpdateItem") && p.left.Add(-1) >= 0 {
			_, _ = io.Copy(io.Discard, r.Body)
			p.injected.Add(1)
			body := `{"__type":"com.amazonaws.dynamodb.v20120810#TransactionConflictException","message":"Transaction is ongoing for the item"}`
			if op == "TransactWriteItems" {
				body = `{"__type":"com.amazonaws.dynamodb.v20120810#TransactionCanceledException",` +
					`"Message":"Transaction cancelled, please refer cancellation reasons for specific reasons [None, TransactionConflict]",` +
					`"CancellationReasons":[{"Code":"None"},{"Code":"TransactionConflict","Message":"Transaction is ongoing for the item"}]}`
			}
			w.Header().Set("Content-Type", "application/x-amz-json-1.0")
			w.WriteHeader(http.StatusBadRequest)
			_, _ = io.WriteString(w, body)
			return
		}
		if op == "UpdateItem" {
			if f := p.before.Swap(nil); f != nil {
				(*f)()
			}
			if p.lostAnswers.Add(-1) >= 0 {
				rec := httptest.NewRecorder()
				rp.ServeHTTP(rec, r) // committed; the answer goes nowhere
				p.lost.Add(1)
				body := `{"__type":"com.amazonaws.dynamodb.v20120810#InternalServerError","message":"Internal server error"}`
				w.Header().Set("Content-Type", "application/x-amz-json-1.0")
				w.Header().Set("X-Amz-Crc32", strconv.FormatUint(uint64(crc32.ChecksumIEEE([]byte(body))), 10))
				w.WriteHeader(http.StatusInternalServerError)
				_, _ = io.WriteString(w, body)
				return
			}
		}
		rp.ServeHTTP(w, r)
	}))
	tb.Cleanup(p.Close)
	return p
}

func TestStore_Acquire_RetriesTransactionConflicts(t *testing.T) {
	srv := dynamodblocal.StartForTest(t)
	proxy := newConflictProxy(t, srv.Endpoint(), 3)
	e := newEnvOn(t, srv, func(o *dynamodb.Options) { o.BaseEndpoint = aws.String(proxy.URL) })
	e.store.Retry = state.RetryPolicy{MaxAttempts: 5, BaseDelay: time.Millisecond, MaxDelay: 5 * time.Millisecond}
	l := mustAcquire(t, e.store, "user_a")
	if proxy.injected.Load() != 3 || l.Generation != 1 {
		t.Fatalf("injected %d conflicts, lease %+v", proxy.injected.Load(), l)
	}
	e.wantCalls(t, map[string]int64{"GetItem": 1, "TransactWriteItems": 4})
	if e.checkInvariants(t) != 1 {
		t.Fatal("counter not 1")
	}
	// Fenced single-item writes retry TransactionConflictException the same way.
	proxy.left.Store(2)
	if _, err := e.store.Heartbeat(context.Background(), l, time.Time{}); err != nil {
		t.Fatalf("Heartbeat through conflicts = %v", err)
	}
}

func TestStore_Acquire_ContentionExhausted(t *testing.T) {
	srv := dynamodblocal.StartForTest(t)
	proxy := newConflictProxy(t, srv.Endpoint(), 1<<30)
	e := newEnvOn(t, srv, func(o *dynamodb.Options) { o.BaseEndpoint = aws.String(proxy.URL) })
	e.store.Retry = state.RetryPolicy{MaxAttempts: 4, BaseDelay: time.Millisecond, MaxDelay: 2 * time.Millisecond}
	_, err := e.store.Acquire(context.Background(), "user_a")
	wantErr(t, err, state.ErrContention)
	if proxy.injected.Load() != 4 {
		t.Fatalf("%d attempts, want 4", proxy.injected.Load())
	}
	_, err = e.store.Get(context.Background(), "user_a")
	wantErr(t, err, state.ErrNotFound)
	if e.checkInvariants(t) != 0 {
		t.Fatal("a cancelled start was counted")
	}
}

// Many goroutines drive every path at once for a few users: start, ready, heartbeat,
// stop, release, takeover after expiry, reap and purge. Every call either succeeds or
// fails with one of the errors its contract names for a lost race, each path succeeds
// some of the time, and afterwards the counter equals the live records and no record
// is half-written.
func TestStore_ConcurrentMixedOperations(t *testing.T) {
	e := newEnv(t)
	e.store.MaxSandboxes = 4
	ctx := context.Background()
	users := []string{"user_a", "user_b", "user_c", "user_d", "user_e", "user_f"}
	// The errors each operation may meet here: another goroutine's lease, the
	// capacity bound, a purge lock, a lease taken over, reaped or purged meanwhile.
	allowed := map[string][]error{
		"Acquire":      {state.ErrHeld, state.ErrCapacity, state.ErrPurging},
		"Release":      {state.ErrLeaseLost, state.ErrState},
		"MarkReady":    {state.ErrLeaseLost, state.ErrState},
		"Stop":         {state.ErrLeaseLost, state.ErrState},
		"Heartbeat":    {state.ErrLeaseLost, state.ErrState},
		"Reap":         {state.ErrHeld, state.ErrLeaseLost, state.ErrState},
		"AcquirePurge": {state.ErrHeld, state.ErrPurging},
		"FinishPurge":  {state.ErrLeaseLost},
	}
	var mu sync.Mutex
	succeeded := map[string]int{}
	record := func(op string, err error) {
		if err != nil {
			for _, target := range allowed[op] {
				if errors.Is(err, target) {
					return
				}
			}
			t.Errorf("%s = %v, not an outcome of a race", op, err)
			return
		}
		mu.Lock()
		succeeded[op]++
		mu.Unlock()
	}
	var wg sync.WaitGroup
	for g := range 12 {
		wg.Go(func() {
			for i := range 25 {
				u := users[(g+i)%len(users)]
				l, err := e.store.Acquire(ctx, u)
				record("Acquire", err)
				if err == nil {
					switch i % 4 {
					case 0:
						record("Release", e.store.Release(ctx, l, "test"))
					case 1:
						gen := l.Generation
						l, err = e.store.MarkReady(ctx, l, "http://x", "gw")
						record("MarkReady", err)
						if err == nil {
							record("Stop", e.store.Stop(ctx, l))
						}
						// The task's stop event, whether or not the Stop won.
						_, err = e.store.TaskStopped(ctx, state.TaskRef{UserID: u, Generation: gen}, "test")
						record("TaskStopped", err)
					case 2:
						_, err = e.store.Heartbeat(ctx, l, time.Time{})
						record("Heartbeat", err)
					case 3:
						// The task dies: its container exits, then it stops.
						ref := state.TaskRef{UserID: u, Generation: l.Generation}
						_, err = e.store.TaskExited(ctx, ref, "test: exited")
						record("TaskExited", err)
						_, err = e.store.TaskStopped(ctx, ref, "test: stopped")
						record("TaskStopped", err)
					}
				}
				if i%5 == 0 {
					// Every write keeps the counter exact, so a check racing them may
					// find it moved, never wrong.
					c, err := e.store.ReconcileCapacity(ctx)
					record("ReconcileCapacity", err)
					if c.Corrected {
						t.Errorf("ReconcileCapacity corrected the counter during the race: %+v", c)
					}
				}
				if i%7 == 0 {
					e.clock.Advance(state.DefaultStartTTL) // everyone's lease expires
					err := e.store.ListSandboxes(ctx, func(sb *state.Sandbox) error {
						if sb.Expired(e.clock.Now()) {
							record("Reap", e.store.Reap(ctx, sb))
						}
						return nil
					})
					if err != nil {
						t.Errorf("ListSandboxes = %v", err)
					}
				}
				if i%11 == 0 {
					p, err := e.store.AcquirePurge(ctx, u)
					record("AcquirePurge", err)
					if err == nil {
						record("FinishPurge", e.store.FinishPurge(ctx, p))
					}
				}
			}
		})
	}
	wg.Wait()
	t.Logf("successes: %v", succeeded)
	// Minimums far below what a run gives (Acquire succeeds well over a hundred
	// times), so only a path that stopped working fails them.
	for op, least := range map[string]int{
		"Acquire": 24, "Release": 1, "MarkReady": 1, "Stop": 1, "Heartbeat": 1,
		"Reap": 1, "AcquirePurge": 1, "FinishPurge": 1, "TaskExited": 1, "TaskStopped": 1, "ReconcileCapacity": 1,
	} {
		if succeeded[op] < least {
			t.Errorf("%s succeeded %d times, want at least %d", op, succeeded[op], least)
		}
	}
	e.checkInvariants(t)
}

// newLossyEnv is an env whose client goes through a conflictProxy, with SDK retries
// quick enough for a test.
func newLossyEnv(t *testing.T) (*env, *conflictProxy) {
	t.Helper()
	srv := dynamodblocal.StartForTest(t)
	proxy := newConflictProxy(t, srv.Endpoint(), 0)
	e := newEnvOn(t, srv, func(o *dynamodb.Options) {
		o.BaseEndpoint = aws.String(proxy.URL)
		o.Retryer = retry.NewStandard(func(so *retry.StandardOptions) { so.MaxBackoff = 5 * time.Millisecond })
	})
	return e, proxy
}

// A takeover's UpdateItem commits but its answer is lost; the SDK sends it again,
// and the version condition fails against our own new record. That is our lease,
// not another holder's.
func TestStore_Acquire_TakeoverAnswerLost(t *testing.T) {
	e, proxy := newLossyEnv(t)
	ctx := context.Background()
	old := mustAcquire(t, e.store, "user_a")
	e.clock.Advance(state.DefaultStartTTL)
	proxy.lostAnswers.Store(1)
	e.calls.Reset()
	l, err := e.store.Acquire(ctx, "user_a")
	if err != nil {
		t.Fatalf("Acquire with a lost answer = %v, want our lease", err)
	}
	if proxy.lost.Load() != 1 || e.calls.Attempts("DynamoDB", "UpdateItem") != 2 {
		t.Fatalf("%d answers lost, %d UpdateItem attempts: the SDK did not retry", proxy.lost.Load(), e.calls.Attempts("DynamoDB", "UpdateItem"))
	}
	e.wantCalls(t, map[string]int64{"GetItem": 1, "UpdateItem": 1})
	if sb := mustGet(t, e.store, "user_a"); sb.LeaseToken != l.Token || sb.Generation != old.Generation+1 || l.Generation != sb.Generation {
		t.Fatalf("record %+v, lease %+v", *sb, l)
	}
	if _, err := e.store.Heartbeat(ctx, l, time.Time{}); err != nil {
		t.Fatalf("the lease Acquire returned does not hold: %v", err)
	}
	if e.checkInvariants(t) != 1 {
		t.Fatal("count changed")
	}
}

// The same for the purge lock, in both forms, and for its release.
func TestStore_AcquirePurge_AnswerLost(t *testing.T) {
	e, proxy := newLossyEnv(t)
	ctx := context.Background()
	for _, u := range []string{"user_a", "user_b"} {
		if err := stopFully(ctx, e.store, mustAcquire(t, e.store, u)); err != nil {
			t.Fatal(err)
		}
	}
	e.clock.Advance(91 * 24 * time.Hour)
	locks := map[string]func() (state.Lease, error){
		"user_a": func() (state.Lease, error) { return e.store.AcquirePurge(ctx, "user_a") },
		"user_b": func() (state.Lease, error) {
			return e.store.AcquirePurgeIfInactive(ctx, "user_b", e.clock.Now().Add(-90*24*time.Hour))
		},
	}
	for u, lock := range locks {
		proxy.lostAnswers.Store(1)
		p, err := lock()
		if err != nil || proxy.lost.Load() == 0 {
			t.Fatalf("%s: lock with a lost answer = %+v, %v (%d lost)", u, p, err, proxy.lost.Load())
		}
		proxy.lost.Store(0)
		if sb := mustGet(t, e.store, u); sb.State != state.Purging || sb.LeaseToken != p.Token {
			t.Fatalf("%s: record %+v", u, *sb)
		}
		proxy.lostAnswers.Store(1)
		if err := e.store.ReleasePurge(ctx, p); err != nil || proxy.lost.Load() == 0 {
			t.Fatalf("%s: release with a lost answer = %v (%d lost)", u, err, proxy.lost.Load())
		}
		proxy.lost.Store(0)
		if sb := mustGet(t, e.store, u); sb.State != state.Stopped {
			t.Fatalf("%s: record after release %+v", u, *sb)
		}
	}
}
