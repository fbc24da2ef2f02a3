package state

import (
	"context"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/sandgate/sandgate/internal/logging"
)

// Reap stops a sandbox whose lease has expired, as read in sb, and gives back its
// capacity slot in the same transaction. The write is conditional on sb's token and
// on the deadline still being past, so a holder that renewed in the meantime keeps
// its lease (*HeldError) and a takeover wins (*LeaseLostError). An expired PURGING
// lock is cleared the same way, without capacity. A record already STOPPED under
// the same token needs nothing: nil.
func (s *Store) Reap(ctx context.Context, sb *Sandbox) error {
	if sb == nil {
		return fmt.Errorf("reap sandbox: %w: nil record", ErrInvalid)
	}
	if err := checkLease(sb.Lease()); err != nil {
		return fmt.Errorf("reap sandbox: %w", err)
	}
	if sb.State == Stopped {
		return nil
	}
	if !sb.Expired(s.now()) {
		return fmt.Errorf("reap sandbox %s: %w", sb.UserID, &HeldError{Sandbox: sb})
	}
	err := s.retry(ctx, "reap", func() (outcome, error) {
		now := s.now()
		e := newExpr()
		w := write{
			key: sandboxKey(sb.UserID), e: e,
			update: fmt.Sprintf("SET %s = %s, %s = %s, %s = %s, %s = %s + %s REMOVE %s, %s",
				e.n(aState), e.v("stopped", avS(string(Stopped))),
				e.n(aSince), e.v("now", avMs(now)),
				e.n(aReason), e.v("reason", avS(ReasonExpired)),
				e.n(aVersion), e.n(aVersion), e.v("one", avN(1)),
				e.n(aEndpoint), e.n(aGateway)),
		}
		states := counted
		if sb.State == Purging {
			states = []State{Purging}
		}
		w.cond = fmt.Sprintf("%s = %s AND %s AND %s <= %s",
			e.n(aToken), e.v("tok", avS(sb.LeaseToken)), inStates(e, states...), e.n(aDeadline), e.v("now", avMs(now)))
		var err error
		var failed bool
		var old map[string]types.AttributeValue
		if sb.State == Purging {
			_, err = s.api.UpdateItem(ctx, w.item(s.table))
			failed, old = conditionFailed(err)
		} else {
			_, err = s.api.TransactWriteItems(ctx, &dynamodb.TransactWriteItemsInput{TransactItems: []types.TransactWriteItem{
				w.tx(s.table), capacityWrite(-1, 0).tx(s.table),
			}})
			failed, old = cancelled(err, 0)
		}
		switch {
		case err == nil:
			s.Logger.Info("sandbox reaped", logging.UserID, sb.UserID, logGeneration, sb.Generation,
				logging.State, string(sb.State), logDeadline, sb.LeaseDeadline)
			return done, nil
		case isConflict(err):
			return retryLater, err
		case failed:
			cur := decodeSandbox(old)
			switch {
			case cur == nil || cur.LeaseToken != sb.LeaseToken:
				return done, &LeaseLostError{Current: cur}
			case cur.State == Stopped:
				return done, nil
			case !cur.Expired(now):
				return done, &HeldError{Sandbox: cur}
			}
			return done, fmt.Errorf("%w: sandbox is %s", ErrState, cur.State)
		}
		return done, unavailable(err)
	})
	if err != nil {
		return fmt.Errorf("reap sandbox %s: %w", sb.UserID, err)
	}
	return nil
}

