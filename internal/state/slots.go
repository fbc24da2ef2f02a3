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

// Who holds a capacity slot, and who gives it back.
//
// The capacity counter counts the records that hold a slot (Sandbox.HoldsSlot): every
// lease (STARTING, RUNNING, STOPPING), and every STOPPED record whose task has not yet
// been seen to stop (Sandbox.Slot, the generation whose task holds it). Every write
// that changes whether a record holds a slot moves the counter in the same
// transaction, conditional on the record: Acquire's admission takes one; Release,
// Reap, TaskStopped and ReturnSlot each clear the record's slot and give it back, so
// whichever of them comes first gives it back and the others find nothing to give. A
// takeover, and a start over a STOPPED record that still holds its slot, move the
// slot to the new generation on the record alone: the counter does not change, and
// the old task's stop event no longer names the record's slot. Stop and Abort (the
// agent's own) write the record alone and leave the slot to the task's stop.

// TaskRef names the task a stop event is about: the user whose sandbox it runs, the
// lease generation and token it was started with, and its ARN (the token and the ARN
// empty when unknown).
type TaskRef struct {
	UserID     string
	Generation int64
	Token      string
	TaskARN    string
}

// names reports whether sb can be the record of the task: the same generation, the
// same lease token and the same task, each when both sides know it. A task launched
// with another token (a stale or duplicate launch) is not the record's, whatever
// generation it claims.
func (r TaskRef) names(sb *Sandbox) bool {
	return sb != nil && sb.Generation == r.Generation &&
		(sb.LeaseToken == "" || r.Token == "" || sb.LeaseToken == r.Token) &&
		(sb.TaskARN == "" || r.TaskARN == "" || sb.TaskARN == r.TaskARN)
}

// condition appends to w's condition that the record is still the task's: its
// generation, and its token and task where known (the expression ends with them).
func (r TaskRef) condition(w *write) {
	e := w.e
	w.cond += fmt.Sprintf(" AND %s = %s", e.n(aGen), e.v("gen", avN(r.Generation)))
	if r.Token != "" {
		w.cond += fmt.Sprintf(" AND %s = %s", e.n(aToken), e.v("tok", avS(r.Token)))
	}
	if r.TaskARN != "" {
		w.cond += fmt.Sprintf(" AND (attribute_not_exists(%s) OR %s = %s)", e.n(aTask), e.n(aTask), e.v("task", avS(r.TaskARN)))
	}
}

// TaskEnd is what TaskExited or TaskStopped did.
type TaskEnd struct {
	// Ended is the state the lease was in when this call ended it (STARTING, RUNNING
	// or STOPPING); empty when it had ended already (its holder stopped, it was
	// reaped or released) or the record belongs to another generation.
	Ended State
	// SlotReturned reports that this call gave the generation's capacity slot back.
	SlotReturned bool
}

// endMode is what a task's end may change on its record.
type endMode int

const (
	// exited: the task's container exited (or it failed to start) and the task is on
	// its way down: a lease of its generation ends; the slot stays until it stopped.
	exited endMode = iota
	// stopped: the task has stopped: a lease of its generation ends, and the slot its
	// generation holds is given back.
	stopped
	// gone: cleanup found no running task for a STOPPED record that holds a slot: the
	// slot is given back; a lease is left alone (its task may not be listed yet).
	gone
)

// TaskExited records that ref's task is on its way down (ECS stopped it, or its
// container exited, before the task stopped): a lease of ref's generation still held
// (STARTING, RUNNING or STOPPING) ends, STOPPED for reason, so the user's next start
// need not wait for the lease to expire. The slot stays with the record until
// TaskStopped. A lease of another generation, or one that has ended, is left alone.
//
// Calls: one GetItem, then at most one UpdateItem (more under races).
func (s *Store) TaskExited(ctx context.Context, ref TaskRef, reason string) (TaskEnd, error) {
	return s.taskEnd(ctx, "task exited", ref, reason, exited)
}

