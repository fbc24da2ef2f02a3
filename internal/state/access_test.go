package state_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sandgate/sandgate/internal/state"
)

func limits(maxConns int, interval time.Duration, burst int) state.ConnectLimits {
	return state.ConnectLimits{MaxConnections: maxConns, Interval: interval, Burst: burst}
}

// A user's first connect creates the access item; the next ones are one UpdateItem
// each, with no read, while within the limits.
func TestStore_AdmitConnection_OneWriteNoRead(t *testing.T) {
	e := newEnv(t)
	e.store.ConnectLimits = limits(5, time.Second, 5)
	ctx := context.Background()
	if _, err := e.store.AdmitConnection(ctx, "user_a", "c0"); err != nil {
		t.Fatal(err)
	}
	e.calls.Reset()
	e.clock.Advance(2 * time.Second)
	for i := 1; i < 4; i++ {
		if _, err := e.store.AdmitConnection(ctx, "user_a", fmt.Sprintf("c%d", i)); err != nil {
			t.Fatal(err)
		}
		e.clock.Advance(2 * time.Second)
	}
	e.wantCalls(t, map[string]int64{"UpdateItem": 3})
	a, err := e.store.Access(ctx, "user_a")
	if err != nil {
		t.Fatal(err)
	}
	if a.Live(e.clock.Now()) != 4 {
		t.Fatalf("counted %v", a.Conns)
	}
}

