package state

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
)

// An operator's power over one user (internal/admin): the revocation that the access
// item reserved room for, and the listing and erasure of everything the table holds of
// the user.
//
// A revocation is one attribute of the access item, notBefore: URLs that may have been
// signed before it are refused (internal/revocation decides which, from a URL's exp).
// It only ever moves forward, and the item lives at least ConnectionTTL past it, far
// longer than any URL signed before it can be valid.

// Revoke makes at userID's "not before": from now on, URLs that may have been signed
// before at are refused. An earlier at than the one recorded changes nothing; the
// recorded one is returned either way. The access item is kept (its TTL moved to at
// least at + ConnectionTTL) so that the revocation outlives every URL it refuses.
//
// Calls: one UpdateItem.
func (s *Store) Revoke(ctx context.Context, userID string, at time.Time) (time.Time, error) {
	if err := checkID("user id", userID); err != nil {
		return time.Time{}, fmt.Errorf("revoke: %w", err)
	}
	if at.IsZero() {
		return time.Time{}, fmt.Errorf("revoke: %w: zero time", ErrInvalid)
	}
	at = time.UnixMilli(at.UnixMilli())
	e := newExpr()
	nb, exp := e.n(aNotBefore), e.n(AttrTTL)
	in := &dynamodb.UpdateItemInput{
		TableName: aws.String(s.table), Key: accessKey(userID),
		UpdateExpression: aws.String(fmt.Sprintf("SET %s = %s, %s = %s, %s = %s",
			nb, e.v("at", avMs(at)), e.n(aUserID), e.v("user", avS(userID)),
			exp, e.v("ttl", avN(ttl(at.Add(s.ConnectionTTL)))))),
		// The TTL only grows: a connect admitted just before may have set it later.
		ConditionExpression: aws.String(fmt.Sprintf("(attribute_not_exists(%s) OR %s < %s) AND (attribute_not_exists(%s) OR %s <= %s)",
			nb, nb, e.v("at", avMs(at)), exp, exp, e.v("ttl", avN(ttl(at.Add(s.ConnectionTTL)))))),
		ReturnValuesOnConditionCheckFailure: types.ReturnValuesOnConditionCheckFailureAllOld,
	}
	in.ExpressionAttributeNames, in.ExpressionAttributeValues = e.Names(), e.Values()
	_, err := s.api.UpdateItem(ctx, in)
	r, refused := refusalOf(err)
	switch {
	case err == nil:
		return at, nil
	case !refused:
		return time.Time{}, fmt.Errorf("revoke %s: %w", userID, unavailable(err))
	}
	old := decodeAccess(userID, r.old(soleItem))
	if old != nil && !old.NotBefore.Before(at) {
		return old.NotBefore, nil // a later revocation is recorded already
	}
	// The item's TTL lies beyond at + ConnectionTTL: set the time alone.
	e = newExpr()
	nb = e.n(aNotBefore)
	in = &dynamodb.UpdateItemInput{
		TableName: aws.String(s.table), Key: accessKey(userID),
		UpdateExpression:    aws.String(fmt.Sprintf("SET %s = %s", nb, e.v("at", avMs(at)))),
		ConditionExpression: aws.String(fmt.Sprintf("attribute_not_exists(%s) OR %s < %s", nb, nb, e.v("at", avMs(at)))),
	}
	in.ExpressionAttributeNames, in.ExpressionAttributeValues = e.Names(), e.Values()
	if _, err := s.api.UpdateItem(ctx, in); err != nil {
		if _, refused := refusalOf(err); refused {
			return s.notBefore(ctx, userID, at)
		}
		return time.Time{}, fmt.Errorf("revoke %s: %w", userID, unavailable(err))
	}
	return at, nil
}

// notBefore rereads the recorded not-before after a refused write: a later one won.
func (s *Store) notBefore(ctx context.Context, userID string, at time.Time) (time.Time, error) {
	nb, err := s.NotBefore(ctx, userID)
	if err != nil {
		return time.Time{}, fmt.Errorf("revoke %s: %w", userID, err)
	}
	if nb.Before(at) {
		return time.Time{}, fmt.Errorf("revoke %s: %w", userID, ErrContention)
	}
	return nb, nil
}

// NotBefore returns userID's revocation time, zero when the user was never revoked:
// one strongly consistent GetItem of the access item's one attribute, so a revocation
// is seen by the next connect anywhere.
func (s *Store) NotBefore(ctx context.Context, userID string) (time.Time, error) {
	if err := checkID("user id", userID); err != nil {
		return time.Time{}, fmt.Errorf("read revocation: %w", err)
	}
	out, err := s.api.GetItem(ctx, &dynamodb.GetItemInput{
		TableName: aws.String(s.table), Key: accessKey(userID), ConsistentRead: aws.Bool(true),
		ProjectionExpression:     aws.String("#nb"),
		ExpressionAttributeNames: map[string]string{"#nb": aNotBefore},
	})
	if err != nil {
		return time.Time{}, fmt.Errorf("read revocation of %s: %w", userID, unavailable(err))
	}
	return getMs(out.Item, aNotBefore), nil
}

// ItemKey names one item of the table.
type ItemKey struct{ PK, SK string }

func (k ItemKey) String() string { return k.PK + " / " + k.SK }

