package state

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
)

// A user's spend on an upstream the agent proxies (internal/apiproxy): one item per
// upstream, USER#<id> / SPEND#<upstream>, holding the current window's start (Unix
// seconds, in stateSince) and the tokens spent in it (count). A new window overwrites
// the old one, so the item never grows. It lives in the user's partition and names
// only attributes of HolderAttributes, so the sandbox's own session writes it; it
// outlives the sandbox, so a restart does not reset the user's spend.
const spendPrefix = "SPEND#"

func spendKey(userID, upstream string) map[string]types.AttributeValue {
	return map[string]types.AttributeValue{AttrPK: avS(userKey(userID)), AttrSK: avS(spendPrefix + upstream)}
}

// maxSpendRaces bounds the retries of an Add that loses to another writer's window
// change.
const maxSpendRaces = 5

// Spent returns the tokens userID spent on upstream in the window starting at window.
func (s *Store) Spent(ctx context.Context, userID, upstream string, window time.Time) (int64, error) {
	if err := checkID("user id", userID); err != nil {
		return 0, fmt.Errorf("read spend: %w", err)
	}
	out, err := s.api.GetItem(ctx, &dynamodb.GetItemInput{
		TableName: aws.String(s.table), Key: spendKey(userID, upstream), ConsistentRead: aws.Bool(true),
	})
	if err != nil {
		return 0, fmt.Errorf("read spend of %s on %s: %w", userID, upstream, unavailable(err))
	}
	if out.Item == nil || getN(out.Item, aSince) != window.Unix() {
		return 0, nil
	}
	return getN(out.Item, aCount), nil
}

// AddSpend records n more tokens of userID on upstream in the window starting at
// window: added to the window's count, or starting it when the item holds an older
// window (or none). Spend of a window older than the item's is dropped: the limit is
// on the current window.
func (s *Store) AddSpend(ctx context.Context, userID, upstream string, window time.Time, n int64) error {
	if err := checkID("user id", userID); err != nil {
		return fmt.Errorf("record spend: %w", err)
	}
	w := window.Unix()
	for range maxSpendRaces {
		// The window's own item: add.
		e := newExpr()
		_, err := s.api.UpdateItem(ctx, &dynamodb.UpdateItemInput{
			TableName: aws.String(s.table), Key: spendKey(userID, upstream),
			UpdateExpression:          aws.String("ADD " + e.n(aCount) + " " + e.v("n", avN(n))),
			ConditionExpression:       aws.String(e.n(aSince) + " = " + e.v("w", avN(w))),
			ExpressionAttributeNames:  e.Names(),
			ExpressionAttributeValues: e.Values(),
		})
		if err == nil {
			return nil
		}
		var ccf *types.ConditionalCheckFailedException
		if !errors.As(err, &ccf) {
			return fmt.Errorf("record spend of %s on %s: %w", userID, upstream, unavailable(err))
		}
		// No item, or another window's: start this one, unless a newer one is there.
		e = newExpr()
		_, err = s.api.UpdateItem(ctx, &dynamodb.UpdateItemInput{
			TableName: aws.String(s.table), Key: spendKey(userID, upstream),
			UpdateExpression:                    aws.String("SET " + e.n(aSince) + " = " + e.v("w", avN(w)) + ", " + e.n(aCount) + " = " + e.v("n", avN(n))),
			ConditionExpression:                 aws.String("attribute_not_exists(" + e.n(aSince) + ") OR " + e.n(aSince) + " < " + e.v("w", avN(w))),
			ExpressionAttributeNames:            e.Names(),
			ExpressionAttributeValues:           e.Values(),
			ReturnValuesOnConditionCheckFailure: types.ReturnValuesOnConditionCheckFailureAllOld,
		})
		if err == nil {
			return nil
		}
		if !errors.As(err, &ccf) {
			return fmt.Errorf("record spend of %s on %s: %w", userID, upstream, unavailable(err))
		}
		if getN(ccf.Item, aSince) > w {
			return nil // a newer window began: this spend no longer counts
		}
		// Another writer started this window between the two writes: add to it.
	}
	return fmt.Errorf("record spend of %s on %s: %w", userID, upstream, ErrContention)
}

// SpendLedger is a user's spend as internal/apiproxy's Ledger: the Store's, bound to
// the user a sandbox serves.
type SpendLedger struct {
	Store  *Store
	UserID string
}

// Spent implements apiproxy.Ledger.
func (l SpendLedger) Spent(ctx context.Context, upstream string, window time.Time) (int64, error) {
	return l.Store.Spent(ctx, l.UserID, upstream, window)
}

// Add implements apiproxy.Ledger.
func (l SpendLedger) Add(ctx context.Context, upstream string, window time.Time, n int64) error {
	return l.Store.AddSpend(ctx, l.UserID, upstream, window, n)
}
