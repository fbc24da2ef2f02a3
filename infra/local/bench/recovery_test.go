package bench_test

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/sandgate/sandgate/infra/local/stack"
	"github.com/sandgate/sandgate/infra/local/testkit"
)

// recoveryRuns is how many sandboxes each interval's benchmark kills.
const recoveryRuns = 20

// recoveryIntervals are the SYNC_INTERVALs measured, one stack each.
var recoveryIntervals = []time.Duration{time.Second, 5 * time.Second}

// BenchmarkRecovery_KillUnderWrites measures the recovery point a crash actually has:
// a writer puts a new file into a running sandbox's workspace every 10 ms, the task
// is killed with SIGKILL at a moment drawn uniformly from one SYNC_INTERVAL after a
// receipt, a new sandbox restores, and the loss window — from the earliest write it
// lacks to the kill — is measured (testkit.CrashUnderWrites, which also fails the run
// if a write the last receipt promised is missing). Reported against SYNC_INTERVAL
// plus the duration of one sync, the documented worst case for a crash: each run's
// loss against SYNC_INTERVAL plus its own sync's lag (walk to receipt heard).
//
//	go test -run '^$' -bench Recovery_KillUnderWrites -benchtime 1x ./infra/local/bench/
func BenchmarkRecovery_KillUnderWrites(b *testing.B) {
	for _, interval := range recoveryIntervals {
		b.Run(fmt.Sprintf("interval=%s", interval), func(b *testing.B) {
			s := testkit.Start(b, func(o *stack.Options) {
				o.Overrides["SLEEP_AFTER"] = "10m"
				o.Overrides["SYNC_INTERVAL"] = interval.String()
			})
			const user = "user_recovery"
			var windows, sinceReceipt, lags []time.Duration
			// over is the most a run's loss exceeded SYNC_INTERVAL plus its own sync's
			// lag (the documented worst case), negative while none did.
			over := time.Duration(-1 << 62)
			lost, writes := 0, 0
			for range b.N {
				c := s.DialReady(b, user, coldStart)
				for range recoveryRuns {
					after := time.Duration(rand.Int64N(int64(interval)))
					loss := s.CrashUnderWrites(b, c, user, 10*time.Millisecond, after, coldStart)
					windows = append(windows, loss.Window)
					sinceReceipt = append(sinceReceipt, loss.SinceReceipt)
					lags = append(lags, loss.SyncLag)
					over = max(over, loss.Window-interval-loss.SyncLag)
					lost += loss.Lost
					writes += loss.Writes
				}
				c.Close()
			}
			maxWindow := quantile(windows, 1)
			b.ReportMetric(float64(len(windows)), "runs")
			b.ReportMetric(interval.Seconds(), "interval-s")
			b.ReportMetric(ms(quantile(windows, 0.5)), "p50-window-ms")
			b.ReportMetric(ms(quantile(windows, 0.95)), "p95-window-ms")
			b.ReportMetric(ms(maxWindow), "max-window-ms")
			b.ReportMetric(ms(maxWindow)/ms(interval), "x-interval-max")
			b.ReportMetric(ms(quantile(sinceReceipt, 1)), "max-since-receipt-ms")
			b.ReportMetric(ms(quantile(lags, 0.5)), "p50-sync-lag-ms")
			b.ReportMetric(ms(quantile(lags, 1)), "max-sync-lag-ms")
			b.ReportMetric(ms(over), "max-over-bound-ms")
			b.ReportMetric(float64(lost)/float64(max(writes, 1)), "lost-fraction")
		})
	}
}
