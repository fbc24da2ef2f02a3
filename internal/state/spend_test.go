package state_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/sandgate/sandgate/internal/state"
)

// A user's spend adds up within a window, starts over in the next, ignores an older
// window's late tokens, is the user's own and the upstream's own, and loses no tokens
// when writers race at a window's start.
func TestStore_Spend(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	ledger := state.SpendLedger{Store: e.store, UserID: "user_spender"}
	w1 := time.Unix(1_800_000_000, 0).Truncate(24 * time.Hour)
	w2 := w1.Add(24 * time.Hour)
	spent := func(user, upstream string, w time.Time) int64 {
		t.Helper()
		n, err := e.store.Spent(ctx, user, upstream, w)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := spent("user_spender", "model", w1); n != 0 {
		t.Fatalf("spent %d before any call", n)
	}
	for _, n := range []int64{10, 20} {
		if err := ledger.Add(ctx, "model", w1, n); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := ledger.Spent(ctx, "model", w1); err != nil || n != 30 {
		t.Fatalf("spent %d (%v), want 30", n, err)
	}
	if spent("user_spender", "search", w1) != 0 || spent("user_other", "model", w1) != 0 {
		t.Fatal("spend leaked to another upstream or user")
	}
	if err := ledger.Add(ctx, "model", w2, 5); err != nil {
		t.Fatal(err)
	}
	if spent("user_spender", "model", w2) != 5 || spent("user_spender", "model", w1) != 0 {
		t.Fatal("a new window did not start over")
	}
	if err := ledger.Add(ctx, "model", w1, 100); err != nil { // late, from the old window
		t.Fatal(err)
	}
	if n := spent("user_spender", "model", w2); n != 5 {
		t.Fatalf("an old window's tokens changed the new one: %d", n)
	}

	// Racing writers at a window's start: every token counted once.
	w3 := w2.Add(24 * time.Hour)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := ledger.Add(ctx, "model", w3, 7); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if n := spent("user_spender", "model", w3); n != 56 {
		t.Fatalf("racing adds gave %d, want 56", n)
	}
}
