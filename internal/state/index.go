package state

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
)

// What cleanup reads each pass.
//
// A Scan of the table reads every item — connections, inbox items of up to 128 KB,
// access items — and pays for all of them whatever its filter keeps. Cleanup needs
// the sandbox records alone, so it reads them from the Sandboxes index: sparse (only
// sandbox records carry its key, AttrSandboxOf), projecting only what changes when a
// record changes state (SandboxIndexProjection). A lease's deadline, which every
// heartbeat renews, is not in it: the leases (bounded by MaxSandboxes, not by the
// number of users) are read whole from the table, a hundred keys per BatchGetItem.

// batchGetMax is the most keys one BatchGetItem takes.
const batchGetMax = 100

// ListSandboxesIndexed calls fn with every sandbox record the Sandboxes index holds:
// cleanup's listing, whose cost follows the sandbox records, not the table. Leases
// (STARTING, RUNNING, STOPPING) and purge locks are read whole from the table with
// BatchGetItem, since judging them needs their deadline; STOPPED records are as the
// index projects them: UserID, State, LeaseToken, Generation, TaskARN, StateSince,
// Slot and PurgeStarted, with LeaseDeadline, HeartbeatAt, LastActivity, Endpoint,
// GatewayToken, Reason, Warm and Version zero.
//
// Both reads are eventually consistent, and the index trails the table: a record may
// show an older state, and one created a moment ago may be missing. Cleanup acts on
// what it finds only through conditional writes, which see the current record; a
// record the index missed is found by the next pass. A record written before the
// index existed is not in it until BackfillSandboxIndex gives it the key. fn's error
// stops the listing and is returned.
func (s *Store) ListSandboxesIndexed(ctx context.Context, fn func(*Sandbox) error) error {
	var leases []map[string]types.AttributeValue
	flush := func() error {
		err := s.batchGet(ctx, leases, func(item map[string]types.AttributeValue) error {
			if getS(item, AttrSK) != skSandbox {
				return nil
			}
			return fn(decodeSandbox(item))
		})
		leases = leases[:0]
		return err
	}
	err := s.scanIndex(ctx, func(item map[string]types.AttributeValue) error {
		sb := decodeSandbox(item)
		if sb.State == Stopped {
			return fn(sb)
		}
		leases = append(leases, key(getS(item, AttrPK), getS(item, AttrSK)))
		if len(leases) == batchGetMax {
			return flush()
		}
		return nil
	})
	if err == nil && len(leases) > 0 {
		err = flush()
	}
	if err != nil {
		return fmt.Errorf("list sandboxes from index %s: %w", SandboxIndex, err)
	}
	return nil
}

// scanIndex calls fn with every item of the Sandboxes index, one Scan call per page
// (ScanPageSize items each when set). fn's error stops the scan and is returned.
func (s *Store) scanIndex(ctx context.Context, fn func(map[string]types.AttributeValue) error) error {
	in := &dynamodb.ScanInput{TableName: aws.String(s.table), IndexName: aws.String(SandboxIndex)}
	return s.scanPages(ctx, in, fn)
}

// batchGet reads keys (at most batchGetMax) with eventually consistent BatchGetItem
// calls and calls fn with every item found; a key whose item is gone is skipped. Keys
// DynamoDB leaves unprocessed (throttling) are asked again after a back-off, within
// the Retry policy's attempts.
func (s *Store) batchGet(ctx context.Context, keys []map[string]types.AttributeValue, fn func(map[string]types.AttributeValue) error) error {
	if len(keys) == 0 {
		return nil
	}
	req := map[string]types.KeysAndAttributes{s.table: {Keys: append([]map[string]types.AttributeValue(nil), keys...)}}
	p := s.Retry
	if p.MaxAttempts <= 0 {
		p = DefaultRetry
	}
	for attempt := 1; ; attempt++ {
		out, err := s.api.BatchGetItem(ctx, &dynamodb.BatchGetItemInput{RequestItems: req})
		if err != nil {
			return unavailable(err)
		}
		for _, item := range out.Responses[s.table] {
			if err := fn(item); err != nil {
				return err
			}
		}
		left, ok := out.UnprocessedKeys[s.table]
		if !ok || len(left.Keys) == 0 {
			return nil
		}
		if attempt >= p.MaxAttempts {
			return fmt.Errorf("%w: %d keys unprocessed after %d BatchGetItem calls", ErrContention, len(left.Keys), attempt)
		}
		req = map[string]types.KeysAndAttributes{s.table: left}
		d := min(p.BaseDelay<<min(attempt-1, 20), p.MaxDelay)
		if d > 0 {
			t := time.NewTimer(rand.N(d) + 1)
			select {
			case <-ctx.Done():
				t.Stop()
				return ctx.Err()
			case <-t.C:
			}
		}
	}
}

