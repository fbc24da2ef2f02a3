package status_test

import (
	"context"
	"strings"
	"testing"

	"github.com/sandgate/sandgate/internal/state"
)

// The status says whether the sandbox's start was warm: a claimed pool task's is, a
// launched one's is not.
func TestHandler_Handle_SaysWhetherTheStartWasWarm(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	if _, err := e.store.Acquire(ctx, "user_cold"); err != nil {
		t.Fatal(err)
	}
	if code, body := e.get(t, e.query(t, "user_cold")); code != 200 || body["warm"] != false {
		t.Fatalf("cold start: %d %v", code, body)
	}
	p, err := e.store.ReservePool(ctx, "td")
	if err != nil {
		t.Fatal(err)
	}
	p, err = e.store.RegisterPool(ctx, state.PoolRegistration{ID: p.ID, TaskARN: "arn:aws:ecs:us-east-1:000000000000:task/c/pool1",
		TaskDefinition: "td", Endpoint: "http://127.0.9.1:8080", ClaimSecret: strings.Repeat("s", 43), LaunchedAt: e.db.Clock.Now()})
	if err != nil {
		t.Fatal(err)
	}
	acq, err := e.store.AcquireClaim(ctx, "user_warm", func(context.Context) ([]state.PoolTask, error) { return []state.PoolTask{p}, nil })
	if err != nil || acq.Claimed == nil {
		t.Fatalf("claim: %+v %v", acq, err)
	}
	if code, body := e.get(t, e.query(t, "user_warm")); code != 200 || body["warm"] != true || body["state"] != "STARTING" {
		t.Fatalf("warm start: %d %v", code, body)
	}
}
