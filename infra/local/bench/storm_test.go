package bench_test

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sandgate/sandgate/infra/local/stack"
	"github.com/sandgate/sandgate/infra/local/testkit"
	"github.com/sandgate/sandgate/internal/frames"
	"github.com/sandgate/sandgate/internal/taskenv"
)

// BenchmarkConnectStorm opens 1,000 connections for 100 users at once on a fresh stack
// whose capacity is exactly 100 sandboxes, and waits for every client to be told its
// sandbox is ready. Reported: the clients that were refused, got an error frame or were
// never told (errors, goal 0), the sandboxes started (RunTask leases; goal exactly 100),
// the tasks running and the capacity counter afterwards, the time until the last and
// the median client was ready, and the baseline measured on the same stack just before:
// one user's connect → ready alone.
//
//	go test -run '^$' -bench ConnectStorm -benchtime 1x ./infra/local/bench/
func BenchmarkConnectStorm(b *testing.B) {
	const users, conns = 100, 1000
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		s := testkit.Start(b, func(o *stack.Options) {
			o.Overrides["MAX_SANDBOXES"] = strconv.Itoa(users)
			o.Overrides["LEASE_TTL"] = "60s"
			o.Overrides["SLEEP_AFTER"] = "10m"
			o.Overrides["SYNC_INTERVAL"] = "30s"
			// 1,000 handshakes at once go past AWS's default quotas (500 new connections
			// a second, 1,000 concurrent executions), which an account expecting such a
			// storm has raised: the storm measures sandgate, not them.
			o.NewConnectionRate, o.AccountConcurrency = 2000, 4000
		})
		single := coldStartAlone(b, s, fmt.Sprintf("user_single%d", i))

		prefix := fmt.Sprintf("user_storm%dn", i) // user ids are user_ and letters or digits
		type result struct {
			ready time.Duration
			err   error
		}
		results := make([]result, conns)
		go1 := make(chan struct{})
		var wg sync.WaitGroup
		for j := range conns {
			wg.Go(func() {
				user := fmt.Sprintf("%s%03d", prefix, j%users)
				<-go1
				t0 := time.Now()
				c, err := s.TryDial(b, user)
				if err != nil {
					results[j].err = fmt.Errorf("dial %s: %w", user, err)
					return
				}
				f, err := c.Await(coldStart, func(f string) bool { return testkit.IsStatus(frames.Ready)(f) || testkit.IsError(f) })
				switch {
				case err != nil:
					results[j].err = fmt.Errorf("%s: never ready: %w", user, err)
				case testkit.IsError(f):
					results[j].err = fmt.Errorf("%s: %s", user, f)
				default:
					results[j].ready = time.Since(t0)
				}
			})
		}
		b.StartTimer()
		start := time.Now()
		close(go1)
		wg.Wait()
		all := time.Since(start)
		b.StopTimer()

		var errs int
		var ready []time.Duration
		for _, r := range results {
			if r.err != nil {
				if errs < 5 {
					b.Logf("error: %v", r.err)
				}
				errs++
				continue
			}
			ready = append(ready, r.ready)
		}
		leases := map[string]bool{}
		for _, r := range s.ECS.RunTaskRequests() {
			if env := testkit.TaskEnv(r); strings.HasPrefix(env[taskenv.UserID], prefix) {
				leases[env[taskenv.LeaseToken]] = true
			}
		}
		b.ReportMetric(float64(errs), "errors")
		b.ReportMetric(float64(len(leases)), "sandboxes")
		b.ReportMetric(float64(len(s.ECS.Tasks())), "tasks")
		b.ReportMetric(float64(s.Capacity(b)), "capacity")
		b.ReportMetric(all.Seconds(), "all-ready-s")
		b.ReportMetric(quantile(ready, 0.5).Seconds(), "p50-ready-s")
		b.ReportMetric(single.Seconds(), "single-ready-s")
		b.ReportMetric(all.Seconds()/single.Seconds(), "x-single")

		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		if err := s.Close(ctx); err != nil {
			b.Errorf("close stack: %v", err)
		}
		cancel()
	}
}

// coldStartAlone measures one user's connect → ready on an idle stack, then stops that
// sandbox, so the slot it took is free again.
func coldStartAlone(b *testing.B, s *testkit.Stack, user string) time.Duration {
	b.Helper()
	t0 := time.Now()
	c := s.Dial(b, user)
	c.Status(frames.Ready, coldStart)
	d := time.Since(t0)
	sb := s.Running(b, user, reply)
	c.Close()
	stopTask(b, s, sb.TaskARN)
	s.Stopped(b, user, coldStart)
	return d
}