// countSlotsIndexed counts what holds a capacity slot as the index and the pool
// show it: the index's records that hold one (their state and slot are projected)
// and the pool items (one consistent Query of the POOL partition). The index trails
// the table, so the count is a hint, never a reason to write (ReconcileCapacity).
func (s *Store) countSlotsIndexed(ctx context.Context) (int, error) {
	n := 0
	err := s.scanIndex(ctx, func(item map[string]types.AttributeValue) error {
		if decodeSandbox(item).HoldsSlot() {
			n++
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("count slots in index %s: %w", SandboxIndex, err)
	}
	pool, err := s.PoolTasks(ctx)
	if err != nil {
		return 0, fmt.Errorf("count slots: %w", err)
	}
	return n + len(pool), nil
}

// The backfill of records written before the Sandboxes index: they carry no
// AttrSandboxOf, so the index never shows them. A marker item records its progress.
const (
	pkSchema       = "SCHEMA"
	skSandboxIndex = "SANDBOXINDEX"
	// aFirstScan is when the first backfill scan began (Unix ms); aBackfilled when the
	// scan that found nothing left to add began.
	aFirstScan  = "firstScan"
	aBackfilled = "backfilled"
)

// DefaultBackfillSettle is how long after the first backfill scan a scan must begin
// for its finding nothing to end the backfill: longer than Lambda's 15-minute maximum
// timeout and than a deploy's update of the functions after the table's, so no
// invocation of the code that wrote records without the key can still be running.
const DefaultBackfillSettle = time.Hour

// Backfill is what BackfillSandboxIndex found and did.
type Backfill struct {
	// Done reports that the backfill had ended before this call: nothing was scanned.
	Done bool
	// Added counts the records this call gave the index key.
	Added int
	// Finished reports that this call's scan found nothing to add, late enough
	// after the first scan to end the backfill.
	Finished bool
}

// BackfillSandboxIndex gives the index key to every sandbox record that lacks it
// (written by a version before the Sandboxes index), so ListSandboxesIndexed sees
// them: one Scan of the whole table, filtered on the missing key, and one UpdateItem
// per record found, conditional on the record still existing without the key (it
// changes nothing else, not even the version, so no lease write is disturbed). Once
// a scan that began BackfillSettle or more after the first one finds nothing to add,
// a marker item ends the backfill and later calls cost one GetItem.
func (s *Store) BackfillSandboxIndex(ctx context.Context) (Backfill, error) {
	var b Backfill
	mk := key(pkSchema, skSandboxIndex)
	out, err := s.api.GetItem(ctx, &dynamodb.GetItemInput{TableName: aws.String(s.table), Key: mk, ConsistentRead: aws.Bool(true)})
	if err != nil {
		return b, fmt.Errorf("backfill index: %w", unavailable(err))
	}
	if _, ok := out.Item[aBackfilled]; ok {
		return Backfill{Done: true}, nil
	}
	start := s.now()
	first := getMs(out.Item, aFirstScan)
	if first.IsZero() {
		e := newExpr()
		up, err := s.api.UpdateItem(ctx, &dynamodb.UpdateItemInput{
			TableName: aws.String(s.table), Key: mk,
			UpdateExpression:         aws.String(fmt.Sprintf("SET %s = if_not_exists(%s, %s)", e.n(aFirstScan), e.n(aFirstScan), e.v("now", avMs(start)))),
			ExpressionAttributeNames: e.Names(), ExpressionAttributeValues: e.Values(),
			ReturnValues: types.ReturnValueAllNew,
		})
		if err != nil {
			return b, fmt.Errorf("backfill index: %w", unavailable(err))
		}
		first = getMs(up.Attributes, aFirstScan)
	}
	var users []string
	err = s.scan(ctx, false, func(e *expr) string {
		return fmt.Sprintf("%s = %s AND attribute_not_exists(%s)", e.n(AttrSK), e.v("sk", avS(skSandbox)), e.n(AttrSandboxOf))
	}, func(item map[string]types.AttributeValue) error {
		if id := recordUser(item); id != "" {
			users = append(users, id)
		}
		return ctx.Err()
	})
	if err != nil {
		return b, fmt.Errorf("backfill index: %w", err)
	}
	for _, id := range users {
		e := newExpr()
		_, err := s.api.UpdateItem(ctx, &dynamodb.UpdateItemInput{
			TableName: aws.String(s.table), Key: sandboxKey(id),
			UpdateExpression: aws.String(fmt.Sprintf("SET %s = %s", e.n(AttrSandboxOf), e.v("uid", avS(id)))),
			ConditionExpression: aws.String(fmt.Sprintf("attribute_exists(%s) AND attribute_not_exists(%s)",
				e.n(AttrPK), e.n(AttrSandboxOf))),
			ExpressionAttributeNames: e.Names(), ExpressionAttributeValues: e.Values(),
		})
		if _, refused := refusalOf(err); refused {
			continue // deleted, or given the key by a start, since the scan
		}
		if err != nil {
			return b, fmt.Errorf("backfill index: record of %s: %w", id, unavailable(err))
		}
		b.Added++
	}
	if b.Added > 0 || start.Before(first.Add(s.backfillSettle())) {
		s.Logger.Info("sandbox index backfilled", "added", b.Added, "firstScan", first)
		return b, nil
	}
	e := newExpr()
	_, err = s.api.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName: aws.String(s.table), Key: mk,
		UpdateExpression:         aws.String(fmt.Sprintf("SET %s = %s", e.n(aBackfilled), e.v("start", avMs(start)))),
		ExpressionAttributeNames: e.Names(), ExpressionAttributeValues: e.Values(),
	})
	if err != nil {
		return b, fmt.Errorf("backfill index: %w", unavailable(err))
	}
	b.Finished = true
	s.Logger.Info("sandbox index backfill finished", "firstScan", first)
	return b, nil
}

func (s *Store) backfillSettle() time.Duration {
	if s.BackfillSettle > 0 {
		return s.BackfillSettle
	}
	return DefaultBackfillSettle
}