// TaskStopped records that ref's task has stopped: a lease of ref's generation still
// held ends (STOPPED for reason) and the slot that generation holds goes back to the
// capacity counter, in one transaction; a STOPPED record whose slot is ref's
// generation's gives it back. Calling it again, or after Reap, Release or ReturnSlot
// gave the slot back, or after a newer generation took the slot over, changes
// nothing: each slot is given back once.
//
// Calls: one GetItem, then at most one TransactWriteItems (more under races).
func (s *Store) TaskStopped(ctx context.Context, ref TaskRef, reason string) (TaskEnd, error) {
	return s.taskEnd(ctx, "task stopped", ref, reason, stopped)
}

// ReturnSlot gives back the slot a STOPPED record holds for generation, for a task
// that ECS no longer runs but whose stop event never came: cleanup's repair of a lost
// event. It reports whether this call gave it back; a record that holds no slot for
// that generation (the event came after all, a newer start took the slot over), or
// holds a lease, is left alone.
func (s *Store) ReturnSlot(ctx context.Context, userID string, generation int64) (bool, error) {
	end, err := s.taskEnd(ctx, "return slot", TaskRef{UserID: userID, Generation: generation}, "", gone)
	return end.SlotReturned, err
}

func (s *Store) taskEnd(ctx context.Context, op string, ref TaskRef, reason string, mode endMode) (TaskEnd, error) {
	if err := checkID("user id", ref.UserID); err != nil {
		return TaskEnd{}, fmt.Errorf("%s: %w", op, err)
	}
	if ref.Generation < 1 {
		return TaskEnd{}, fmt.Errorf("%s: %w: generation %d", op, ErrInvalid, ref.Generation)
	}
	if reason == "" {
		reason = "task stopped"
	}
	cur, err := s.get(ctx, ref.UserID)
	if err != nil {
		return TaskEnd{}, fmt.Errorf("%s %s: %w", op, ref.UserID, err)
	}
	var end TaskEnd
	err = s.retry(ctx, op, func() (outcome, error) {
		end = TaskEnd{}
		now := s.now()
		switch {
		case !ref.names(cur):
			return done, nil
		case cur.State.Counted() && mode != gone:
			prev := cur.State
			out, err := s.endLease(ctx, ref, reason, mode, now, &cur)
			if out == done && err == nil {
				end = TaskEnd{Ended: prev, SlotReturned: mode == stopped}
				s.Logger.Info("sandbox ended by its task's end", logging.UserID, ref.UserID, logGeneration, ref.Generation,
					logging.State, string(prev), logging.Reason, reason, logSlot, end.SlotReturned)
			}
			return out, err
		case cur.State == Stopped && cur.Slot == ref.Generation && mode != exited:
			out, err := s.returnSlot(ctx, ref, &cur)
			if out == done && err == nil {
				end.SlotReturned = true
				s.Logger.Info("capacity slot given back", logging.UserID, ref.UserID, logGeneration, ref.Generation, logOp, op)
			}
			return out, err
		}
		return done, nil
	})
	if err != nil {
		return TaskEnd{}, fmt.Errorf("%s %s: %w", op, ref.UserID, err)
	}
	return end, nil
}

// endLease ends the lease of ref's generation, read as *cur: STOPPED for reason,
// conditional on the generation, a counted state and (when both are known) the task.
// In mode stopped it gives the slot back in the same transaction; in mode exited the
// record keeps it (a record written before slots were recorded gets its generation's).
// A record that changed since the read is put in *cur (retryNow).
func (s *Store) endLease(ctx context.Context, ref TaskRef, reason string, mode endMode, now time.Time, cur **Sandbox) (outcome, error) {
	e := newExpr()
	w := write{key: sandboxKey(ref.UserID), e: e, cond: inStates(e, counted...)}
	ref.condition(&w)
	var err error
	if mode == stopped {
		w.update = stopUpdate(e, now, reason, "") + ", " + e.n(aSlot)
		_, err = s.api.TransactWriteItems(ctx, s.slotTx(w, -1))
	} else {
		w.update = stopUpdate(e, now, reason, fmt.Sprintf("%s = if_not_exists(%s, %s)", e.n(aSlot), e.n(aSlot), e.v("gen", avN(ref.Generation))))
		_, err = s.api.UpdateItem(ctx, w.item(s.table))
	}
	pos := soleItem
	if mode == stopped {
		pos = slotRecord
	}
	return settle(err, func(r refusal) bool {
		// This call's own write, sent again by the SDK after its reply was lost: an
		// UpdateItem has no idempotency token (the transaction has one).
		sb := r.sandbox(pos)
		return mode == exited && sb != nil && sb.State == Stopped && sb.Generation == ref.Generation &&
			sb.Reason == reason && sb.StateSince.Equal(time.UnixMilli(now.UnixMilli()))
	}, func(r refusal) (outcome, error) {
		if !r.failed(pos) {
			return done, unavailable(r.err)
		}
		*cur = r.sandbox(pos)
		return retryNow, r.err
	})
}

