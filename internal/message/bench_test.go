package message_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"

	"github.com/sandgate/sandgate/infra/local/testkit"
	"github.com/sandgate/sandgate/internal/agentapi"
	"github.com/sandgate/sandgate/internal/message"
	"github.com/sandgate/sandgate/internal/relay"
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
	// The per-user frame rate is in the path, set too high to refuse: its cost counts.
	h := &message.Handler{Store: store, Agent: client, Log: logs.Logger(), FrameRate: 1e9}
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

// BenchmarkHandler_Handle_OverRate measures a frame of a user over the frame rate, with
// the two places the rate could be enforced: option=message refuses it in the Message
// process, before any read, write or agent call (what the handler does); option=agent
// leaves it to the agent, which refuses it after the handler has found the record (from
// its cache) and called it. Both answer the sender at most once a second. Reported per
// frame: time, DynamoDB calls and agent calls; x-agent is option=message's time over
// option=agent's, measured alternately in the same run.
func BenchmarkHandler_Handle_OverRate(b *testing.B) {
	db := testkit.NewDB(b)
	store := db.Store()
	logs := &testkit.Logs{}
	log := logs.Logger()
	gw := testkit.StartGateway(b, log, testkit.Routes{Connect: "record"}, testkit.Funcs{"record": testkit.Recording(store)})
	_ = gw.Dial(b, "user_bench")
	ctx := context.Background()
	conns, err := store.Connections(ctx, "user_bench")
	if err != nil || len(conns) != 1 {
		b.Fatalf("%v, %v", conns, err)
	}
	agent := testkit.StartAgent(b, "user_bench")
	var agentCalls atomic.Int64
	agent.Hook = func(testkit.Call) error { agentCalls.Add(1); return agentapi.ErrRateLimited }
	l, err := store.Acquire(ctx, "user_bench")
	if err != nil {
		b.Fatal(err)
	}
	if _, err := store.MarkReady(ctx, l, agent.URL, agent.Token); err != nil {
		b.Fatal(err)
	}
	newHandler := func(rate float64) *message.Handler {
		return &message.Handler{Store: store, Agent: &agentapi.Client{Timeout: 5 * time.Second}, Log: log,
			Relay: &relay.Relay{API: gw.Mgmt, Conns: store, Log: log}, FrameRate: rate, RecordTTL: time.Hour}
	}
	ev := events.APIGatewayWebsocketProxyRequest{Body: `{"text":"hello"}`,
		RequestContext: events.APIGatewayWebsocketProxyRequestContext{EventType: "MESSAGE", RouteKey: "$default",
			ConnectionID: conns[0].ConnectionID, Stage: "bench", Authorizer: map[string]any{"userId": "user_bench"}}}
	options := map[string]*message.Handler{"message": newHandler(20), "agent": newHandler(0)}
	for _, h := range options {
		for range 100 { // past the burst, the record cached, the answer of this second sent
			h.Handle(ctx, ev)
		}
	}
	elapsed := map[string]time.Duration{}
	for _, name := range []string{"message", "agent"} {
		b.Run("option="+name, func(b *testing.B) {
			h := options[name]
			db.Calls.Reset()
			calls0 := agentCalls.Load()
			b.ResetTimer()
			for range b.N {
				if resp, err := h.Handle(ctx, ev); err != nil || resp.StatusCode != 200 {
					b.Fatalf("%d, %v", resp.StatusCode, err)
				}
			}
			b.StopTimer()
			elapsed[name] = time.Duration(b.Elapsed().Nanoseconds() / int64(b.N))
			b.ReportMetric(float64(db.Calls.Calls("DynamoDB", ""))/float64(b.N), "ddb-calls/op")
			b.ReportMetric(float64(agentCalls.Load()-calls0)/float64(b.N), "agent-calls/op")
			if name == "agent" && elapsed["message"] > 0 {
				b.ReportMetric(float64(elapsed["message"])/float64(elapsed["agent"]), "x-message")
			}
		})
	}
}
