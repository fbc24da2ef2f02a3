package state

import (
	"context"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/sandgate/sandgate/internal/logging"
)

// Reap stops a sandbox whose lease has expired, as read in sb, and gives back its
// capacity slot in the same transaction (the record's slot is cleared, so the dead
// task's stop event, when it comes, finds nothing to give back). The write is conditional on sb's token and
// on the deadline still being past, so a holder that renewed in the meantime keeps
// its lease (*HeldError) and a takeover wins (*LeaseLostError). A record already
// STOPPED under the same token needs nothing: nil. A PURGING lock is never reaped
// (ErrPurging), expired or not: its purge may have deleted part of the prefix, and
// a STOPPED record would let a sandbox restore the rest; cleanup resumes it instead.
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
	if sb.State == Purging {
		return fmt.Errorf("reap sandbox %s: %w", sb.UserID, ErrPurging)
	}
	if !sb.Expired(s.now()) {
		return fmt.Errorf("reap sandbox %s: %w", sb.UserID, &HeldError{Sandbox: sb})
	}
	err := s.retry(ctx, "reap", func() (outcome, error) {
		now := s.now()
		e := newExpr()
		w := write{key: sandboxKey(sb.UserID), e: e, update: stopUpdate(e, now, ReasonExpired, "") + ", " + e.n(aSlot)}
		w.cond = fmt.Sprintf("%s = %s AND %s AND %s <= %s",
			e.n(aToken), e.v("tok", avS(sb.LeaseToken)), inStates(e, counted...), e.n(aDeadline), e.v("now", avMs(now)))
		_, err := s.api.TransactWriteItems(ctx, s.slotTx(w, -1))
		if err == nil {
			s.Logger.Info("sandbox reaped", logging.UserID, sb.UserID, logGeneration, sb.Generation,
				logging.State, string(sb.State), logDeadline, sb.LeaseDeadline)
		}
		return settle(err, func(r refusal) bool {
			// Stopped under the token read: by its holder, or by another reap.
			cur := r.sandbox(slotRecord)
			return ours(cur, sb.Lease()) && cur.State == Stopped
		}, func(r refusal) (outcome, error) {
			if !r.failed(slotRecord) {
				return done, unavailable(r.err)
			}
			cur := r.sandbox(slotRecord)
			switch {
			case !ours(cur, sb.Lease()):
				return done, &LeaseLostError{Current: cur}
			case !cur.Expired(now):
				return done, &HeldError{Sandbox: cur}
			}
			return done, fmt.Errorf("%w: sandbox is %s", ErrState, cur.State)
		})
	})
	if err != nil {
		return fmt.Errorf("reap sandbox %s: %w", sb.UserID, err)
	}
	return nil
}

// ListSandboxes calls fn with every sandbox record, one Scan call per page. The scan
// is eventually consistent: cleanup acts on what it finds only through conditional
// writes (Reap, AcquirePurgeIfInactive), which see the current record. fn's error
// stops the listing and is returned.
func (s *Store) ListSandboxes(ctx context.Context, fn func(*Sandbox) error) error {
	return s.listSandboxes(ctx, false, fn)
}

// listSandboxes is ListSandboxes, with strongly consistent pages when consistent.
func (s *Store) listSandboxes(ctx context.Context, consistent bool, fn func(*Sandbox) error) error {
	err := s.scan(ctx, consistent, func(e *expr) string {
		return fmt.Sprintf("%s = %s", e.n(AttrSK), e.v("sk", avS(skSandbox)))
	}, func(item map[string]types.AttributeValue) error { return fn(decodeSandbox(item)) })
	if err != nil {
		return fmt.Errorf("list sandboxes: %w", err)
	}
	return nil
}

// scan calls fn with every item filter selects, one Scan call per page (ScanPageSize
// items evaluated each when set), strongly consistent when consistent. fn's error
// stops the scan and is returned as it is.
func (s *Store) scan(ctx context.Context, consistent bool, filter func(*expr) string, fn func(map[string]types.AttributeValue) error) error {
	e := newExpr()
	in := &dynamodb.ScanInput{TableName: aws.String(s.table), FilterExpression: aws.String(filter(e))}
	if consistent {
		in.ConsistentRead = aws.Bool(true)
	}
	in.ExpressionAttributeNames, in.ExpressionAttributeValues = e.Names(), e.Values()
	return s.scanPages(ctx, in, fn)
}

