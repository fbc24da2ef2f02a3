package benchreport

import (
	"strings"
)

// Run is one go test invocation of make bench.
type Run struct {
	// ID names the run's raw output (<ID>.json).
	ID        string
	Bench     string // the -bench pattern
	Benchtime string
	// Skip is the -skip pattern, if any.
	Skip string
	// Benchmem adds allocations per operation.
	Benchmem bool
	// Timeout is go test's -timeout (30m when empty).
	Timeout  string
	Packages []string
}

// Args are go's arguments for the run, without -json.
func (r Run) Args() []string {
	args := []string{"test", "-run", "^$", "-bench", r.Bench, "-benchtime", r.Benchtime}
	if r.Skip != "" {
		args = append(args, "-skip", r.Skip)
	}
	if r.Benchmem {
		args = append(args, "-benchmem")
	}
	timeout := r.Timeout
	if timeout == "" {
		timeout = "30m"
	}
	args = append(args, "-timeout", timeout)
	return append(args, r.Packages...)
}

// Command is the shell command that reproduces the run.
func (r Run) Command() string {
	parts := []string{"go"}
	for _, a := range r.Args() {
		parts = append(parts, shellQuote(a))
	}
	return strings.Join(parts, " ")
}

func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-./=") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// The runs make bench makes. Each focused benchmark gets a fixed iteration count
// (enough samples for a p99 where it reports one, few where an iteration starts
// sandboxes); RunOthers runs every other benchmark for a second.
var (
	RunRelay  = Run{ID: "relay", Bench: "Relay_RoundTrip", Benchtime: "2000x", Packages: []string{"./infra/local/bench/"}}
	RunAgent  = Run{ID: "agent", Bench: "Agent_FrameRoundTrip", Benchtime: "2000x", Packages: []string{"./internal/agent/"}}
	RunWarm   = Run{ID: "warmpath", Bench: "Handler_Handle_WarmPath", Benchtime: "2000x", Packages: []string{"./internal/message/"}}
	RunStorm  = Run{ID: "storm", Bench: "ConnectStorm", Benchtime: "1x", Packages: []string{"./infra/local/bench/"}}
	RunStart  = Run{ID: "start", Bench: "Start_Overhead", Benchtime: "5x", Packages: []string{"./infra/local/bench/"}}
	RunSync   = Run{ID: "sync", Bench: "Throughput", Benchtime: "3x", Packages: []string{"./internal/objsync/"}}
	RunLambda = Run{ID: "lambda", Bench: "Lambda_Bootstrap", Benchtime: "10x", Packages: []string{"./infra/local/bench/"}}
	// RunBackup is the cleanup pass's backup step (issue 23).
	RunBackup = Run{ID: "backup", Bench: "Backup_Pass", Benchtime: "3x", Packages: []string{"./infra/local/bench/"}}
	// RunPool's benchmarks take their own samples (each miss waits for a 30 s launch).
	RunPool = Run{ID: "pool", Bench: "Pool_", Benchtime: "1x", Timeout: "60m", Packages: []string{"./infra/local/bench/"}}
	// RunNoisy is issue 19's noisy neighbour (about ten minutes); RunFrameRate where
	// the per-user frame rate is enforced.
	RunNoisy     = Run{ID: "noisy", Bench: "NoisyNeighbour", Benchtime: "1x", Packages: []string{"./infra/local/bench/"}}
	RunFrameRate = Run{ID: "framerate", Bench: "Handler_Handle_OverRate", Benchtime: "2000x", Packages: []string{"./internal/message/"}}
	// RunOthers' Benchtime is make bench's BENCHTIME (cmd/benchreport -benchtime).
	RunOthers = Run{ID: "others", Bench: ".", Benchtime: "1s", Benchmem: true, Packages: []string{"./..."},
		Skip: "Relay_RoundTrip|Agent_FrameRoundTrip|Handler_Handle_WarmPath|ConnectStorm|Start_Overhead|Throughput|Lambda_Bootstrap|Pool_|NoisyNeighbour|Handler_Handle_OverRate|Workload_ConnectReady|Proxy_ModelCall|Cleanup_ReadsPerPass|Backup_Pass|Recovery_KillUnderWrites"}
)

// Runs returns every run of make bench, in order.
func Runs() []Run {
	return []Run{RunRelay, RunAgent, RunWarm, RunStorm, RunStart, RunPool, RunNoisy, RunFrameRate, RunWorkload, RunProxy, RunRecovery, RunSync, RunCleanup, RunBackup, RunLambda, RunOthers}
}
