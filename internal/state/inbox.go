package state

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
)

// Attributes of inbox items and of the per-user inbox counter (INBOXMETA).
const (
	aSeq        = "seq"
	aPayload    = "payload"
	aEnqueuedAt = "enqueuedAt"
	aNext       = "next"  // the sequence number the next message gets
	aCount      = "count" // items in the current epoch
	aBytes      = "bytes" // their payload bytes
	aFloor      = "floor" // first sequence number of the current epoch
)

// InboxItem is one queued message.
type InboxItem struct {
	UserID       string
	Seq          uint64 // total order of the user's inbox
	ConnectionID string
	Payload      []byte
	EnqueuedAt   time.Time
	ExpiresAt    time.Time
	// Queued is set by Enqueue only: how many messages the inbox counts with this one
	// added. 1 means the inbox was empty, so a caller can tell a user "starting" once
	// per start instead of once per message, without another read or write.
	Queued int
}

// inboxMeta is the per-user counter item.
type inboxMeta struct {
	next, floor  uint64
	count, bytes int
	expiresAt    time.Time
}

func decodeMeta(item map[string]types.AttributeValue) *inboxMeta {
	if len(item) == 0 {
		return nil
	}
	return &inboxMeta{
		next: uint64(getN(item, aNext)), floor: uint64(getN(item, aFloor)),
		count: int(getN(item, aCount)), bytes: int(getN(item, aBytes)),
		expiresAt: time.Unix(getN(item, AttrTTL), 0),
	}
}

func inboxSK(seq uint64) string { return fmt.Sprintf("%s%020d", inboxPrefix, seq) }

// Enqueue appends a message to the user's inbox, after every message already in it,
// and returns it with its sequence number. Errors: ErrTooLarge for a payload over
// MaxMessageBytes; *InboxFullError when InboxMaxItems or InboxMaxBytes would be
// exceeded; *RunningError when the sandbox is RUNNING at the moment of the write (the
// agent has drained the inbox, so the message must go to it directly).
//
// How the order is kept: a per-user counter item (INBOXMETA) holds the next sequence
// number and the inbox's count and bytes. Enqueue reads it, then one
// TransactWriteItems advances it conditional on the number read and on the bounds,
// puts INBOX#<seq> and checks the sandbox is not RUNNING. Concurrent appends for one
// user serialize on the counter: a loser's condition fails, DynamoDB returns the
// counter's new value (ALL_OLD), and it retries with that value, no extra read. Order
// is thus the commit order (linearizable), unlike clock-based ids, and sequence
// numbers never repeat: after the counter expires with its items (its TTL is the
// newest item's) numbering restarts above the current time in microseconds.
//
// Expiry: items past InboxTTL stop counting once the counter's own expiry passes, so a
// user whose messages were never delivered is not locked out until TTL deletion; the
// counter's floor marks where the current epoch starts, and Ack only decrements for
// items of that epoch.
//
// Calls: one GetItem and one TransactWriteItems when uncontended.
func (s *Store) Enqueue(ctx context.Context, userID, connectionID string, payload []byte) (InboxItem, error) {
	if err := checkID("user id", userID); err != nil {
		return InboxItem{}, fmt.Errorf("enqueue: %w", err)
	}
	if err := checkID("connection id", connectionID); err != nil {
		return InboxItem{}, fmt.Errorf("enqueue: %w", err)
	}
	size := len(payload)
	if size > s.MaxMessageBytes || size > s.InboxMaxBytes {
		return InboxItem{}, fmt.Errorf("enqueue for %s: %w: %d bytes, limit %d", userID, ErrTooLarge, size, min(s.MaxMessageBytes, s.InboxMaxBytes))
	}
	out, err := s.api.GetItem(ctx, &dynamodb.GetItemInput{
		TableName: aws.String(s.table), Key: key(userKey(userID), skInboxMeta), ConsistentRead: aws.Bool(true),
	})
	if err != nil {
		return InboxItem{}, fmt.Errorf("enqueue for %s: %w", userID, unavailable(err))
	}
	meta := decodeMeta(out.Item)
	var item InboxItem
	err = s.retry(ctx, "enqueue", func() (outcome, error) {
		now := s.now()
		it := InboxItem{UserID: userID, ConnectionID: connectionID, Payload: payload, EnqueuedAt: now,
			ExpiresAt: time.Unix(ttl(now.Add(s.InboxTTL)), 0)}
		metaW, full := s.advance(userID, meta, &it, now)
		if full != nil {
			return done, full
		}
		e := newExpr()
		put := &types.Put{
			TableName: aws.String(s.table),
			Item: map[string]types.AttributeValue{
				AttrPK: avS(userKey(userID)), AttrSK: avS(inboxSK(it.Seq)),
				aSeq: avN(int64(it.Seq)), aConnID: avS(connectionID),
				aPayload: &types.AttributeValueMemberB{Value: payload}, aEnqueuedAt: avMs(now),
				AttrTTL: avN(it.ExpiresAt.Unix()),
			},
			ConditionExpression:      aws.String("attribute_not_exists(" + e.n(AttrPK) + ")"),
			ExpressionAttributeNames: e.Names(),
		}
		ce := newExpr()
		check := &types.ConditionCheck{
			TableName: aws.String(s.table), Key: sandboxKey(userID),
			ConditionExpression: aws.String(fmt.Sprintf("attribute_not_exists(%s) OR %s <> %s",
				ce.n(AttrPK), ce.n(aState), ce.v("running", avS(string(Running))))),
			ExpressionAttributeNames: ce.Names(), ExpressionAttributeValues: ce.Values(),
			ReturnValuesOnConditionCheckFailure: types.ReturnValuesOnConditionCheckFailureAllOld,
		}
		items := make([]types.TransactWriteItem, enqueueItems)
		items[enqueueCounter] = metaW.tx(s.table)
		items[enqueueMessage] = types.TransactWriteItem{Put: put}
		items[enqueueNotRunning] = types.TransactWriteItem{ConditionCheck: check}
		_, err := s.api.TransactWriteItems(ctx, &dynamodb.TransactWriteItemsInput{TransactItems: items})
		out, err := settle(err, nil, func(r refusal) (outcome, error) {
			switch {
			case r.failed(enqueueNotRunning):
				return done, &RunningError{Sandbox: r.sandbox(enqueueNotRunning)}
			case r.failed(enqueueCounter):
				seen := decodeMeta(r.old(enqueueCounter))
				if sameSeq(meta, seen) {
					// The counter did not move: the bounds failed, against values an
					// Ack may have lowered since the read, so decide again.
					if meta != nil && seen != nil && meta.count == seen.count && meta.bytes == seen.bytes {
						return done, s.fullError(seen, now)
					}
				}
				// Another append won the counter: go again with its new value.
				meta = seen
				return retrySoon, r.err
			}
			return done, fmt.Errorf("sequence number %d already used", it.Seq)
		})
		if out == done && err == nil {
			item = it
		}
		return out, err
	})
	if err != nil {
		return InboxItem{}, fmt.Errorf("enqueue for %s: %w", userID, err)
	}
	return item, nil
}

