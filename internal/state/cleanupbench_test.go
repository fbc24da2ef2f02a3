package state_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/sandgate/sandgate/infra/local/testkit"
	"github.com/sandgate/sandgate/internal/state"
)

// readMeter asks every read for its consumed capacity (ReturnConsumedCapacity TOTAL)
// and sums it, with the items each read evaluated (a Scan's ScannedCount, a Query's,
// the items a GetItem or BatchGetItem returned).
type readMeter struct {
	state.API
	mu          sync.Mutex
	units       float64
	items       int64
	unreported  int64 // reads that came back without a ConsumedCapacity
	scans, gets int64
}

func (m *readMeter) add(cc *types.ConsumedCapacity, items int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.items += items
	if cc == nil || cc.CapacityUnits == nil {
		m.unreported++
		return
	}
	m.units += *cc.CapacityUnits
}

func (m *readMeter) reset() {
	m.mu.Lock()
	m.units, m.items, m.unreported, m.scans, m.gets = 0, 0, 0, 0, 0
	m.mu.Unlock()
}

func (m *readMeter) Scan(ctx context.Context, in *dynamodb.ScanInput, o ...func(*dynamodb.Options)) (*dynamodb.ScanOutput, error) {
	in.ReturnConsumedCapacity = types.ReturnConsumedCapacityTotal
	out, err := m.API.Scan(ctx, in, o...)
	if err == nil {
		m.add(out.ConsumedCapacity, int64(out.ScannedCount))
		m.mu.Lock()
		m.scans++
		m.mu.Unlock()
	}
	return out, err
}

func (m *readMeter) Query(ctx context.Context, in *dynamodb.QueryInput, o ...func(*dynamodb.Options)) (*dynamodb.QueryOutput, error) {
	in.ReturnConsumedCapacity = types.ReturnConsumedCapacityTotal
	out, err := m.API.Query(ctx, in, o...)
	if err == nil {
		m.add(out.ConsumedCapacity, int64(out.ScannedCount))
	}
	return out, err
}

func (m *readMeter) GetItem(ctx context.Context, in *dynamodb.GetItemInput, o ...func(*dynamodb.Options)) (*dynamodb.GetItemOutput, error) {
	in.ReturnConsumedCapacity = types.ReturnConsumedCapacityTotal
	out, err := m.API.GetItem(ctx, in, o...)
	if err == nil {
		m.add(out.ConsumedCapacity, int64(min(len(out.Item), 1)))
	}
	return out, err
}

func (m *readMeter) BatchGetItem(ctx context.Context, in *dynamodb.BatchGetItemInput, o ...func(*dynamodb.Options)) (*dynamodb.BatchGetItemOutput, error) {
	in.ReturnConsumedCapacity = types.ReturnConsumedCapacityTotal
	out, err := m.API.BatchGetItem(ctx, in, o...)
	if err == nil {
		var n int64
		for _, items := range out.Responses {
			n += int64(len(items))
		}
		var cc *types.ConsumedCapacity
		if len(out.ConsumedCapacity) > 0 {
			cc = &out.ConsumedCapacity[0]
		}
		m.add(cc, n)
		m.mu.Lock()
		m.gets++
		m.mu.Unlock()
	}
	return out, err
}

