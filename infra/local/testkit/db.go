package testkit

import (
	"context"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/sandgate/sandgate/infra/local/dynamodblocal"
	"github.com/sandgate/sandgate/internal/awsconf"
	"github.com/sandgate/sandgate/internal/state"
)

// Clock is a settable clock for Store.Now and the handlers' Now. Its After channels
// fire when Advance moves the clock past them, so code that waits on the clock (a
// renewal loop, say) is driven by the test: await Waiters, then Advance.
type Clock struct {
	mu      sync.Mutex
	t       time.Time
	waiters []waiter
}

type waiter struct {
	at time.Time
	ch chan time.Time
}

// NewClock returns a clock at the current time.
func NewClock() *Clock { return &Clock{t: time.Now().Truncate(time.Millisecond)} }

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Advance moves the clock forward, firing the After channels it reaches.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
	kept := c.waiters[:0]
	for _, w := range c.waiters {
		if c.t.Before(w.at) {
			kept = append(kept, w)
			continue
		}
		w.ch <- c.t
	}
	c.waiters = kept
}

// After returns a channel that receives the clock's time once it has advanced d from
// now: at once when d <= 0. It is time.After on the test's clock.
func (c *Clock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := make(chan time.Time, 1)
	if d <= 0 {
		ch <- c.t
		return ch
	}
	c.waiters = append(c.waiters, waiter{at: c.t.Add(d), ch: ch})
	return ch
}

// Waiters reports how many After channels have not fired yet.
func (c *Clock) Waiters() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.waiters)
}

// DB is one test's table on the test binary's shared DynamoDB Local.
type DB struct {
	// Raw is an uncounted client, for inspecting items.
	Raw *dynamodb.Client
	// Client counts its calls in Calls; give it to the code under test.
	Client *dynamodb.Client
	Calls  *CallCounter
	Table  string
	Clock  *Clock
}

// NewDB creates a table for this test. Use dynamodblocal.RunTests in TestMain.
func NewDB(tb testing.TB) *DB {
	tb.Helper()
	return NewDBOn(tb, dynamodblocal.StartForTest(tb))
}

// NewDBOn creates a table for this test on srv (a server the test stops and restarts,
// say); optFns adjust the counted client further (a proxy in front of the emulator, a
// quicker retryer).
func NewDBOn(tb testing.TB, srv *dynamodblocal.Server, optFns ...func(*dynamodb.Options)) *DB {
	tb.Helper()
	ctx := context.Background()
	raw, err := srv.Client(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	calls := NewCallCounter()
	counted, err := srv.Client(ctx, append([]func(*dynamodb.Options){func(o *dynamodb.Options) {
		o.APIOptions = append(o.APIOptions, calls.APIOption)
		// DynamoDB Local serializes writes; racing goroutines each on a connection of
		// their own would measure connection set-up, not the race.
		o.HTTPClient = awsconf.NewHTTPClient().WithTransportOptions(func(t *http.Transport) {
			t.MaxConnsPerHost = awsconf.DefaultMaxIdleConnsPerHost
		})
	}}, optFns...)...)
	if err != nil {
		tb.Fatal(err)
	}
	table := dynamodblocal.TableName(tb)
	if err := state.CreateTable(ctx, raw, table); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		_, _ = raw.DeleteTable(context.Background(), &dynamodb.DeleteTableInput{TableName: aws.String(table)})
	})
	return &DB{Raw: raw, Client: counted, Calls: calls, Table: table, Clock: NewClock()}
}

// Store returns a new Store over the counted client, on the test's clock.
func (d *DB) Store() *state.Store {
	s := state.New(d.Client, d.Table)
	s.Now = d.Clock.Now
	return s
}

// writeOps are the DynamoDB operations that write.
var writeOps = []string{"PutItem", "UpdateItem", "DeleteItem", "TransactWriteItems", "BatchWriteItem"}

// Writes returns the write calls counted so far.
func (d *DB) Writes() int64 {
	var n int64
	for _, op := range writeOps {
		n += d.Calls.Calls("DynamoDB", op)
	}
	return n
}

// Items returns every item in the table (a raw, consistent Scan).
func (d *DB) Items(tb testing.TB) []map[string]types.AttributeValue {
	tb.Helper()
	return scan(tb, d.Raw, d.Table)
}

// scan returns every item in table (a consistent Scan).
func scan(tb testing.TB, c *dynamodb.Client, table string) []map[string]types.AttributeValue {
	tb.Helper()
	var items []map[string]types.AttributeValue
	in := &dynamodb.ScanInput{TableName: aws.String(table), ConsistentRead: aws.Bool(true)}
	for {
		out, err := c.Scan(context.Background(), in)
		if err != nil {
			tb.Fatal(err)
		}
		items = append(items, out.Items...)
		if len(out.LastEvaluatedKey) == 0 {
			return items
		}
		in.ExclusiveStartKey = out.LastEvaluatedKey
	}
}