// Positions in Enqueue's transaction.
const (
	enqueueCounter    = iota // the inbox counter advances, within the bounds
	enqueueMessage           // the message's item, under a sequence number not yet used
	enqueueNotRunning        // the sandbox is not RUNNING
	enqueueItems
)

func sameSeq(a, b *inboxMeta) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return a.next == b.next
}

func (s *Store) fullError(m *inboxMeta, now time.Time) error {
	if m == nil || !now.Before(m.expiresAt) {
		return &InboxFullError{MaxItems: s.InboxMaxItems, MaxBytes: s.InboxMaxBytes}
	}
	return &InboxFullError{Items: m.count, Bytes: m.bytes, MaxItems: s.InboxMaxItems, MaxBytes: s.InboxMaxBytes}
}

// advance assigns it its sequence number and returns the counter's conditional
// update, or an *InboxFullError when the counter as read has no room.
func (s *Store) advance(userID string, m *inboxMeta, it *InboxItem, now time.Time) (write, error) {
	e := newExpr()
	w := write{key: key(userKey(userID), skInboxMeta), e: e}
	size := int64(len(it.Payload))
	exp := it.ExpiresAt
	switch {
	case m == nil:
		it.Seq = uint64(now.UnixMicro())
		it.Queued = 1
		w.cond = fmt.Sprintf("attribute_not_exists(%s)", e.n(AttrPK))
	case !now.Before(m.expiresAt):
		// Every item the counter counted has expired: start a new epoch.
		it.Seq = m.next
		it.Queued = 1
		w.cond = fmt.Sprintf("%s = %s", e.n(aNext), e.v("seq", avN(int64(it.Seq))))
	default:
		if m.count+1 > s.InboxMaxItems || m.bytes+int(size) > s.InboxMaxBytes {
			return w, s.fullError(m, now)
		}
		it.Seq = m.next
		it.Queued = m.count + 1
		if m.expiresAt.After(exp) {
			exp = m.expiresAt // a clock behind the last writer's must not shorten the counter's life
		}
		w.update = fmt.Sprintf("SET %s = %s, %s = %s ADD %s %s, %s %s",
			e.n(aNext), e.v("next", avN(int64(it.Seq+1))), e.n(AttrTTL), e.v("exp", avN(exp.Unix())),
			e.n(aCount), e.v("one", avN(1)), e.n(aBytes), e.v("size", avN(size)))
		w.cond = fmt.Sprintf("%s = %s AND %s < %s AND %s <= %s",
			e.n(aNext), e.v("seq", avN(int64(it.Seq))),
			e.n(aCount), e.v("maxItems", avN(int64(s.InboxMaxItems))),
			e.n(aBytes), e.v("room", avN(int64(s.InboxMaxBytes)-size)))
		return w, nil
	}
	// A new counter or a new epoch: this item is the only one counted.
	w.update = fmt.Sprintf("SET %s = %s, %s = %s, %s = %s, %s = %s, %s = %s, %s = %s",
		e.n(aNext), e.v("next", avN(int64(it.Seq+1))), e.n(aFloor), e.v("floor", avN(int64(it.Seq))),
		e.n(aCount), e.v("one", avN(1)), e.n(aBytes), e.v("size", avN(size)),
		e.n(AttrTTL), e.v("exp", avN(exp.Unix())), e.n(aUserID), e.v("uid", avS(userID)))
	return w, nil
}

