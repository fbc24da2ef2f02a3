package bench_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/sandgate/sandgate/infra/local/stack"
	"github.com/sandgate/sandgate/infra/local/testkit"
	"github.com/sandgate/sandgate/internal/frames"
)

// BenchmarkRelay_RoundTrip measures a frame's round trip through the local stack —
// client → gateway → Message function → agent → workload echo → management API →
// client — at 1, 10 and 100 concurrent clients of one user, each sending its next frame
// after the previous echo. The baseline, measured in the same run with as many clients
// and frames, interleaved in four rounds so drift cancels out, is the same echo from
// the same workload process over a direct WebSocket. Reported: p50 and p99 of both, their
// ratio, the p50 of the one DynamoDB read on the path made directly, and the DynamoDB
// requests per frame of every process of the stack, counted on the wire.
//
//	go test -run '^$' -bench Relay_RoundTrip -benchtime 2000x ./infra/local/bench/
func BenchmarkRelay_RoundTrip(b *testing.B) {
	// Every process of the stack reaches DynamoDB through the proxy, which counts its
	// requests as they reach the wire.
	ddb := testkit.NewProxy(b, "")
	s := testkit.Start(b, func(o *stack.Options) {
		o.Env = map[string]string{"AWS_ENDPOINT_URL_DYNAMODB": ddb.URL}
		o.Overrides = map[string]string{
			"MESSAGE_RATE_LIMIT": "100000", // measure the path, not the limit
			// A hundred clients of one user, at once.
			"MAX_CONNECTIONS_PER_USER": "1000", "CONNECT_BURST": "1000",
			// No heartbeat, sync or idle stop within a run: the frames alone reach DynamoDB.
			"LEASE_TTL": "10m", "SYNC_INTERVAL": "1h", "SLEEP_AFTER": "1h",
		}
	})
	ddb.SetTarget(b, s.Endpoints["AWS_ENDPOINT_URL_DYNAMODB"])
	const user = "user_relay"
	var relay, direct []*testkit.Client
	relay = append(relay, s.Dial(b, user))
	relay[0].Status(frames.Ready, coldStart)
	sb := s.Running(b, user, reply)
	ctx, cancel := context.WithTimeout(context.Background(), reply)
	defer cancel()
	port, err := s.Output.WorkloadPort(ctx, sb.TaskARN)
	if err != nil {
		b.Fatal(err)
	}
	directURL := fmt.Sprintf("ws://127.0.0.1:%d/", port)

	for _, n := range []int{1, 10, 100} {
		for len(relay) < n {
			relay = append(relay, s.Dial(b, user))
		}
		for len(direct) < n {
			c, err := testkit.DialURL(b, directURL)
			if err != nil {
				b.Fatal(err)
			}
			direct = append(direct, c)
		}
		// Every client's path is open (the agent's upstream, the workload's greeting).
		if err := roundTrips(relay[:n], "warm", 1, nil); err != nil {
			b.Fatal(err)
		}
		if err := roundTrips(direct[:n], "warm", 1, nil); err != nil {
			b.Fatal(err)
		}
		b.Run(fmt.Sprintf("clients=%d", n), func(b *testing.B) {
			benchRelay(b, s, ddb, user, relay[:n], direct[:n])
		})
	}
}

func benchRelay(b *testing.B, s *testkit.Stack, ddb *testkit.Proxy, user string, relay, direct []*testkit.Client) {
	b.StopTimer()
	n := len(relay)
	per := max(1, b.N/n) // round trips per client, on each path
	const rounds = 4
	var relayLat, directLat, getLat []time.Duration
	since := time.Now()
	var sent int
	for r := range rounds {
		k := per / rounds
		if r == rounds-1 {
			k = per - k*(rounds-1)
		}
		if k == 0 {
			continue
		}
		tag := fmt.Sprintf("%d-%d", b.N, r)
		if err := roundTrips(direct, "direct-"+tag, k, &directLat); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		err := roundTrips(relay, "relay-"+tag, k, &relayLat)
		b.StopTimer()
		if err != nil {
			b.Fatal(err)
		}
		sent += n * k
		// The one DynamoDB read on the path, made directly (not counted: another endpoint).
		for range max(k, 25) {
			t0 := time.Now()
			if _, err := s.Store.Get(context.Background(), user); err != nil {
				b.Fatal(err)
			}
			getLat = append(getLat, time.Since(t0))
		}
	}
	calls, writes := len(ddb.Requests(since)), len(ddb.Writes(since))
	p50, p99 := quantile(relayLat, 0.5), quantile(relayLat, 0.99)
	d50, d99 := quantile(directLat, 0.5), quantile(directLat, 0.99)
	b.ReportMetric(ms(p50), "p50-ms")
	b.ReportMetric(ms(p99), "p99-ms")
	b.ReportMetric(ms(d50), "direct-p50-ms")
	b.ReportMetric(ms(d99), "direct-p99-ms")
	b.ReportMetric(float64(p50)/float64(d50), "x-direct-p50")
	b.ReportMetric(float64(p99)/float64(d99), "x-direct-p99")
	b.ReportMetric(ms(quantile(getLat, 0.5)), "getitem-p50-ms")
	b.ReportMetric(float64(calls)/float64(sent), "ddb-calls/frame")
	b.ReportMetric(float64(writes)/float64(sent), "ddb-writes/frame")
}

// roundTrips has every client send k frames, each after the previous one's echo, all
// clients at once, and appends the latencies to lat (when not nil).
func roundTrips(clients []*testkit.Client, tag string, k int, lat *[]time.Duration) error {
	var (
		mu   sync.Mutex
		errs []error
		wg   sync.WaitGroup
	)
	for i, c := range clients {
		wg.Go(func() {
			own := make([]time.Duration, 0, k)
			for j := range k {
				frame := fmt.Sprintf("%s-%d-%d", tag, i, j)
				t0 := time.Now()
				err := c.Write(frame)
				if err == nil {
					_, err = c.Await(reply, func(f string) bool { return f == frame })
				}
				if err != nil {
					mu.Lock()
					errs = append(errs, fmt.Errorf("client %d frame %s: %w", i, frame, err))
					mu.Unlock()
					return
				}
				own = append(own, time.Since(t0))
			}
			if lat != nil {
				mu.Lock()
				*lat = append(*lat, own...)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}