// UserItems returns the key of every item that holds something of userID: the items
// of USER#<id> (sandbox record, connections, inbox and its counter, spend), the access
// item, and the warm pool's claims naming the user. Strongly consistent, in key order.
//
// Calls: one Query of the user's partition and one of the claims per page, one GetItem.
func (s *Store) UserItems(ctx context.Context, userID string) ([]ItemKey, error) {
	if err := checkID("user id", userID); err != nil {
		return nil, fmt.Errorf("list items: %w", err)
	}
	var keys []ItemKey
	add := func(item map[string]types.AttributeValue) {
		keys = append(keys, ItemKey{PK: getS(item, AttrPK), SK: getS(item, AttrSK)})
	}
	if err := s.queryKeys(ctx, userKey(userID), "", add); err != nil {
		return nil, fmt.Errorf("list items of %s: %w", userID, err)
	}
	out, err := s.api.GetItem(ctx, &dynamodb.GetItemInput{
		TableName: aws.String(s.table), Key: accessKey(userID), ConsistentRead: aws.Bool(true),
		ProjectionExpression:     aws.String("#pk, #sk"),
		ExpressionAttributeNames: map[string]string{"#pk": AttrPK, "#sk": AttrSK},
	})
	if err != nil {
		return nil, fmt.Errorf("list items of %s: %w", userID, unavailable(err))
	}
	if len(out.Item) > 0 {
		add(out.Item)
	}
	claims, err := s.claimsOf(ctx, userID)
	if err != nil {
		return nil, fmt.Errorf("list items of %s: %w", userID, err)
	}
	keys = append(keys, claims...)
	sort.Slice(keys, func(i, j int) bool {
		if keys[i].PK != keys[j].PK {
			return keys[i].PK < keys[j].PK
		}
		return keys[i].SK < keys[j].SK
	})
	return keys, nil
}

// claimsOf returns the keys of the pool claims naming userID.
func (s *Store) claimsOf(ctx context.Context, userID string) ([]ItemKey, error) {
	var keys []ItemKey
	err := s.queryKeys(ctx, pkPoolClaim, userID, func(item map[string]types.AttributeValue) {
		keys = append(keys, ItemKey{PK: getS(item, AttrPK), SK: getS(item, AttrSK)})
	})
	return keys, err
}

// queryKeys calls fn with the key of every item of partition pk (only those whose
// userId is user, when user is set), strongly consistent, one Query per page.
func (s *Store) queryKeys(ctx context.Context, pk, user string, fn func(map[string]types.AttributeValue)) error {
	e := newExpr()
	in := &dynamodb.QueryInput{
		TableName:              aws.String(s.table),
		KeyConditionExpression: aws.String(e.n(AttrPK) + " = " + e.v("pk", avS(pk))),
		ConsistentRead:         aws.Bool(true),
	}
	if user != "" {
		in.FilterExpression = aws.String(e.n(aUserID) + " = " + e.v("user", avS(user)))
	}
	in.ExpressionAttributeNames, in.ExpressionAttributeValues = e.Names(), e.Values()
	for {
		out, err := s.api.Query(ctx, in)
		if err != nil {
			return unavailable(err)
		}
		for _, item := range out.Items {
			fn(item)
		}
		if len(out.LastEvaluatedKey) == 0 {
			return nil
		}
		in.ExclusiveStartKey = out.LastEvaluatedKey
	}
}

// ErasedAccess is what EraseUserItems leaves of the user: the access item reduced to
// its revocation (notBefore, and the TTL that deletes it), so the URLs signed before
// the erasure stay refused until they have all expired.
const ErasedAccess = "notBefore only"

// EraseUserItems deletes every item of the user but the sandbox record, under the
// purge lock l (which it checks first: held, and PURGING): the connections, inbox,
// inbox counter and spend of USER#<id>, the pool claims naming the user, and the
// access item's limits — of which only the revocation stays (see ErasedAccess). End
// the lock with FinishPurge afterwards, which deletes the record. It returns the keys
// it deleted. A failure partway leaves the lock, and a second call resumes.
//
// Calls: one GetItem, the Queries of UserItems, one DeleteItem per item, one UpdateItem.
func (s *Store) EraseUserItems(ctx context.Context, l Lease) ([]ItemKey, error) {
	if err := checkLease(l); err != nil {
		return nil, fmt.Errorf("erase items: %w", err)
	}
	cur, err := s.get(ctx, l.UserID)
	if err != nil {
		return nil, fmt.Errorf("erase items of %s: %w", l.UserID, err)
	}
	if !ours(cur, l) || cur.State != Purging {
		return nil, fmt.Errorf("erase items of %s: %w", l.UserID, lostOrState(l, cur))
	}
	keys, err := s.UserItems(ctx, l.UserID)
	if err != nil {
		return nil, fmt.Errorf("erase items: %w", err)
	}
	access := ItemKey{PK: accessPrefix + l.UserID, SK: skAccess}
	var deleted []ItemKey
	for _, k := range keys {
		if k == access || k == (ItemKey{PK: userKey(l.UserID), SK: skSandbox}) {
			continue
		}
		_, err := s.api.DeleteItem(ctx, &dynamodb.DeleteItemInput{TableName: aws.String(s.table), Key: key(k.PK, k.SK)})
		if err != nil {
			return deleted, fmt.Errorf("erase items of %s: delete %s: %w", l.UserID, k, unavailable(err))
		}
		deleted = append(deleted, k)
	}
	e := newExpr()
	_, err = s.api.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName: aws.String(s.table), Key: accessKey(l.UserID),
		UpdateExpression: aws.String(fmt.Sprintf("REMOVE %s, %s, %s, %s",
			e.n(aConns), e.n(aConnectTAT), e.n(aCheckedAt), e.n(aUserID))),
		ConditionExpression:      aws.String("attribute_exists(" + e.n(AttrPK) + ")"),
		ExpressionAttributeNames: e.Names(),
	})
	if _, refused := refusalOf(err); err != nil && !refused {
		return deleted, fmt.Errorf("erase items of %s: reduce the access item: %w", l.UserID, unavailable(err))
	}
	return deleted, nil
}
