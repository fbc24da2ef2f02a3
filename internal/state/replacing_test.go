package state_test

import (
	"context"
	"errors"
	"testing"

	"github.com/sandgate/sandgate/internal/state"
)

// AcquireReplacing names the record it took over only when it replaced a lease that
// had run out: the caller stops the task that record names.
func TestStore_AcquireReplacing_NamesTheReplacedRecord(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	first, replaced, err := e.store.AcquireReplacing(ctx, "user_a")
	if err != nil || replaced != nil {
		t.Fatalf("fresh start: replaced %+v, %v", replaced, err)
	}
	if err := e.store.SetTask(ctx, first, "arn:task/1"); err != nil {
		t.Fatal(err)
	}
	// Held: nothing taken over, nothing replaced.
	if _, replaced, err := e.store.AcquireReplacing(ctx, "user_a"); !errors.Is(err, state.ErrHeld) || replaced != nil {
		t.Fatalf("held lease: replaced %+v, %v", replaced, err)
	}
	e.clock.Advance(state.DefaultStartTTL)
	e.calls.Reset()
	second, replaced, err := e.store.AcquireReplacing(ctx, "user_a")
	if err != nil || replaced == nil || replaced.TaskARN != "arn:task/1" || replaced.Generation != first.Generation ||
		replaced.LeaseToken != first.Token || second.Generation != first.Generation+1 {
		t.Fatalf("takeover: lease %+v, replaced %+v, %v", second, replaced, err)
	}
	e.wantCalls(t, map[string]int64{"GetItem": 1, "UpdateItem": 1})
	// A start after a stop replaces no live holder.
	if err := e.store.Stop(ctx, second); err != nil {
		t.Fatal(err)
	}
	if _, replaced, err := e.store.AcquireReplacing(ctx, "user_a"); err != nil || replaced != nil {
		t.Fatalf("start after a stop: replaced %+v, %v", replaced, err)
	}
}
