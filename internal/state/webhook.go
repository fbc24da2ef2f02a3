package state

import (
	"context"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
)

// The ids of webhook messages already acted on (internal/webhook): one item each,
// WEBHOOK#<message id> / MESSAGE, kept for a TTL longer than the sender's retries, so a
// message delivered again — a retry after a lost answer, or a replay — acts once.
const (
	webhookPrefix = "WEBHOOK#"
	skWebhook     = "MESSAGE"
)

// RememberMessage records webhook message id for keep and reports whether it is new:
// false when it was recorded before and has not expired (one conditional PutItem).
func (s *Store) RememberMessage(ctx context.Context, id string, keep time.Duration) (bool, error) {
	if err := checkID("message id", id); err != nil {
		return false, fmt.Errorf("remember message: %w", err)
	}
	now := s.now()
	e := newExpr()
	in := &dynamodb.PutItemInput{
		TableName: aws.String(s.table),
		Item: map[string]types.AttributeValue{
			AttrPK: avS(webhookPrefix + id), AttrSK: avS(skWebhook),
			aSince: avMs(now), AttrTTL: avN(ttl(now.Add(keep))),
		},
		// An item past its TTL that DynamoDB has not deleted yet is forgotten.
		ConditionExpression: aws.String(fmt.Sprintf("attribute_not_exists(%s) OR %s < %s",
			e.n(AttrPK), e.n(AttrTTL), e.v("now", avN(now.Unix())))),
	}
	in.ExpressionAttributeNames, in.ExpressionAttributeValues = e.Names(), e.Values()
	_, err := s.api.PutItem(ctx, in)
	if _, refused := refusalOf(err); refused {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("remember message %s: %w", id, unavailable(err))
	}
	return true, nil
}

// ForgetMessage removes message id's record, so a delivery again is acted on: for a
// message whose action could not be started.
func (s *Store) ForgetMessage(ctx context.Context, id string) error {
	if err := checkID("message id", id); err != nil {
		return fmt.Errorf("forget message: %w", err)
	}
	_, err := s.api.DeleteItem(ctx, &dynamodb.DeleteItemInput{TableName: aws.String(s.table), Key: key(webhookPrefix+id, skWebhook)})
	if err != nil {
		return fmt.Errorf("forget message %s: %w", id, unavailable(err))
	}
	return nil
}