// ListSandboxes calls fn with every sandbox record, one Scan call per page. The scan
// is eventually consistent: cleanup acts on what it finds only through conditional
// writes (Reap, AcquirePurge), which see the current record. fn's error stops the
// listing and is returned.
func (s *Store) ListSandboxes(ctx context.Context, fn func(*Sandbox) error) error {
	e := newExpr()
	in := &dynamodb.ScanInput{
		TableName:        aws.String(s.table),
		FilterExpression: aws.String(fmt.Sprintf("%s = %s", e.n(AttrSK), e.v("sk", avS(skSandbox)))),
	}
	in.ExpressionAttributeNames, in.ExpressionAttributeValues = e.Names(), e.Values()
	if s.ScanPageSize > 0 {
		in.Limit = aws.Int32(s.ScanPageSize)
	}
	for {
		out, err := s.api.Scan(ctx, in)
		if err != nil {
			return fmt.Errorf("list sandboxes: %w", unavailable(err))
		}
		for _, item := range out.Items {
			if err := fn(decodeSandbox(item)); err != nil {
				return err
			}
		}
		if len(out.LastEvaluatedKey) == 0 {
			return nil
		}
		in.ExclusiveStartKey = out.LastEvaluatedKey
	}
}

// AcquirePurge takes cleanup's lock on a user: PURGING with a fresh token,
// generation+1 and deadline now+PurgeTTL, from no record, STOPPED or an expired
// PURGING. PURGING holds no capacity slot. A record that still counts (live or
// dead) gives a *HeldError (Reap a dead one first); an unexpired PURGING gives
// ErrPurging. The lock is not renewed: finish within PurgeTTL or let it expire.
func (s *Store) AcquirePurge(ctx context.Context, userID string) (Lease, error) {
	if err := checkID("user id", userID); err != nil {
		return Lease{}, fmt.Errorf("acquire purge: %w", err)
	}
	cur, err := s.get(ctx, userID)
	if err != nil {
		return Lease{}, fmt.Errorf("acquire purge %s: %w", userID, err)
	}
	var lease Lease
	err = s.retry(ctx, "acquire purge", func() (outcome, error) {
		now := s.now()
		switch {
		case cur == nil || cur.State == Stopped || cur.Expired(now) && cur.State == Purging:
		case cur.State == Purging:
			return done, ErrPurging
		default:
			return done, &HeldError{Sandbox: cur}
		}
		l := Lease{UserID: userID, Token: newToken(), Generation: 1, Deadline: now.Add(s.PurgeTTL)}
		if cur != nil {
			l.Generation = cur.Generation + 1
		}
		_, err := s.api.UpdateItem(ctx, takeWrite(userID, cur, l, Purging, now, false).item(s.table))
		if err == nil {
			lease = l
			return done, nil
		}
		if isConflict(err) {
			return retryLater, err
		}
		if failed, old := conditionFailed(err); failed {
			cur = decodeSandbox(old)
			return retryNow, err
		}
		return done, unavailable(err)
	})
	if err != nil {
		return Lease{}, fmt.Errorf("acquire purge %s: %w", userID, err)
	}
	return lease, nil
}

// FinishPurge deletes the user's sandbox record, conditional on the purge lease. A
// record that is already gone needs nothing: nil.
func (s *Store) FinishPurge(ctx context.Context, l Lease) error {
	if err := checkLease(l); err != nil {
		return fmt.Errorf("finish purge: %w", err)
	}
	err := s.retry(ctx, "finish purge", func() (outcome, error) {
		e := newExpr()
		cond := fmt.Sprintf("%s = %s AND %s", e.n(aToken), e.v("tok", avS(l.Token)), inStates(e, Purging))
		_, err := s.api.DeleteItem(ctx, &dynamodb.DeleteItemInput{
			TableName: aws.String(s.table), Key: sandboxKey(l.UserID),
			ConditionExpression:      aws.String(cond),
			ExpressionAttributeNames: e.Names(), ExpressionAttributeValues: e.Values(),
			ReturnValuesOnConditionCheckFailure: types.ReturnValuesOnConditionCheckFailureAllOld,
		})
		if err == nil {
			return done, nil
		}
		if isConflict(err) {
			return retryLater, err
		}
		if failed, old := conditionFailed(err); failed {
			if len(old) == 0 {
				return done, nil
			}
			return done, lostOrState(l, decodeSandbox(old))
		}
		return done, unavailable(err)
	})
	if err != nil {
		return fmt.Errorf("finish purge %s: %w", l.UserID, err)
	}
	return nil
}