// The cap: the (Max+1)th connection is refused with the count, releasing one makes
// room, and releasing is idempotent.
func TestStore_AdmitConnection_Cap(t *testing.T) {
	e := newEnv(t)
	e.store.ConnectLimits = limits(3, time.Millisecond, 100)
	ctx := context.Background()
	for i := range 3 {
		if _, err := e.store.AdmitConnection(ctx, "user_a", fmt.Sprintf("c%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	_, err := e.store.AdmitConnection(ctx, "user_a", "c3")
	var le *state.LimitError
	if !errors.As(err, &le) || !errors.Is(err, state.ErrTooManyConnections) || le.Live != 3 || le.Max != 3 {
		t.Fatalf("fourth connection: %v", err)
	}
	// Another user is not affected.
	if _, err := e.store.AdmitConnection(ctx, "user_b", "c3"); err != nil {
		t.Fatal(err)
	}
	// A connection already counted is admitted again without a second place.
	if _, err := e.store.AdmitConnection(ctx, "user_a", "c1"); err != nil {
		t.Fatalf("re-admitting a counted connection: %v", err)
	}
	for range 2 {
		if err := e.store.ReleaseConnection(ctx, "user_a", "c1"); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.store.ReleaseConnection(ctx, "user_nobody", "c1"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.store.Access(ctx, "user_nobody"); !errors.Is(err, state.ErrNotFound) {
		t.Fatalf("releasing for an unknown user created an item: %v", err)
	}
	if _, err := e.store.AdmitConnection(ctx, "user_a", "c3"); err != nil {
		t.Fatalf("after a release: %v", err)
	}
	if ok, err := e.store.Counted(ctx, "user_a", "c3"); err != nil || !ok {
		t.Fatalf("counted c3: %v %v", ok, err)
	}
	if ok, err := e.store.Counted(ctx, "user_a", "c1"); err != nil || ok {
		t.Fatalf("counted c1 after its release: %v %v", ok, err)
	}
}

// Counted connections older than API Gateway's 2-hour limit are gone whatever became of
// their $disconnect: they stop counting, and the next admission removes them.
func TestStore_AdmitConnection_ExpiredConnectionsDropped(t *testing.T) {
	e := newEnv(t)
	e.store.ConnectLimits = limits(2, time.Millisecond, 100)
	ctx := context.Background()
	for _, id := range []string{"old1", "old2"} {
		if _, err := e.store.AdmitConnection(ctx, "user_a", id); err != nil {
			t.Fatal(err)
		}
	}
	e.clock.Advance(state.ConnectionMaxAge)
	if _, err := e.store.AdmitConnection(ctx, "user_a", "new1"); err != nil {
		t.Fatalf("with the old ones expired: %v", err)
	}
	if _, err := e.store.AdmitConnection(ctx, "user_a", "new2"); err != nil {
		t.Fatalf("second: %v", err)
	}
	a, err := e.store.Access(ctx, "user_a")
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := a.Conns["old1"]; ok || len(a.Conns) != 2 {
		t.Fatalf("conns %v: the expired ones were not removed", a.Conns)
	}
	if _, err := e.store.AdmitConnection(ctx, "user_a", "new3"); !errors.Is(err, state.ErrTooManyConnections) {
		t.Fatalf("third: %v", err)
	}
}

// The rate: a burst of Burst connects, then one per Interval; a refusal says when the
// next is allowed and changes nothing; ChargeConnect spends the rate without a
// connection.
func TestStore_AdmitConnection_Rate(t *testing.T) {
	e := newEnv(t)
	e.store.ConnectLimits = limits(100, time.Second, 3)
	ctx := context.Background()
	for i := range 3 {
		if _, err := e.store.AdmitConnection(ctx, "user_a", fmt.Sprintf("c%d", i)); err != nil {
			t.Fatalf("burst connect %d: %v", i, err)
		}
	}
	_, err := e.store.AdmitConnection(ctx, "user_a", "c3")
	var le *state.LimitError
	if !errors.As(err, &le) || !errors.Is(err, state.ErrConnectRate) || le.RetryAfter != time.Second {
		t.Fatalf("fourth connect: %v", err)
	}
	if ok, _ := e.store.Counted(ctx, "user_a", "c3"); ok {
		t.Fatal("a refused connect was counted")
	}
	e.clock.Advance(999 * time.Millisecond)
	if _, err := e.store.AdmitConnection(ctx, "user_a", "c3"); !errors.Is(err, state.ErrConnectRate) {
		t.Fatalf("before the interval: %v", err)
	}
	e.clock.Advance(time.Millisecond)
	if _, err := e.store.AdmitConnection(ctx, "user_a", "c3"); err != nil {
		t.Fatalf("after the interval: %v", err)
	}
	e.clock.Advance(time.Second)
	if err := e.store.ChargeConnect(ctx, "user_a"); err != nil {
		t.Fatal(err)
	}
	if err := e.store.ChargeConnect(ctx, "user_a"); !errors.Is(err, state.ErrConnectRate) {
		t.Fatalf("charge over the rate: %v", err)
	}
	// Idle for long enough, the whole burst is back.
	e.clock.Advance(time.Hour)
	for i := range 3 {
		if err := e.store.ChargeConnect(ctx, "user_a"); err != nil {
			t.Fatalf("after idling, connect %d: %v", i, err)
		}
	}
}

// Under a race of many connects of one user, the cap and the rate hold exactly: the
// admitted never exceed either, and what was admitted is what is counted.
func TestStore_AdmitConnection_RaceExact(t *testing.T) {
	for name, l := range map[string]state.ConnectLimits{
		"cap binds":  limits(7, time.Millisecond, 1000),
		"rate binds": limits(1000, time.Hour, 5),
	} {
		t.Run(name, func(t *testing.T) {
			e := newEnv(t)
			e.store.ConnectLimits = l
			ctx := context.Background()
			var admitted, capped, rated, other atomic.Int64
			start := make(chan struct{})
			var wg sync.WaitGroup
			for i := range 60 {
				wg.Go(func() {
					<-start
					_, err := e.store.AdmitConnection(ctx, "user_racer", fmt.Sprintf("c%02d", i))
					switch {
					case err == nil:
						admitted.Add(1)
					case errors.Is(err, state.ErrTooManyConnections):
						capped.Add(1)
					case errors.Is(err, state.ErrConnectRate), errors.Is(err, state.ErrContention):
						rated.Add(1)
					default:
						other.Add(1)
						t.Error(err)
					}
				})
			}
			close(start)
			wg.Wait()
			want := int64(min(l.MaxConnections, l.Burst))
			if admitted.Load() != want {
				t.Fatalf("admitted %d, want exactly %d (capped %d, rate %d)", admitted.Load(), want, capped.Load(), rated.Load())
			}
			a, err := e.store.Access(ctx, "user_racer")
			if err != nil {
				t.Fatal(err)
			}
			if int64(len(a.Conns)) != want {
				t.Fatalf("counted %d, admitted %d", len(a.Conns), want)
			}
		})
	}
}

// Releases racing admissions leave the count equal to what is admitted and not
// released.
func TestStore_AdmitConnection_RaceWithReleases(t *testing.T) {
	e := newEnv(t)
	e.store.ConnectLimits = limits(5, time.Microsecond, 10000)
	ctx := context.Background()
	var wg sync.WaitGroup
	var mu sync.Mutex
	held := map[string]bool{}
	for w := range 8 {
		wg.Go(func() {
			for i := range 15 {
				id := fmt.Sprintf("w%dc%d", w, i)
				if _, err := e.store.AdmitConnection(ctx, "user_churn", id); err != nil {
					if !errors.Is(err, state.ErrTooManyConnections) && !errors.Is(err, state.ErrContention) {
						t.Error(err)
					}
					continue
				}
				mu.Lock()
				held[id] = true
				if len(held) > 5 {
					t.Errorf("%d connections held, cap 5", len(held))
				}
				mu.Unlock()
				if i%2 == 0 {
					mu.Lock()
					delete(held, id)
					mu.Unlock()
					if err := e.store.ReleaseConnection(ctx, "user_churn", id); err != nil {
						t.Error(err)
					}
				}
			}
		})
	}
	wg.Wait()
	a, err := e.store.Access(ctx, "user_churn")
	if err != nil {
		t.Fatal(err)
	}
	if len(a.Conns) != len(held) {
		t.Fatalf("counted %v, held %v", a.Conns, held)
	}
	for id := range held {
		if _, ok := a.Conns[id]; !ok {
			t.Fatalf("%s held but not counted", id)
		}
	}
}

// ClaimCheck lets one caller check a user's connections per interval.
func TestStore_ClaimCheck_OncePerInterval(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	if ok, err := e.store.ClaimCheck(ctx, "user_a", time.Minute); err != nil || ok {
		t.Fatalf("without an item: %v %v", ok, err)
	}
	if _, err := e.store.AdmitConnection(ctx, "user_a", "c0"); err != nil {
		t.Fatal(err)
	}
	var wins atomic.Int64
	var wg sync.WaitGroup
	for range 10 {
		wg.Go(func() {
			if ok, err := e.store.ClaimCheck(ctx, "user_a", time.Minute); err != nil {
				t.Error(err)
			} else if ok {
				wins.Add(1)
			}
		})
	}
	wg.Wait()
	if wins.Load() != 1 {
		t.Fatalf("%d claims won, want 1", wins.Load())
	}
	e.clock.Advance(time.Minute)
	if ok, err := e.store.ClaimCheck(ctx, "user_a", time.Minute); err != nil || !ok {
		t.Fatalf("after the interval: %v %v", ok, err)
	}
	if err := e.store.ForgetConnections(ctx, "user_a", "c0", "never"); err != nil {
		t.Fatal(err)
	}
	if ok, _ := e.store.Counted(ctx, "user_a", "c0"); ok {
		t.Fatal("forgotten connection still counted")
	}
}

// The access item is outside every USER#<id> partition: a sandbox session, held to
// its user's USER# items, never reaches it.
func TestStore_Access_OutsideUserPartition(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	if _, err := e.store.AdmitConnection(ctx, "user_a", "c0"); err != nil {
		t.Fatal(err)
	}
	if item := e.raw(t, "ACCESS#user_a", "ACCESS"); item == nil {
		t.Fatal("no ACCESS#user_a item")
	}
	if item := e.raw(t, "USER#user_a", "ACCESS"); item != nil {
		t.Fatalf("the access item is under USER#: %v", item)
	}
}
