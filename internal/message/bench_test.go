package message_test

import (
	"context"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"

	"github.com/sandgate/sandgate/infra/local/testkit"
	"github.com/sandgate/sandgate/internal/agentapi"
	"github.com/sandgate/sandgate/internal/message"
)

// BenchmarkHandler_Handle_WarmPath measures one warm frame through the handler (its
// I/O: at most one GetItem — none while the record is cached — and one POST to the
// agent) against a baseline measured in the same run: the same GetItem and POST made
// directly for every frame. x-baseline below 1 is what the record cache saves.
func BenchmarkHandler_Handle_WarmPath(b *testing.B) {
	db := testkit.NewDB(b)
	store := db.Store()
	agent := testkit.StartAgent(b, "user_bench")
	ctx := context.Background()
	l, err := store.Acquire(ctx, "user_bench")
	if err != nil {
		b.Fatal(err)
	}
	if _, err := store.MarkReady(ctx, l, agent.URL, agent.Token); err != nil {
		b.Fatal(err)
	}
	agent.Discard = true
	client := &agentapi.Client{Timeout: 5 * time.Second}
	logs := &testkit.Logs{}
	h := &message.Handler{Store: store, Agent: client, Log: logs.Logger()}
	ev := events.APIGatewayWebsocketProxyRequest{Body: `{"text":"hello"}`,
		RequestContext: events.APIGatewayWebsocketProxyRequestContext{EventType: "MESSAGE", RouteKey: "$default",
			ConnectionID: "bench-conn", Stage: "bench", Authorizer: map[string]any{"userId": "user_bench"}}}
	frame := []byte(ev.Body)
	baseline := func(n int) time.Duration {
		start := time.Now()
		for range n {
			sb, err := store.Get(ctx, "user_bench")
			if err != nil {
				b.Fatal(err)
			}
			if err := client.Deliver(ctx, agentapi.Target{Endpoint: sb.Endpoint, Token: sb.GatewayToken, UserID: sb.UserID}, "bench-conn", frame); err != nil {
				b.Fatal(err)
			}
		}
		return time.Since(start)
	}
	baseline(300) // warm the emulator and both connections
	const n = 300
	before := baseline(n)
	db.Calls.Reset()
	b.ResetTimer()
	for range b.N {
		if resp, err := h.Handle(ctx, ev); err != nil || resp.StatusCode != 200 {
			b.Fatalf("%d, %v", resp.StatusCode, err)
		}
	}
	b.StopTimer()
	calls, writes := db.Calls.Calls("DynamoDB", ""), db.Writes()
	// Baselines before and after, so a drift of the emulator during the run cancels out.
	base := float64((before + baseline(n)).Nanoseconds()) / (2 * n)
	perOp := float64(b.Elapsed().Nanoseconds()) / float64(b.N)
	b.ReportMetric(perOp/base, "x-baseline")
	b.ReportMetric(float64(calls)/float64(b.N), "ddb-calls/op")
	b.ReportMetric(float64(writes)/float64(b.N), "ddb-writes/op")
	if calls > int64(b.N) || writes != 0 {
		b.Fatalf("%d frames: %d DynamoDB calls, %d writes; logs: %s", b.N, calls, writes, logs.String())
	}
}