// returnSlot clears the slot a STOPPED record holds for ref's generation and gives
// it back to the counter, in one transaction. A record that changed since the read
// is put in *cur (retryNow).
func (s *Store) returnSlot(ctx context.Context, ref TaskRef, cur **Sandbox) (outcome, error) {
	e := newExpr()
	w := write{
		key: sandboxKey(ref.UserID), e: e,
		update: fmt.Sprintf("SET %s = %s + %s REMOVE %s", e.n(aVersion), e.n(aVersion), e.v("one", avN(1)), e.n(aSlot)),
		cond: fmt.Sprintf("%s = %s AND %s = %s", e.n(aState), e.v("stopped", avS(string(Stopped))),
			e.n(aSlot), e.v("gen", avN(ref.Generation))),
	}
	ref.condition(&w)
	_, err := s.api.TransactWriteItems(ctx, s.slotTx(w, -1))
	return settle(err, nil, func(r refusal) (outcome, error) {
		if !r.failed(slotRecord) {
			return done, unavailable(r.err)
		}
		*cur = r.sandbox(slotRecord)
		return retryNow, r.err
	})
}

// CountSlots counts what holds a capacity slot, with one consistent Scan: the sandbox
// records that hold one (Sandbox.HoldsSlot) and the pool items (every pool item holds
// one). The capacity counter equals it whenever no write is under way.
func (s *Store) CountSlots(ctx context.Context) (int, error) {
	n := 0
	err := s.scan(ctx, true, func(e *expr) string {
		return fmt.Sprintf("%s = %s OR %s = %s", e.n(AttrSK), e.v("sk", avS(skSandbox)), e.n(AttrPK), e.v("pool", avS(pkPool)))
	}, func(item map[string]types.AttributeValue) error {
		if getS(item, AttrPK) == pkPool || decodeSandbox(item).HoldsSlot() {
			n++
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("count slots: %w", err)
	}
	return n, nil
}

// CapacityCheck is what ReconcileCapacity found and did.
type CapacityCheck struct {
	// Counter is the capacity counter as read; Held the records that hold a slot
	// (and the pool items): as the index shows them, or counted exactly when
	// Recounted.
	Counter, Held int
	// Recounted reports that the index disagreed with the counter, so the records
	// were counted exactly (a consistent Scan of the table).
	Recounted bool
	// Corrected reports that the counter was set to Held.
	Corrected bool
	// Moved reports that the counter changed while the records were counted (a start
	// or a stop meanwhile): nothing was written, and the next check decides again.
	Moved bool
}

// Drift is how far the counter was from the records: Held - Counter.
func (c CapacityCheck) Drift() int { return c.Held - c.Counter }

// ReconcileCapacity recomputes the capacity counter from the records and corrects it.
// It reads the counter (consistently) and counts the slots the Sandboxes index and the
// pool show (countSlotsIndexed). When they agree, nothing more is read or written:
// agreement proves nothing (the index trails the table), but only a write could do
// harm, and a real drift persists while the index catches up, so a later pass finds it.
//
// When they disagree — a drift, or the index trailing a recent start or stop — the
// counter is read again (moved: Moved, the next check decides), then the records
// that hold a slot are counted exactly with one consistent Scan of the table, the
// pool items with them (CountSlots), and when that count differs the counter is set
// to it, conditional on the counter not having been written since it was first
// read (its write count, aChanges, so a start and a stop in between cannot cancel
// out unseen). Every write that changes how many records hold a slot writes the
// counter in the same transaction, so a counter that did not change during the
// consistent scan means the records did not either, and the count is exact; a
// counter that did change leaves it alone (Moved), never undercounting a start that
// raced the check. The index's count decides only whether to count exactly, never
// what to write.
//
// Calls: one GetItem, one index Scan per page, one pool Query; on disagreement one
// more GetItem, one table Scan per page and at most one UpdateItem.
func (s *Store) ReconcileCapacity(ctx context.Context) (CapacityCheck, error) {
	counter, err := s.readCounter(ctx)
	if err != nil {
		return CapacityCheck{}, fmt.Errorf("reconcile capacity: %w", err)
	}
	c := CapacityCheck{Counter: int(getN(counter, aLive))}
	_, counted := counter[aChanges]
	changes := getN(counter, aChanges)
	hint, err := s.countSlotsIndexed(ctx)
	if err != nil {
		return c, fmt.Errorf("reconcile capacity: %w", err)
	}
	c.Held = hint
	if hint == c.Counter {
		return c, nil
	}
	again, err := s.readCounter(ctx)
	if err != nil {
		return c, fmt.Errorf("reconcile capacity: %w", err)
	}
	if !sameAttr(counter, again, aChanges) || !sameAttr(counter, again, aLive) {
		c.Moved = true
		s.Logger.Info("capacity counter moved during its check; not recounted", logCounter, c.Counter, logHeld, c.Held)
		return c, nil
	}
	c.Recounted = true
	held, err := s.CountSlots(ctx)
	if err != nil {
		return c, fmt.Errorf("reconcile capacity: %w", err)
	}
	c.Held = held
	if c.Held == c.Counter {
		return c, nil
	}
	e := newExpr()
	w := write{key: capacityKey(), e: e,
		update: fmt.Sprintf("SET %s = %s ADD %s %s", e.n(aLive), e.v("held", avN(int64(c.Held))), e.n(aChanges), e.v("one", avN(1)))}
	if counted {
		w.cond = fmt.Sprintf("%s = %s", e.n(aChanges), e.v("changes", avN(changes)))
	} else {
		// A counter no write has counted yet (none at all, or one written before
		// writes were counted): the value itself is what the check read.
		w.cond = fmt.Sprintf("attribute_not_exists(%s) AND (attribute_not_exists(%s) OR %s = %s)",
			e.n(aChanges), e.n(aLive), e.n(aLive), e.v("live", avN(int64(c.Counter))))
	}
	_, err = s.api.UpdateItem(ctx, w.item(s.table))
	if _, refused := refusalOf(err); refused || isConflict(err) {
		c.Moved = true
		s.Logger.Info("capacity counter moved during its check; not corrected", logCounter, c.Counter, logHeld, c.Held)
		return c, nil
	}
	if err != nil {
		return c, fmt.Errorf("reconcile capacity: %w", unavailable(err))
	}
	c.Corrected = true
	s.Logger.Warn("capacity counter corrected", logCounter, c.Counter, logHeld, c.Held)
	return c, nil
}

// readCounter reads the capacity item, consistently.
func (s *Store) readCounter(ctx context.Context) (map[string]types.AttributeValue, error) {
	out, err := s.api.GetItem(ctx, &dynamodb.GetItemInput{
		TableName: aws.String(s.table), Key: capacityKey(), ConsistentRead: aws.Bool(true),
	})
	if err != nil {
		return nil, unavailable(err)
	}
	return out.Item, nil
}

// sameAttr reports whether attribute a is absent from both items or a number equal in both.
func sameAttr(x, y map[string]types.AttributeValue, a string) bool {
	_, inX := x[a]
	_, inY := y[a]
	return inX == inY && getN(x, a) == getN(y, a)
}
