package state

import (
	"context"
	"errors"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/smithy-go"
)

// How DynamoDB's reply to a conditional write is read. Every conditional write of a
// retry loop goes through settle, so one reply means the same thing whichever write
// it answers: committed, already ours, a conflict, a failed condition, or DynamoDB
// unavailable.

// codeConditionFailed is the cancellation reason of a transaction item whose
// condition failed.
const codeConditionFailed = "ConditionalCheckFailed"

// soleItem is the position of a single-item write's item in its refusal: a
// single-item write is read as a transaction of one item.
const soleItem = 0

// refusal is a reply saying that a write's condition failed: for a transaction, the
// condition of at least one of its items.
type refusal struct {
	// err is the reply as the SDK returned it: the retry loop's last error when the
	// write is tried again.
	err     error
	reasons []types.CancellationReason
}

// refusalOf returns the refusal err is, if it is one: a single-item write's
// ConditionalCheckFailedException, or a transaction cancelled because an item's
// condition failed.
func refusalOf(err error) (refusal, bool) {
	var ccf *types.ConditionalCheckFailedException
	if errors.As(err, &ccf) {
		return refusal{err: err, reasons: []types.CancellationReason{
			soleItem: {Code: aws.String(codeConditionFailed), Item: ccf.Item},
		}}, true
	}
	var tc *types.TransactionCanceledException
	if errors.As(err, &tc) {
		r := refusal{err: err, reasons: tc.CancellationReasons}
		for pos := range r.reasons {
			if r.failed(pos) {
				return r, true
			}
		}
	}
	return refusal{}, false
}

// failed reports whether the item at pos failed its condition.
func (r refusal) failed(pos int) bool {
	return pos < len(r.reasons) && aws.ToString(r.reasons[pos].Code) == codeConditionFailed
}

// old returns the item at pos as it was when its condition failed (ALL_OLD); nil when
// it did not exist, or when its condition did not fail.
func (r refusal) old(pos int) map[string]types.AttributeValue {
	if !r.failed(pos) {
		return nil
	}
	return r.reasons[pos].Item
}

// sandbox returns old(pos) as a sandbox record (nil when absent).
func (r refusal) sandbox(pos int) *Sandbox { return decodeSandbox(r.old(pos)) }

// settle reads the reply to one attempt of a conditional write and returns what the
// retry loop does next:
//
//   - no error: the write committed; done.
//   - a conflict with another writer (isConflict): back off and try again.
//   - a failed condition that isOurs recognises as the write's own effect: the
//     change is already made — the SDK sent again an attempt that had committed and
//     whose reply was lost, or an earlier call made it; done, as if committed. A nil
//     isOurs recognises nothing.
//   - any other failed condition: explain decides, from the items' old values.
//   - anything else: done, with the error as unavailable translates it.
func settle(err error, isOurs func(refusal) bool, explain func(refusal) (outcome, error)) (outcome, error) {
	if err == nil {
		return done, nil
	}
	if isConflict(err) {
		return retryLater, err
	}
	r, ok := refusalOf(err)
	switch {
	case !ok:
		return done, unavailable(err)
	case isOurs != nil && isOurs(r):
		return done, nil
	}
	return explain(r)
}

// isConflict reports a write worth retrying after a back-off: it lost to a
// concurrent transaction on the same item (plain writes get
// TransactionConflictException, transactions a TransactionConflict cancellation
// reason), or a transaction was cancelled because an item was throttled, which the
// SDK's retryer does not retry since the cancellation itself is not a throttling
// error. DynamoDB Local serializes transactions and never sends either.
func isConflict(err error) bool {
	var tce *types.TransactionConflictException
	if errors.As(err, &tce) {
		return true
	}
	var tc *types.TransactionCanceledException
	if errors.As(err, &tc) {
		for _, r := range tc.CancellationReasons {
			switch aws.ToString(r.Code) {
			case "TransactionConflict", "ThrottlingError", "ProvisionedThroughputExceeded":
				return true
			}
		}
	}
	return false
}

// unavailable translates what the SDK returns when DynamoDB cannot serve a request.
// Service answers that say something about the data (condition failures,
// cancellations, validation) come back unchanged for the caller to interpret.
func unavailable(err error) error {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	var apiErr smithy.APIError
	if errors.As(err, &apiErr) {
		switch apiErr.ErrorCode() {
		case "InternalServerError", "ServiceUnavailable", "ThrottlingException",
			"ProvisionedThroughputExceededException", "RequestLimitExceeded", "LimitExceededException":
			return &UnavailableError{Err: err}
		}
		return err
	}
	// No answer from the service: connection refused, reset, timeouts, an exhausted
	// retry quota.
	return &UnavailableError{Err: err}
}
