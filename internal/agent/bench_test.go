package agent_test

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/sandgate/sandgate/infra/local/testkit"
	"github.com/sandgate/sandgate/internal/workload"
)

// BenchmarkAgent_FrameRoundTrip measures one client frame's round trip through the agent
// (the Message function's POST with the gateway token, the per-connection queue, the
// upstream WebSocket to the demo workload, its echo posted back through API Gateway's
// management API to the client's WebSocket). The baseline, measured in the same run with
// the same number of frames, is the same echo from a second demo workload over a direct
// WebSocket: x-direct is the agent path's cost as a multiple of it.
func BenchmarkAgent_FrameRoundTrip(b *testing.B) {
	for _, size := range []int{64, 16 << 10} {
		b.Run(fmt.Sprintf("%dB", size), func(b *testing.B) { benchRoundTrip(b, size) })
	}
}

func benchRoundTrip(b *testing.B, size int) {
	b.StopTimer()
	h := newHarness(b, map[string]string{"MESSAGE_RATE_LIMIT": "100000"}) // measure the path, not the limit
	cl := h.connect()
	h.acquire()
	h.run(h.agent(h.store, h.bucket))
	target := h.running()
	ctx := context.Background()
	frame := []byte(fmt.Sprintf("%0*d", size, 0))

	// The baseline: the same workload program, dialled directly.
	port := freePort(b)
	ws := dataDir(b)
	if os.Geteuid() == 0 {
		if err := os.Chown(ws, workload.DefaultUID, workload.DefaultGID); err != nil {
			b.Fatal(err)
		}
	}
	cfg := h.agent(h.store, h.bucket).Config
	p, err := workload.Start(ctx, workload.Config{Command: []string{"/proc/self/exe"}, Dir: ws, Host: "127.0.0.1", Port: port,
		UserID: h.userID, UID: cfg.WorkloadUID, GID: cfg.WorkloadGID, Env: cfg.WorkloadEnv, Limits: cfg.WorkloadLimits})
	if err != nil {
		b.Fatal(err)
	}
	defer p.Stop(time.Second)
	direct, _, err := websocket.Dial(ctx, "ws://127.0.0.1:"+strconv.Itoa(port)+"/", nil)
	if err != nil {
		b.Fatal(err)
	}
	defer direct.CloseNow()
	direct.SetReadLimit(1 << 20)
	if _, _, err := direct.Read(ctx); err != nil { // the greeting
		b.Fatal(err)
	}
	// Warm the agent's path: its upstream is open and the greeting is through.
	if err := h.api.Deliver(ctx, target, cl.id, []byte("warm")); err != nil {
		b.Fatal(err)
	}
	cl.until(testkit.Is("warm"))

	start := time.Now()
	for i := 0; i < b.N; i++ {
		if err := direct.Write(ctx, websocket.MessageText, frame); err != nil {
			b.Fatal(err)
		}
		if _, _, err := direct.Read(ctx); err != nil {
			b.Fatal(err)
		}
	}
	base := time.Since(start)
	b.SetBytes(int64(size))
	b.ResetTimer()
	b.StartTimer()
	for i := 0; i < b.N; i++ {
		if err := h.api.Deliver(ctx, target, cl.id, frame); err != nil {
			b.Fatal(err)
		}
		cl.until(testkit.Any)
	}
	b.StopTimer()
	b.ReportMetric(float64(b.Elapsed())/float64(base), "x-direct")
}
