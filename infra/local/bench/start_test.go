package bench_test

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/sandgate/sandgate/infra/local/stack"
	"github.com/sandgate/sandgate/infra/local/testkit"
	"github.com/sandgate/sandgate/internal/frames"
	"github.com/sandgate/sandgate/internal/objsync"
	"github.com/sandgate/sandgate/internal/taskenv"
)

// launchDelay is the emulated Fargate launch; the benchmark subtracts what ECS reports.
const launchDelay = 500 * time.Millisecond

// BenchmarkStart_Overhead measures what sandgate itself adds to a cold start: a
// client's connect → ready, less the emulated task launch as ECS reports it (createdAt
// to startedAt, measured in the same run for the same task). That own share includes
// the restore of the user's files, which the agent times itself; own-excl-restore-ms is
// the rest (goal ≤ 200 ms). Each iteration starts a new sandbox: a new user for the
// empty workspace, the same user (stopped in between) for 100 MB. Run it with
// -benchtime Nx, N > 1: the first, single-iteration run that go test does not report
// is the one that finds the functions' processes cold.
//
//	go test -run '^$' -bench Start_Overhead -benchtime 5x ./infra/local/bench/
func BenchmarkStart_Overhead(b *testing.B) {
	s := testkit.Start(b, func(o *stack.Options) {
		o.LaunchDelay = launchDelay
		o.Overrides["SLEEP_AFTER"] = "10m"
		o.Overrides["SYNC_INTERVAL"] = "30s"
	})
	runs := 0
	b.Run("workspace=empty", func(b *testing.B) {
		var st startStats
		for range b.N {
			runs++
			st.add(measureStart(b, s, fmt.Sprintf("user_empty%d", runs)))
		}
		st.report(b)
	})
	const big = "user_big"
	seed(b, s, big, 100, 1<<20)
	b.Run("workspace=100MB", func(b *testing.B) {
		var st startStats
		for range b.N {
			st.add(measureStart(b, s, big))
		}
		st.report(b)
	})
}

type startSample struct {
	total, launch, restore time.Duration
	bytes                  int64
}

type startStats struct {
	total, launch, restore, own, rest []time.Duration
	bytes                             int64
}

func (st *startStats) add(x startSample) {
	st.total = append(st.total, x.total)
	st.launch = append(st.launch, x.launch)
	st.restore = append(st.restore, x.restore)
	st.own = append(st.own, x.total-x.launch)
	st.rest = append(st.rest, x.total-x.launch-x.restore)
	st.bytes = x.bytes
}

// report states medians: a noisy machine spreads single runs.
func (st *startStats) report(b *testing.B) {
	b.ReportMetric(ms(quantile(st.total, 0.5)), "connect-ready-ms")
	b.ReportMetric(ms(quantile(st.launch, 0.5)), "launch-ms")
	b.ReportMetric(ms(quantile(st.restore, 0.5)), "restore-ms")
	b.ReportMetric(ms(quantile(st.own, 0.5)), "own-ms")
	b.ReportMetric(ms(quantile(st.rest, 0.5)), "own-excl-restore-ms")
	b.ReportMetric(float64(st.bytes)/1e6, "restored-MB")
}

// measureStart connects as user (whose sandbox is stopped), waits for ready, and takes
// the task's launch and restore; then stops the sandbox again.
func measureStart(b *testing.B, s *testkit.Stack, user string) startSample {
	b.Helper()
	b.StartTimer()
	t0 := time.Now()
	c := s.Dial(b, user)
	c.Status(frames.Ready, coldStart)
	total := time.Since(t0)
	b.StopTimer()
	sb := s.Running(b, user, reply)
	ctx, cancel := context.WithTimeout(context.Background(), reply)
	defer cancel()
	restore, n, err := s.Output.Restore(ctx, sb.TaskARN)
	if err != nil {
		b.Fatal(err)
	}
	x := startSample{total: total, launch: launch(b, s, sb.TaskARN), restore: restore, bytes: n}
	c.Close()
	stopTask(b, s, sb.TaskARN)
	s.Stopped(b, user, coldStart)
	return x
}

// seed stores files×size random bytes as user's synced workspace, laid out as an
// agent's sync lays it out.
func seed(b *testing.B, s *testkit.Stack, user string, files, size int) {
	b.Helper()
	dir := b.TempDir()
	rng := rand.NewChaCha8([32]byte{1}) // incompressible, and the same every run
	buf := make([]byte, size)
	for i := range files {
		_, _ = rng.Read(buf)
		p := filepath.Join(dir, fmt.Sprintf("d%02d", i%10), fmt.Sprintf("f%03d.bin", i))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			b.Fatal(err)
		}
		if err := os.WriteFile(p, buf, 0o644); err != nil {
			b.Fatal(err)
		}
	}
	// As the stack's operator: the local S3 checks every request's signature against
	// the credentials the stack issued, as S3 does.
	sy, err := objsync.New(s.Objects(), taskenv.UserPrefix(user), dir, b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	sy.Log = slog.New(slog.DiscardHandler)
	if st, err := sy.Sync(context.Background()); err != nil || st.Files != files {
		b.Fatalf("seed %s: %+v, %v", user, st, err)
	}
}