// scanPages runs in page by page (ScanPageSize items evaluated each when set) and
// calls fn with every item; fn's error stops the scan and is returned as it is.
func (s *Store) scanPages(ctx context.Context, in *dynamodb.ScanInput, fn func(map[string]types.AttributeValue) error) error {
	if s.ScanPageSize > 0 {
		in.Limit = aws.Int32(s.ScanPageSize)
	}
	for {
		out, err := s.api.Scan(ctx, in)
		if err != nil {
			return unavailable(err)
		}
		for _, item := range out.Items {
			if err := fn(item); err != nil {
				return err
			}
		}
		if len(out.LastEvaluatedKey) == 0 {
			return nil
		}
		in.ExclusiveStartKey = out.LastEvaluatedKey
	}
}

// AcquirePurge takes cleanup's lock on a user whatever their activity: PURGING with
// a fresh token, generation+1 and deadline now+PurgeTTL, from no record, STOPPED or
// an expired PURGING (to resume it: a mark of BeginPurge is kept). PURGING holds no
// capacity slot. A record that still holds one (a lease, live or dead — Reap a dead
// one first — or a STOPPED record whose task was not yet seen to stop) gives a
// *HeldError; an unexpired PURGING gives ErrPurging. The lock is not renewed
// and never lapses into a start: end it with ReleasePurge or FinishPurge.
//
// Scheduled cleanup uses AcquirePurgeIfInactive; this one is for an erasure the
// user asked for, and for tests that need a lock.
func (s *Store) AcquirePurge(ctx context.Context, userID string) (Lease, error) {
	return s.acquirePurge(ctx, userID, time.Time{})
}

// AcquirePurgeIfInactive is AcquirePurge for a user judged inactive from an older,
// eventually consistent read (cleanup's scan): a STOPPED record is locked only if
// its last activity (or, without one, the time it entered its state) is before
// cutoff, and the write's condition says so too, so a user who started a sandbox
// since the scan is refused with an *ActiveError and nothing is written. An expired
// PURGING is retaken whatever its activity: its purge may have begun deleting, and
// must be resumed. A user without a record gives ErrNotFound: nothing to lock.
func (s *Store) AcquirePurgeIfInactive(ctx context.Context, userID string, cutoff time.Time) (Lease, error) {
	if cutoff.IsZero() {
		return Lease{}, fmt.Errorf("acquire purge: %w: zero cutoff", ErrInvalid)
	}
	// The record keeps milliseconds; the client's decision and the condition must
	// agree to the millisecond, or a refused write would be retried as a race.
	return s.acquirePurge(ctx, userID, time.UnixMilli(cutoff.UnixMilli()))
}

// acquirePurge implements both: a zero cutoff locks whatever the activity.
func (s *Store) acquirePurge(ctx context.Context, userID string, cutoff time.Time) (Lease, error) {
	if err := checkID("user id", userID); err != nil {
		return Lease{}, fmt.Errorf("acquire purge: %w", err)
	}
	cur, err := s.get(ctx, userID)
	if err != nil {
		return Lease{}, fmt.Errorf("acquire purge %s: %w", userID, err)
	}
	checkActivity := !cutoff.IsZero()
	var lease Lease
	err = s.retry(ctx, "acquire purge", func() (outcome, error) {
		now := s.now()
		switch {
		case cur == nil && checkActivity:
			return done, ErrNotFound
		case cur == nil || cur.StalePurge(now):
		case cur.State == Stopped && cur.HoldsSlot():
			// Its task has not been seen to stop yet; purge it once it has.
			return done, &HeldError{Sandbox: cur}
		case cur.State == Stopped:
			if checkActivity && !inactiveBefore(cur, cutoff) {
				return done, &ActiveError{Sandbox: cur, Cutoff: cutoff}
			}
		case cur.State == Purging:
			return done, ErrPurging
		default:
			return done, &HeldError{Sandbox: cur}
		}
		l := newLease(userID, cur, now, s.PurgeTTL)
		w := takeWrite(userID, cur, l, Purging, now, false)
		if checkActivity {
			// The version condition already pins the record read above; the
			// activity is in the condition too so the rule lives in the write that
			// acts on it, not only in this process's reading of it.
			e := w.e
			w.cond = fmt.Sprintf("%s AND (%s OR %s < %s OR (attribute_not_exists(%s) AND %s < %s))", w.cond,
				inStates(e, Purging), e.n(aActivity), e.v("cutoff", avMs(cutoff)),
				e.n(aActivity), e.n(aSince), e.v("cutoff", avMs(cutoff)))
		}
		out, err := s.writeLease(ctx, w, l, &cur)
		if out == done && err == nil {
			lease = l
		}
		return out, err
	})
	if err != nil {
		return Lease{}, fmt.Errorf("acquire purge %s: %w", userID, err)
	}
	return lease, nil
}

