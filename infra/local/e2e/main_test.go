package e2e_test

import (
	"fmt"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/sandgate/sandgate/infra/local/stack"
	"github.com/sandgate/sandgate/infra/local/testkit"
)

func TestMain(m *testing.M) {
	// The test binary doubles as a workload that crashes on request.
	if os.Getenv(testkit.EnvWorkload) == testkit.WorkloadCrashy {
		os.Exit(testkit.ServeCrashy())
	}
	// Every statement of template.yaml must be what allowed some call of these tests.
	os.Exit(testkit.Main(m, testkit.EveryStatementNeeded))
}

// Failure guards of the waits, never part of what a test asserts: generous, as CI
// machines are small and shared.
const (
	coldStart = 60 * time.Second
	reply     = 30 * time.Second
)

// Settings of the shared stack.
const (
	// launchDelay rehearses Fargate's cold start; long enough that a client's first
	// frames are handled while the sandbox starts.
	launchDelay = 1500 * time.Millisecond
	// rateLimit is the agent's per-user frames per second (burst twice that).
	rateLimit = 5
)

// apps is the stack most tests share, each on users of its own: the template's
// intervals, but for a rate limit low enough to reach and syncs every second. Tests
// that change an emulator's behaviour for everyone do not call t.Parallel, so they run
// before the parallel ones and never during them.
var apps = testkit.Shared{Options: func(o *stack.Options) {
	o.LaunchDelay = launchDelay
	// Frames of one connection are handled in the order sent, so order can be asserted
	// (API Gateway gives no such promise; see docs/ARCHITECTURE.md).
	o.SequentialDispatch = true
	o.Params = map[string]string{"RetentionDays": "1"}
	o.Overrides = map[string]string{"MESSAGE_RATE_LIMIT": fmt.Sprint(rateLimit), "SYNC_INTERVAL": "1s", "LOG_LEVEL": "DEBUG",
		// Fifty connections of one user at once (TestStack_Connect_FiftyConnectsOneTask);
		// the default per-user limits are the noisy neighbour's (noisy_test.go).
		"MAX_CONNECTIONS_PER_USER": "100", "CONNECT_BURST": "100"}
}}

// noIdleStop keeps a stack's sandboxes from stopping for being idle while a test
// waits for something else.
func noIdleStop(o *stack.Options) { o.Overrides["SLEEP_AFTER"] = "10m" }

func quietLog() *slog.Logger { return slog.New(slog.DiscardHandler) }
