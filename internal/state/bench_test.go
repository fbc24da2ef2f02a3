package state_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/sandgate/sandgate/internal/state"
)

// baselineNs measures the baseline every benchmark reports against, in the same run
// and conditions: one raw GetItem through an SDK client of the same emulator.
func baselineNs(b *testing.B, e *env) float64 {
	in := &dynamodb.GetItemInput{TableName: aws.String(e.table), Key: map[string]types.AttributeValue{
		state.AttrPK: &types.AttributeValueMemberS{Value: "USER#baseline"}, state.AttrSK: &types.AttributeValueMemberS{Value: "SANDBOX"},
	}}
	for range 20 { // warm the connection
		_, _ = e.client.GetItem(context.Background(), in)
	}
	const n = 100
	start := time.Now()
	for range n {
		if _, err := e.client.GetItem(context.Background(), in); err != nil {
			b.Fatal(err)
		}
	}
	return float64(time.Since(start).Nanoseconds()) / n
}

// warm runs a mixed workload once per process so that the first benchmark does not
// pay for the emulator's JIT warm-up.
var warm sync.Once

func warmEmulator(b *testing.B) {
	warm.Do(func() {
		e := newEnv(b)
		e.store.MaxSandboxes = 1 << 30
		ctx := context.Background()
		for i := range 300 {
			l := mustAcquire(b, e.store, user(i))
			mustGet(b, e.store, user(i))
			if _, err := e.store.Heartbeat(ctx, l, time.Time{}); err != nil {
				b.Fatal(err)
			}
			if err := e.store.Stop(ctx, l); err != nil {
				b.Fatal(err)
			}
			it := enqueue(b, e.store, "user_warm", "m")
			if err := e.store.Ack(ctx, it); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// bench runs op b.N times after setup, then reports DynamoDB calls per operation
// (counted by middleware, SDK retries excluded) and latency as a multiple of the
// baseline GetItem (x-getitem).
func bench(b *testing.B, setup func(e *env), op func(e *env, i int) error) {
	warmEmulator(b)
	e := newEnv(b)
	if setup != nil {
		setup(e)
	}
	before := baselineNs(b, e)
	e.calls.Reset()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := op(e, i); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	// Other processes share the machine: the baseline is taken on both sides of the
	// timed loop so both see the same conditions.
	base := (before + baselineNs(b, e)) / 2
	b.ReportMetric(float64(e.calls.Calls("DynamoDB", ""))/float64(b.N), "ddb-calls/op")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/base, "x-getitem")
}

func user(i int) string { return fmt.Sprintf("user_%07d", i) }

func BenchmarkStore_Get(b *testing.B) {
	bench(b, func(e *env) { mustAcquire(b, e.store, "user_a") }, func(e *env, i int) error {
		_, err := e.store.Get(context.Background(), "user_a")
		return err
	})
}

func BenchmarkStore_Capacity(b *testing.B) {
	bench(b, nil, func(e *env, i int) error { _, err := e.store.Capacity(context.Background()); return err })
}

func BenchmarkStore_Acquire(b *testing.B) {
	bench(b, func(e *env) { e.store.MaxSandboxes = 1 << 30 }, func(e *env, i int) error {
		_, err := e.store.Acquire(context.Background(), user(i))
		return err
	})
}

func BenchmarkStore_Acquire_Held(b *testing.B) {
	bench(b, func(e *env) { mustAcquire(b, e.store, "user_a") }, func(e *env, i int) error {
		if _, err := e.store.Acquire(context.Background(), "user_a"); err == nil {
			return fmt.Errorf("held lease acquired")
		}
		return nil
	})
}

func BenchmarkStore_Acquire_Takeover(b *testing.B) {
	bench(b, func(e *env) {
		e.store.MaxSandboxes = 1 << 30
		for i := 0; i < b.N; i++ {
			mustAcquire(b, e.store, user(i))
		}
		e.clock.Advance(state.DefaultStartTTL)
	}, func(e *env, i int) error {
		_, err := e.store.Acquire(context.Background(), user(i))
		return err
	})
}

// leases acquires b.N sandboxes outside the timer.
func leases(b *testing.B, e *env) []state.Lease {
	e.store.MaxSandboxes = 1 << 30
	ls := make([]state.Lease, b.N)
	for i := range ls {
		ls[i] = mustAcquire(b, e.store, user(i))
	}
	return ls
}

func BenchmarkStore_MarkReady(b *testing.B) {
	var ls []state.Lease
	bench(b, func(e *env) { ls = leases(b, e) }, func(e *env, i int) error {
		_, err := e.store.MarkReady(context.Background(), ls[i], "http://10.0.0.1:8080", "gw")
		return err
	})
}

func BenchmarkStore_Heartbeat(b *testing.B) {
	var l state.Lease
	bench(b, func(e *env) { l = mustAcquire(b, e.store, "user_a") }, func(e *env, i int) error {
		var err error
		l, err = e.store.Heartbeat(context.Background(), l, e.clock.Now())
		return err
	})
}

func BenchmarkStore_Stop(b *testing.B) {
	var ls []state.Lease
	bench(b, func(e *env) { ls = leases(b, e) }, func(e *env, i int) error {
		return e.store.Stop(context.Background(), ls[i])
	})
}

func BenchmarkStore_Reap(b *testing.B) {
	var sbs []*state.Sandbox
	bench(b, func(e *env) {
		leases(b, e)
		for i := 0; i < b.N; i++ {
			sbs = append(sbs, mustGet(b, e.store, user(i)))
		}
		e.clock.Advance(state.DefaultStartTTL)
	}, func(e *env, i int) error {
		return e.store.Reap(context.Background(), sbs[i])
	})
}

func BenchmarkStore_Enqueue(b *testing.B) {
	payload := make([]byte, 512)
	bench(b, func(e *env) { e.store.InboxMaxItems, e.store.InboxMaxBytes = b.N+1, (b.N+1)*len(payload) }, func(e *env, i int) error {
		_, err := e.store.Enqueue(context.Background(), "user_a", "c", payload)
		return err
	})
}

func BenchmarkStore_Inbox10(b *testing.B) {
	bench(b, func(e *env) {
		for i := range 10 {
			enqueue(b, e.store, "user_a", fmt.Sprintf("message %d", i))
		}
	}, func(e *env, i int) error {
		items, err := e.store.Inbox(context.Background(), "user_a")
		if err == nil && len(items) != 10 {
			err = fmt.Errorf("%d items", len(items))
		}
		return err
	})
}

func BenchmarkStore_Ack(b *testing.B) {
	var items []state.InboxItem
	bench(b, func(e *env) {
		e.store.InboxMaxItems = b.N + 1
		for i := 0; i < b.N; i++ {
			items = append(items, enqueue(b, e.store, "user_a", "m"))
		}
	}, func(e *env, i int) error {
		return e.store.Ack(context.Background(), items[i])
	})
}

func BenchmarkStore_AddConnection(b *testing.B) {
	bench(b, nil, func(e *env, i int) error {
		_, err := e.store.AddConnection(context.Background(), "user_a", fmt.Sprint(i))
		return err
	})
}

func BenchmarkStore_Connections3(b *testing.B) {
	bench(b, func(e *env) {
		for _, c := range []string{"a", "b", "c"} {
			if _, err := e.store.AddConnection(context.Background(), "user_a", c); err != nil {
				b.Fatal(err)
			}
		}
	}, func(e *env, i int) error {
		_, err := e.store.Connections(context.Background(), "user_a")
		return err
	})
}

// How many starts per second one capacity item sustains when 32 callers start
// sandboxes for distinct users at once (every start's transaction touches it).
// DynamoDB Local serializes the transactions, so this measures the emulator's
// throughput on one hot item without conflicts; see the package report for what
// DynamoDB itself allows.
func BenchmarkStore_Acquire_Contended(b *testing.B) {
	warmEmulator(b)
	e := newEnv(b)
	before := baselineNs(b, e)
	e.store.MaxSandboxes = 1 << 30
	var n atomic.Int64
	e.calls.Reset()
	b.SetParallelism(16) // × GOMAXPROCS goroutines
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := e.store.Acquire(context.Background(), user(int(n.Add(1)))); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	base := (before + baselineNs(b, e)) / 2
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "acquires/s")
	b.ReportMetric(float64(e.calls.Calls("DynamoDB", ""))/float64(b.N), "ddb-calls/op")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/base, "x-getitem")
	if c, err := e.store.Capacity(context.Background()); err != nil || c != b.N {
		b.Fatalf("capacity %d (%v) after %d starts", c, err, b.N)
	}
}