// Inbox returns the user's unexpired messages in order, with one strongly consistent
// Query call per 1 MB page.
func (s *Store) Inbox(ctx context.Context, userID string) ([]InboxItem, error) {
	if err := checkID("user id", userID); err != nil {
		return nil, fmt.Errorf("read inbox: %w", err)
	}
	now := s.now()
	var items []InboxItem
	err := s.query(ctx, userID, inboxPrefix, func(item map[string]types.AttributeValue) {
		exp := time.Unix(getN(item, AttrTTL), 0)
		if !now.Before(exp) {
			return
		}
		items = append(items, InboxItem{
			UserID: userID, Seq: uint64(getN(item, aSeq)), ConnectionID: getS(item, aConnID),
			Payload: getB(item, aPayload), EnqueuedAt: getMs(item, aEnqueuedAt), ExpiresAt: exp,
		})
	})
	if err != nil {
		return nil, fmt.Errorf("read inbox of %s: %w", userID, err)
	}
	return items, nil
}

// Queued returns how many messages the user's inbox holds (the bound's count), with
// one strongly consistent GetItem of the inbox counter: no Query, so a status read
// stays one item however long the inbox.
func (s *Store) Queued(ctx context.Context, userID string) (int, error) {
	if err := checkID("user id", userID); err != nil {
		return 0, fmt.Errorf("count inbox: %w", err)
	}
	out, err := s.api.GetItem(ctx, &dynamodb.GetItemInput{
		TableName: aws.String(s.table), Key: key(userKey(userID), skInboxMeta), ConsistentRead: aws.Bool(true),
	})
	if err != nil {
		return 0, fmt.Errorf("count inbox of %s: %w", userID, unavailable(err))
	}
	m := decodeMeta(out.Item)
	if m == nil || !s.now().Before(m.expiresAt) {
		return 0, nil // no counter, or every item it counted has expired
	}
	return m.count, nil
}

// Positions in Ack's transaction.
const (
	ackMessage = iota // the message's item is deleted, if it still exists
	ackCounter        // the counter drops it, if it belongs to the current epoch
	ackItems
)

// Ack deletes a delivered message and frees its room in the inbox bounds, in one
// TransactWriteItems. Acknowledging a message twice is not an error.
func (s *Store) Ack(ctx context.Context, it InboxItem) error {
	if err := checkID("user id", it.UserID); err != nil {
		return fmt.Errorf("ack: %w", err)
	}
	itemKey := key(userKey(it.UserID), inboxSK(it.Seq))
	err := s.retry(ctx, "ack", func() (outcome, error) {
		de := newExpr()
		del := &types.Delete{
			TableName: aws.String(s.table), Key: itemKey,
			ConditionExpression:      aws.String("attribute_exists(" + de.n(AttrPK) + ")"),
			ExpressionAttributeNames: de.Names(),
		}
		e := newExpr()
		metaW := write{
			key: key(userKey(it.UserID), skInboxMeta), e: e,
			update: fmt.Sprintf("ADD %s %s, %s %s",
				e.n(aCount), e.v("minusOne", avN(-1)), e.n(aBytes), e.v("minusSize", avN(-int64(len(it.Payload))))),
			// Only items of the current epoch are counted (see Enqueue).
			cond: fmt.Sprintf("%s <= %s", e.n(aFloor), e.v("seq", avN(int64(it.Seq)))),
		}
		items := make([]types.TransactWriteItem, ackItems)
		items[ackMessage] = types.TransactWriteItem{Delete: del}
		items[ackCounter] = metaW.tx(s.table)
		_, err := s.api.TransactWriteItems(ctx, &dynamodb.TransactWriteItemsInput{TransactItems: items})
		return settle(err, func(r refusal) bool {
			return r.failed(ackMessage) // already deleted
		}, func(r refusal) (outcome, error) {
			// The counter refused: an item of an expired epoch (or a counter
			// already gone), not counted.
			_, err := s.api.DeleteItem(ctx, &dynamodb.DeleteItemInput{TableName: aws.String(s.table), Key: itemKey})
			return done, unavailable(err)
		})
	})
	if err != nil {
		return fmt.Errorf("ack inbox item %s of %s: %w", strconv.FormatUint(it.Seq, 10), it.UserID, err)
	}
	return nil
}