// inactiveBefore reports whether sb's last activity, or without one the time it
// entered its state, is before cutoff; a record with neither is never inactive.
func inactiveBefore(sb *Sandbox, cutoff time.Time) bool {
	last := sb.LastActivity
	if last.IsZero() {
		last = sb.StateSince
	}
	return !last.IsZero() && last.Before(cutoff)
}

// BeginPurge marks the purge lock l as deleting, right before the first delete:
// from then on the lock cannot be released (ErrPurgeStarted), only finished, so a
// purge that fails partway is resumed and completed rather than handing a
// half-deleted prefix back to a sandbox. Calling it again keeps the first mark.
func (s *Store) BeginPurge(ctx context.Context, l Lease) error {
	now := s.now()
	return s.fenced(ctx, "begin purge", l, []State{Purging}, func(e *expr) []string {
		return []string{fmt.Sprintf("%s = if_not_exists(%s, %s)", e.n(aPurgeStarted), e.n(aPurgeStarted), e.v("now", avMs(now)))}
	})
}

// ReleasePurge gives the purge lock l back before anything was deleted, because the
// user came back: PURGING becomes STOPPED (generation kept) with lastActivity now,
// so the starts it refused are admitted at once and later passes count the return.
// It is conditional on the lock's token and on BeginPurge not having run
// (ErrPurgeStarted: the purge must be finished instead). Repeating a release that
// succeeded returns nil.
func (s *Store) ReleasePurge(ctx context.Context, l Lease) error {
	if err := checkLease(l); err != nil {
		return fmt.Errorf("release purge: %w", err)
	}
	err := s.retry(ctx, "release purge", func() (outcome, error) {
		now := s.now()
		e := newExpr()
		w := write{
			key: sandboxKey(l.UserID), e: e,
			update: fmt.Sprintf("SET %s = %s, %s = %s, %s = %s, %s = %s, %s = %s + %s",
				e.n(aState), e.v("stopped", avS(string(Stopped))),
				e.n(aSince), e.v("now", avMs(now)),
				e.n(aActivity), e.v("now", avMs(now)),
				e.n(aReason), e.v("reason", avS(ReasonPurgeReleased)),
				e.n(aVersion), e.n(aVersion), e.v("one", avN(1))),
			cond: fmt.Sprintf("%s = %s AND %s AND attribute_not_exists(%s)",
				e.n(aToken), e.v("tok", avS(l.Token)), inStates(e, Purging), e.n(aPurgeStarted)),
		}
		_, err := s.api.UpdateItem(ctx, w.item(s.table))
		return settle(err, func(r refusal) bool {
			// Released already, by this call's first attempt or an earlier one.
			cur := r.sandbox(soleItem)
			return ours(cur, l) && cur.State == Stopped
		}, func(r refusal) (outcome, error) {
			cur := r.sandbox(soleItem)
			if ours(cur, l) && cur.State == Purging && !cur.PurgeStarted.IsZero() {
				return done, ErrPurgeStarted
			}
			return done, lostOrState(l, cur)
		})
	})
	if err != nil {
		return fmt.Errorf("release purge %s: %w", l.UserID, err)
	}
	return nil
}

// FinishPurge deletes the user's sandbox record, conditional on the purge lease:
// call it once the prefix is fully deleted, which ends the lock (the user's next
// start begins afresh). A record that is already gone needs nothing: nil.
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
		return settle(err, func(r refusal) bool {
			// The record is gone: this purge finished already.
			return len(r.old(soleItem)) == 0
		}, func(r refusal) (outcome, error) {
			return done, lostOrState(l, r.sandbox(soleItem))
		})
	})
	if err != nil {
		return fmt.Errorf("finish purge %s: %w", l.UserID, err)
	}
	return nil
}