// BenchmarkCleanup_ReadsPerPass measures what one cleanup pass reads from DynamoDB,
// against the number of users, before and after the Sandboxes index, in the same run
// on the same table. Every user has a sandbox record (one in ten a live lease, the
// rest STOPPED with their slot given back), two connections and two 1 KiB inbox
// items. "Before" is what a pass read until the index: the eventually consistent
// Scan of the whole table that listed the sandboxes, and ReconcileCapacity's counter
// GetItem and consistent Scan of the whole table. "After" is what a pass reads now:
// the backfill marker's GetItem (the backfill over), ListSandboxesIndexed (the index,
// and the leases whole) and ReconcileCapacity with an index that agrees with the
// counter (its GetItem, the index, the pool's Query). Reported per pass: read
// capacity units as DynamoDB Local reports them (rcu-…), items evaluated (items-…),
// and after ÷ before (x-rcu, x-items).
func BenchmarkCleanup_ReadsPerPass(b *testing.B) {
	for _, users := range []int{100, 1000} {
		b.Run(fmt.Sprintf("users=%d", users), func(b *testing.B) {
			warmEmulator(b)
			db := testkit.NewDB(b)
			plain := db.Store()
			plain.MaxSandboxes = users
			m := &readMeter{API: db.Client}
			s := state.New(m, db.Table)
			s.Now = db.Clock.Now
			s.BackfillSettle = time.Nanosecond
			ctx := context.Background()
			payload := strings.Repeat("x", 1024)
			for i := range users {
				u := user(i)
				l := mustAcquire(b, plain, u)
				if i%10 != 0 {
					if err := stopFully(ctx, plain, l); err != nil {
						b.Fatal(err)
					}
				}
				for c := range 2 {
					if _, err := plain.AddConnection(ctx, u, fmt.Sprintf("conn-%d-%s", c, u)); err != nil {
						b.Fatal(err)
					}
					enqueue(b, plain, u, payload)
				}
			}
			// The backfill found nothing to add, twice (the settle time is a
			// nanosecond here): a pass now reads its marker alone.
			for range 2 {
				db.Clock.Advance(time.Millisecond)
				if _, err := s.BackfillSandboxIndex(ctx); err != nil {
					b.Fatal(err)
				}
			}
			tableKiB, indexKiB := sizeKiB(b, db, ""), sizeKiB(b, db, state.SandboxIndex)
			var beforeU, afterU, listU float64
			var beforeI, afterI, unreported int64
			b.ResetTimer()
			for b.Loop() {
				m.reset()
				if err := s.ListSandboxes(ctx, func(*state.Sandbox) error { return nil }); err != nil {
					b.Fatal(err)
				}
				if _, err := s.Capacity(ctx); err != nil { // the old check's counter read
					b.Fatal(err)
				}
				if _, err := s.CountSlots(ctx); err != nil {
					b.Fatal(err)
				}
				beforeU += m.units
				beforeI += m.items
				unreported += m.unreported

				m.reset()
				if bf, err := s.BackfillSandboxIndex(ctx); err != nil || !bf.Done {
					b.Fatalf("backfill %+v, %v", bf, err)
				}
				if err := s.ListSandboxesIndexed(ctx, func(*state.Sandbox) error { return nil }); err != nil {
					b.Fatal(err)
				}
				m.mu.Lock()
				listU += m.units
				m.mu.Unlock()
				if c, err := s.ReconcileCapacity(ctx); err != nil || c.Recounted || c.Corrected {
					b.Fatalf("check %+v, %v", c, err)
				}
				afterU += m.units
				afterI += m.items
				unreported += m.unreported
			}
			b.StopTimer()
			n := float64(b.N)
			b.ReportMetric(beforeU/n, "rcu-before/pass")
			b.ReportMetric(afterU/n, "rcu-after/pass")
			b.ReportMetric(listU/n, "rcu-after-listing/pass") // the marker and the listing; the rest is the check
			b.ReportMetric(float64(beforeI)/n, "items-before/pass")
			b.ReportMetric(float64(afterI)/n, "items-after/pass")
			if beforeU > 0 {
				b.ReportMetric(afterU/beforeU, "x-rcu")
			}
			b.ReportMetric(float64(afterI)/float64(beforeI), "x-items")
			b.ReportMetric(float64(unreported)/n, "reads-without-capacity/pass")
			b.ReportMetric(tableKiB, "table-KiB")
			b.ReportMetric(indexKiB, "index-KiB")
		})
	}
}

// sizeKiB is the size of the table's items (index "") or of an index's, by DynamoDB's
// rule for an item's size (each attribute's name plus its value: a string's UTF-8
// bytes, a number's about one byte per two digits plus one), so the capacity DynamoDB
// Local reports can be checked against it: a Scan costs half a unit per 4 KiB
// evaluated, a consistent one a unit.
func sizeKiB(tb testing.TB, db *testkit.DB, index string) float64 {
	tb.Helper()
	in := &dynamodb.ScanInput{TableName: &db.Table}
	if index != "" {
		in.IndexName = &index
	}
	total := 0
	for {
		out, err := db.Raw.Scan(context.Background(), in)
		if err != nil {
			tb.Fatal(err)
		}
		for _, it := range out.Items {
			for name, v := range it {
				total += len(name)
				switch v := v.(type) {
				case *types.AttributeValueMemberS:
					total += len(v.Value)
				case *types.AttributeValueMemberN:
					total += (len(v.Value)+1)/2 + 1
				case *types.AttributeValueMemberB:
					total += len(v.Value)
				default:
					total += 8 // maps and flags: small, rare here
				}
			}
		}
		if len(out.LastEvaluatedKey) == 0 {
			return float64(total) / 1024
		}
		in.ExclusiveStartKey = out.LastEvaluatedKey
	}
}
