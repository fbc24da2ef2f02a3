package state

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/sandgate/sandgate/internal/logging"
)

// Attributes of the sandbox record and the capacity counter.
const (
	aUserID    = "userId"
	aState     = "state"
	aToken     = "leaseToken"
	aDeadline  = "leaseDeadline" // Unix ms, like every time here except AttrTTL
	aGen       = "generation"
	aTask      = "taskArn"
	aEndpoint  = "endpoint"
	aGateway   = "gatewayToken"
	aHeartbeat = "heartbeatAt"
	aActivity  = "lastActivity"
	aSince     = "stateSince"
	aReason    = "reason"
	aVersion   = "version"
	// aPurgeStarted marks a PURGING record whose purge has begun deleting (Unix ms).
	aPurgeStarted = "purgeStarted"
	// aRestartFor is the generation whose stop a frame asked to restart after.
	aRestartFor = "restartFor"
	// aSlot is the generation whose task holds the record's capacity slot (Sandbox.Slot).
	aSlot = "slot"
	aLive = "live" // on the capacity item
	// aChanges counts the writes to the capacity item, so that a reconciliation can
	// tell that the counter moved since it read it even when it came back to the
	// same value (a start and a stop in between).
	aChanges = "changes"
)

// Reasons recorded when a sandbox stops.
const (
	ReasonStopped = "stopped"
	ReasonExpired = "lease expired"
	// ReasonPurgeReleased: cleanup gave the lock back before deleting anything.
	ReasonPurgeReleased = "purge released"
)

func userKey(userID string) string { return userPrefix + userID }

func key(pk, sk string) map[string]types.AttributeValue {
	return map[string]types.AttributeValue{AttrPK: avS(pk), AttrSK: avS(sk)}
}

func sandboxKey(userID string) map[string]types.AttributeValue {
	return key(userKey(userID), skSandbox)
}

func capacityKey() map[string]types.AttributeValue { return key(pkCapacity, skCapacity) }

func decodeSandbox(item map[string]types.AttributeValue) *Sandbox {
	if len(item) == 0 {
		return nil
	}
	return &Sandbox{
		UserID:        recordUser(item),
		State:         State(getS(item, aState)),
		LeaseToken:    getS(item, aToken),
		LeaseDeadline: getMs(item, aDeadline),
		Generation:    getN(item, aGen),
		TaskARN:       getS(item, aTask),
		Endpoint:      getS(item, aEndpoint),
		GatewayToken:  getS(item, aGateway),
		HeartbeatAt:   getMs(item, aHeartbeat),
		LastActivity:  getMs(item, aActivity),
		StateSince:    getMs(item, aSince),
		Reason:        getS(item, aReason),
		PurgeStarted:  getMs(item, aPurgeStarted),
		Slot:          getN(item, aSlot),
		Warm:          getBool(item, aWarm),
		LastSync:      decodeReceipt(item),
		Version:       getN(item, aVersion),
	}
}

// write is one conditional update, usable alone or inside a transaction. On a failed
// condition DynamoDB returns the item's old value (ALL_OLD), so the loser of a race
// learns the winner's record without another read.
type write struct {
	key          map[string]types.AttributeValue
	update, cond string
	e            *expr
}

func (w write) condition() (*string, types.ReturnValuesOnConditionCheckFailure) {
	if w.cond == "" {
		return nil, ""
	}
	return aws.String(w.cond), types.ReturnValuesOnConditionCheckFailureAllOld
}

func (w write) item(table string) *dynamodb.UpdateItemInput {
	cond, rv := w.condition()
	return &dynamodb.UpdateItemInput{
		TableName: aws.String(table), Key: w.key,
		UpdateExpression: aws.String(w.update), ConditionExpression: cond,
		ExpressionAttributeNames: w.e.Names(), ExpressionAttributeValues: w.e.Values(),
		ReturnValuesOnConditionCheckFailure: rv,
	}
}

func (w write) tx(table string) types.TransactWriteItem {
	cond, rv := w.condition()
	return types.TransactWriteItem{Update: &types.Update{
		TableName: aws.String(table), Key: w.key,
		UpdateExpression: aws.String(w.update), ConditionExpression: cond,
		ExpressionAttributeNames: w.e.Names(), ExpressionAttributeValues: w.e.Values(),
		ReturnValuesOnConditionCheckFailure: rv,
	}}
}

// inStates returns "#state IN (:s0, …)".
func inStates(e *expr, states ...State) string {
	ph := make([]string, len(states))
	for i, st := range states {
		ph[i] = e.v("st"+string(st), avS(string(st)))
	}
	return fmt.Sprintf("%s IN (%s)", e.n(aState), strings.Join(ph, ", "))
}

var counted = []State{Starting, Running, Stopping}

// capacityWrite moves the capacity counter by delta; an increase is admitted only
// below max. Every write counts itself in aChanges.
func capacityWrite(delta int64, max int) write {
	e := newExpr()
	w := write{key: capacityKey(), e: e, update: fmt.Sprintf("ADD %s %s, %s %s",
		e.n(aLive), e.v("delta", avN(delta)), e.n(aChanges), e.v("one", avN(1)))}
	// A decrease has no condition: the counter is exact by construction and a stop
	// must never be refused. The tests check that it never goes below zero.
	if delta > 0 {
		w.cond = fmt.Sprintf("attribute_not_exists(%s) OR %s < %s", e.n(aLive), e.n(aLive), e.v("max", avN(int64(max))))
	}
	return w
}

// Positions in a transaction that writes a sandbox record and moves the capacity
// counter with it (Acquire's admission; Release, Reap, TaskStopped and ReturnSlot,
// which give a slot back).
const (
	slotRecord = iota
	slotCounter
	slotItems
)

// slotTx writes record and moves the capacity counter by delta in one transaction,
// at positions slotRecord and slotCounter. Only an increase can be refused by the
// counter (see capacityWrite).
func (s *Store) slotTx(record write, delta int64) *dynamodb.TransactWriteItemsInput {
	items := make([]types.TransactWriteItem, slotItems)
	items[slotRecord] = record.tx(s.table)
	items[slotCounter] = capacityWrite(delta, s.MaxSandboxes).tx(s.table)
	return &dynamodb.TransactWriteItemsInput{TransactItems: items}
}

// takeWrite writes a new lease l in state st over cur (nil: no record), conditional
// on the record being exactly the version the caller decided on. A start (STARTING)
// records that its generation holds the record's slot; a purge lock holds none (it is
// only taken over a record that holds none).
func takeWrite(userID string, cur *Sandbox, l Lease, st State, now time.Time, activity bool) write {
	e := newExpr()
	var version int64 = 1
	var cond string
	if cur == nil {
		cond = fmt.Sprintf("attribute_not_exists(%s)", e.n(AttrPK))
	} else {
		version = cur.Version + 1
		cond = fmt.Sprintf("%s = %s", e.n(aVersion), e.v("oldVersion", avN(cur.Version)))
	}
	set := []string{
		e.n(aUserID) + " = " + e.v("uid", avS(userID)),
		// Every record is created here, so every record is in the Sandboxes index.
		e.n(AttrSandboxOf) + " = " + e.v("uid", avS(userID)),
		e.n(aState) + " = " + e.v("state", avS(string(st))),
		e.n(aToken) + " = " + e.v("tok", avS(l.Token)),
		e.n(aDeadline) + " = " + e.v("deadline", avMs(l.Deadline)),
		e.n(aGen) + " = " + e.v("gen", avN(l.Generation)),
		e.n(aSince) + " = " + e.v("now", avMs(now)),
		e.n(aVersion) + " = " + e.v("version", avN(version)),
	}
	if activity {
		set = append(set, e.n(aActivity)+" = "+e.v("now", avMs(now)))
	}
	if st == Starting {
		set = append(set, e.n(aSlot)+" = "+e.v("gen", avN(l.Generation)))
	}
	remove := []string{e.n(aTask), e.n(aEndpoint), e.n(aGateway), e.n(aHeartbeat), e.n(aReason), e.n(aWarm)}
	if st != Purging {
		// A purge that has begun deleting keeps its mark when cleanup retakes the
		// lock, so the resumed purge knows it may no longer give the data back.
		remove = append(remove, e.n(aPurgeStarted))
	}
	update := "SET " + strings.Join(set, ", ") + " REMOVE " + strings.Join(remove, ", ")
	return write{key: sandboxKey(userID), update: update, cond: cond, e: e}
}

// Get returns the user's sandbox record with exactly one GetItem: the warm path of
// every message. ErrNotFound when the user has none.
//
// The read is strongly consistent. An eventually consistent read costs half and is
// usually fresh, but right after the agent's MarkReady a stale STARTING would send a
// message to the inbox the agent has just drained; Enqueue refuses RUNNING sandboxes
// to close that race, and a consistent read keeps the refusal rare.
func (s *Store) Get(ctx context.Context, userID string) (*Sandbox, error) {
	if err := checkID("user id", userID); err != nil {
		return nil, fmt.Errorf("get sandbox: %w", err)
	}
	sb, err := s.get(ctx, userID)
	if err != nil {
		return nil, fmt.Errorf("get sandbox %s: %w", userID, err)
	}
	if sb == nil {
		return nil, fmt.Errorf("get sandbox %s: %w", userID, ErrNotFound)
	}
	return sb, nil
}

func (s *Store) get(ctx context.Context, userID string) (*Sandbox, error) {
	out, err := s.api.GetItem(ctx, &dynamodb.GetItemInput{
		TableName: aws.String(s.table), Key: sandboxKey(userID), ConsistentRead: aws.Bool(true),
	})
	if err != nil {
		return nil, unavailable(err)
	}
	return decodeSandbox(out.Item), nil
}

// Capacity returns the capacity counter: the number of live (counted) sandboxes.
func (s *Store) Capacity(ctx context.Context) (int, error) {
	out, err := s.api.GetItem(ctx, &dynamodb.GetItemInput{
		TableName: aws.String(s.table), Key: capacityKey(), ConsistentRead: aws.Bool(true),
	})
	if err != nil {
		return 0, fmt.Errorf("read capacity: %w", unavailable(err))
	}
	return int(getN(out.Item, aLive)), nil
}

// Acquire takes the user's start lease: state STARTING, a fresh token, generation+1,
// deadline now+StartTTL, and the record's slot for the new generation. From no
// record, or a STOPPED one that holds no slot, the start takes a capacity slot in the
// same transaction (ErrCapacity when MaxSandboxes are live). A counted lease past its
// deadline is taken over and keeps its slot, since the dead sandbox was still counted;
// so does a start over a STOPPED record whose task has not yet been seen to stop
// (Sandbox.Slot): either way the old task's stop event no longer names the record's
// slot, and the new generation's task holds it. A live lease held by another caller
// gives a *HeldError with the holder's record. PURGING gives ErrPurging, expired or
// not: a purge that died may have deleted part of the prefix, and a sandbox must not
// restore what is left.
//
// Calls: one GetItem, then one write (a TransactWriteItems to take a slot, an
// UpdateItem to take one over); a caller that loses the race needs no further read.
func (s *Store) Acquire(ctx context.Context, userID string) (Lease, error) {
	l, _, err := s.AcquireReplacing(ctx, userID)
	return l, err
}

// AcquireReplacing is Acquire that also returns the record it took over when the
// lease it replaced had run out (nil otherwise: no record, STOPPED), so that the
// caller can stop the task that record names.
func (s *Store) AcquireReplacing(ctx context.Context, userID string) (Lease, *Sandbox, error) {
	a, err := s.AcquireClaim(ctx, userID, nil)
	return a.Lease, a.Replaced, err
}

// AcquireClaim is AcquireReplacing that first tries to claim a task of the warm pool
// with the lease: when it is about to take the lease, it asks candidates (nil: no
// pool) for the pool tasks it may claim, once, and tries each in turn in one
// transaction with the lease (see claim): a task another start claimed or the refill
// drained meanwhile is passed over, a record that changed is decided again. Only when
// no candidate is left does it take the lease as AcquireReplacing does, and the
// caller launches a task. A candidates error is logged and treated as an empty pool.
//
// Calls: one GetItem; then the pool's Query and one TransactWriteItems per candidate
// tried (all when every one is taken meanwhile), then AcquireReplacing's write.
func (s *Store) AcquireClaim(ctx context.Context, userID string, candidates PoolCandidates) (Acquisition, error) {
	if err := checkID("user id", userID); err != nil {
		return Acquisition{}, fmt.Errorf("acquire sandbox: %w", err)
	}
	cur, err := s.get(ctx, userID)
	if err != nil {
		return Acquisition{}, fmt.Errorf("acquire sandbox %s: %w", userID, err)
	}
	var (
		acq  Acquisition
		pool []PoolTask
	)
	err = s.retry(ctx, "acquire", func() (outcome, error) {
		now := s.now()
		admit := false
		switch {
		case cur == nil || cur.State == Stopped && !cur.HoldsSlot():
			admit = true
		case cur.State == Stopped: // its task's slot, not yet given back, is taken over
		case cur.State == Purging:
			// Only cleanup ends a purge lock (ReleasePurge, FinishPurge), even one
			// whose holder died: it alone knows whether deletion began.
			return done, ErrPurging
		case now.Before(cur.LeaseDeadline):
			return done, &HeldError{Sandbox: cur}
		}
		l := newLease(userID, cur, now, s.StartTTL)
		if candidates != nil {
			if pool == nil {
				got, err := candidates(ctx)
				if err != nil {
					s.Logger.Warn("pool not read; starting without it", logging.UserID, userID, logging.Error, err.Error())
				}
				pool = append(got, PoolTask{}) // never nil again: read once
			}
			for len(pool) > 0 && pool[0].ID != "" {
				p := pool[0]
				out, err, lostTask, latest := s.claim(ctx, userID, cur, l, p, now)
				if lostTask {
					pool = pool[1:]
					continue
				}
				if out == done && err == nil {
					s.Logger.Info("pool task claimed", logging.UserID, userID, logGeneration, l.Generation,
						logPoolID, p.ID, logging.TaskARN, p.TaskARN, logSlot, cur.HoldsSlot())
					acq = Acquisition{Lease: l, Claimed: &p}
					if cur != nil && cur.State.Counted() {
						acq.Replaced = cur
					}
					return done, nil
				}
				if out == retryNow {
					cur = latest
				}
				return out, err
			}
		}
		w := takeWrite(userID, cur, l, Starting, now, true)
		if admit {
			_, err := s.api.TransactWriteItems(ctx, s.slotTx(w, 1))
			out, err := settle(err, nil, func(r refusal) (outcome, error) {
				// The record's reason decides first: a user whose sandbox is held
				// reuses it whatever the capacity.
				if r.failed(slotRecord) {
					cur = r.sandbox(slotRecord)
					return retryNow, r.err
				}
				return done, &CapacityError{Live: int(getN(r.old(slotCounter), aLive)), Max: s.MaxSandboxes}
			})
			if out == done && err == nil {
				acq = Acquisition{Lease: l}
			}
			return out, err
		}
		out, err := s.writeLease(ctx, w, l, &cur)
		if out == done && err == nil { // cur is still the record taken over
			acq = Acquisition{Lease: l}
			if cur.State == Stopped {
				s.Logger.Info("slot taken over from a stopped sandbox whose task was not yet seen to stop",
					logging.UserID, userID, logGeneration, l.Generation, logSlot, cur.Slot)
			} else {
				s.Logger.Warn("sandbox taken over", logging.UserID, userID, logGeneration, l.Generation,
					logging.State, string(cur.State), logDeadline, cur.LeaseDeadline)
				acq.Replaced = cur // a holder whose lease ran out
			}
		}
		return out, err
	})
	if err != nil {
		return Acquisition{}, fmt.Errorf("acquire sandbox %s: %w", userID, err)
	}
	return acq, nil
}

// newLease draws a lease on userID's sandbox over cur (nil: no record): a fresh token,
// the next generation, and a term from now.
func newLease(userID string, cur *Sandbox, now time.Time, term time.Duration) Lease {
	l := Lease{UserID: userID, Token: newToken(), Generation: 1, Deadline: now.Add(term)}
	if cur != nil {
		l.Generation = cur.Generation + 1
	}
	return l
}

// writeLease sends w, the UpdateItem that writes lease l over the record read as
// *cur (takeWrite), and reads the reply: l is held once it committed or when the
// record already carries l's token (ours). A record that changed since the read is
// put in *cur for the caller to decide again (retryNow).
func (s *Store) writeLease(ctx context.Context, w write, l Lease, cur **Sandbox) (outcome, error) {
	_, err := s.api.UpdateItem(ctx, w.item(s.table))
	return settle(err, func(r refusal) bool { return ours(r.sandbox(soleItem), l) },
		func(r refusal) (outcome, error) {
			*cur = r.sandbox(soleItem)
			return retryNow, r.err
		})
}

// ours reports whether the record carries lease l's token: a write of ours already
// landed. After a failed condition, a record that carries a token just drawn by this
// call is this call's own write: the SDK sent the UpdateItem again after its first
// attempt committed and the reply was lost (a 500, a timeout), and the version
// condition then failed against it. UpdateItem has no idempotency token, unlike
// TransactWriteItems (ClientRequestToken), and no one else knows the token.
func ours(cur *Sandbox, l Lease) bool { return cur != nil && cur.LeaseToken == l.Token }

// fenced runs one update of the holder's record, conditional on its lease token and
// on the record being in one of allowed. set receives the expression builder and
// returns the SET clauses; version+1 is added.
func (s *Store) fenced(ctx context.Context, op string, l Lease, allowed []State, set func(e *expr) []string) error {
	if err := checkLease(l); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	err := s.retry(ctx, op, func() (outcome, error) {
		e := newExpr()
		clauses := append(set(e), fmt.Sprintf("%s = %s + %s", e.n(aVersion), e.n(aVersion), e.v("one", avN(1))))
		w := write{
			key: sandboxKey(l.UserID), e: e,
			update: "SET " + strings.Join(clauses, ", "),
			cond:   fmt.Sprintf("%s = %s AND %s", e.n(aToken), e.v("tok", avS(l.Token)), inStates(e, allowed...)),
		}
		_, err := s.api.UpdateItem(ctx, w.item(s.table))
		return settle(err, nil, func(r refusal) (outcome, error) {
			return done, lostOrState(l, r.sandbox(soleItem))
		})
	})
	if err != nil {
		return fmt.Errorf("%s %s: %w", op, l.UserID, err)
	}
	return nil
}

// lostOrState explains why a fenced write's condition failed.
func lostOrState(l Lease, cur *Sandbox) error {
	if cur == nil || cur.LeaseToken != l.Token {
		return &LeaseLostError{Current: cur}
	}
	return fmt.Errorf("%w: sandbox is %s", ErrState, cur.State)
}

// SetTask records the task started for the lease (STARTING or RUNNING): a launched
// one, so the start is not warm (a claim whose pool task did not take it launches
// one instead, and the record then names that).
func (s *Store) SetTask(ctx context.Context, l Lease, taskARN string) error {
	if taskARN == "" {
		return fmt.Errorf("set task: %w: empty task ARN", ErrInvalid)
	}
	return s.fenced(ctx, "set task", l, []State{Starting, Running}, func(e *expr) []string {
		return []string{e.n(aTask) + " = " + e.v("task", avS(taskARN)),
			e.n(aWarm) + " = " + e.v("cold", &types.AttributeValueMemberBOOL{Value: false})}
	})
}

// MarkReady publishes the agent's endpoint and gateway token, moves STARTING to
// RUNNING and renews the lease for LeaseTTL. It returns the renewed lease.
func (s *Store) MarkReady(ctx context.Context, l Lease, endpoint, gatewayToken string) (Lease, error) {
	if endpoint == "" || gatewayToken == "" {
		return Lease{}, fmt.Errorf("mark ready: %w: empty endpoint or gateway token", ErrInvalid)
	}
	now := s.now()
	renewed := l
	renewed.Deadline = now.Add(s.LeaseTTL)
	err := s.fenced(ctx, "mark ready", l, []State{Starting, Running}, func(e *expr) []string {
		return []string{
			e.n(aState) + " = " + e.v("running", avS(string(Running))),
			e.n(aEndpoint) + " = " + e.v("endpoint", avS(endpoint)),
			e.n(aGateway) + " = " + e.v("gateway", avS(gatewayToken)),
			e.n(aSince) + " = " + e.v("now", avMs(now)),
			e.n(aHeartbeat) + " = " + e.v("now", avMs(now)),
			e.n(aDeadline) + " = " + e.v("deadline", avMs(renewed.Deadline)),
		}
	})
	if err != nil {
		return Lease{}, err
	}
	return renewed, nil
}

// Heartbeat renews the lease for LeaseTTL from now (in STARTING, RUNNING or
// STOPPING) and records lastActivity unless it is zero. It returns the renewed lease.
// A lease renewed after its deadline but before anyone took it over is still the
// record's lease: fencing is by token, not by clock.
func (s *Store) Heartbeat(ctx context.Context, l Lease, lastActivity time.Time) (Lease, error) {
	now := s.now()
	renewed := l
	renewed.Deadline = now.Add(s.LeaseTTL)
	err := s.fenced(ctx, "heartbeat", l, counted, func(e *expr) []string {
		set := []string{
			e.n(aDeadline) + " = " + e.v("deadline", avMs(renewed.Deadline)),
			e.n(aHeartbeat) + " = " + e.v("now", avMs(now)),
		}
		if !lastActivity.IsZero() {
			set = append(set, e.n(aActivity)+" = "+e.v("activity", avMs(lastActivity)))
		}
		return set
	})
	if err != nil {
		return Lease{}, err
	}
	return renewed, nil
}

// MarkStopping records that the holder is shutting down (final sync); the lease
// stays counted until Stop.
func (s *Store) MarkStopping(ctx context.Context, l Lease) error {
	now := s.now()
	return s.fenced(ctx, "mark stopping", l, counted, func(e *expr) []string {
		return []string{
			e.n(aState) + " = " + e.v("stopping", avS(string(Stopping))),
			e.n(aSince) + " = " + e.v("now", avMs(now)),
		}
	})
}

// Stop ends the holder's lease: STOPPED. The capacity slot stays with the record
// (Sandbox.Slot) until the task is seen to stop: the task's stop event gives it back
// (TaskStopped), or cleanup does when that event never comes (ReturnSlot). So Stop
// writes only the user's own record, never the capacity item: it is what the agent
// inside the task calls. Repeating a Stop that succeeded returns nil.
func (s *Store) Stop(ctx context.Context, l Lease) error {
	return s.end(ctx, "stop sandbox", l, ReasonStopped)
}

// Abort is Stop for a holder that gives up (a start that did not reach the workload,
// a final sync that failed), recording reason. Like Stop it leaves the slot to the
// task's stop.
func (s *Store) Abort(ctx context.Context, l Lease, reason string) error {
	if reason == "" {
		reason = "aborted"
	}
	return s.end(ctx, "abort sandbox", l, reason)
}

// end is Stop and Abort: one UpdateItem of the holder's record, conditional on its
// token and a counted state. A record written before slots were recorded gets its
// generation's slot here, so the task's stop gives back the slot it was counted in.
func (s *Store) end(ctx context.Context, op string, l Lease, reason string) error {
	if err := checkLease(l); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	err := s.retry(ctx, op, func() (outcome, error) {
		e := newExpr()
		w := write{
			key: sandboxKey(l.UserID), e: e,
			update: stopUpdate(e, s.now(), reason, fmt.Sprintf("%s = if_not_exists(%s, %s)", e.n(aSlot), e.n(aSlot), e.n(aGen))),
			cond:   fmt.Sprintf("%s = %s AND %s", e.n(aToken), e.v("tok", avS(l.Token)), inStates(e, counted...)),
		}
		_, err := s.api.UpdateItem(ctx, w.item(s.table))
		return settle(err, func(r refusal) bool {
			// Already stopped by this holder.
			cur := r.sandbox(soleItem)
			return ours(cur, l) && cur.State == Stopped
		}, func(r refusal) (outcome, error) {
			return done, lostOrState(l, r.sandbox(soleItem))
		})
	})
	if err != nil {
		return fmt.Errorf("%s %s: %w", op, l.UserID, err)
	}
	return nil
}

// Release ends the lease of a start whose task never ran (RunTask failed): STOPPED,
// recording reason, and the capacity slot back in the same transaction, since no
// task will ever stop to give it back. A task that did start after all (a RunTask
// whose answer was lost) finds its lease gone and exits; its stop event then finds
// no slot to give back. Repeating a Release that succeeded returns nil.
func (s *Store) Release(ctx context.Context, l Lease, reason string) error {
	if reason == "" {
		reason = "released"
	}
	op := "release sandbox"
	if err := checkLease(l); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	err := s.retry(ctx, op, func() (outcome, error) {
		e := newExpr()
		w := write{
			key: sandboxKey(l.UserID), e: e, update: stopUpdate(e, s.now(), reason, "") + ", " + e.n(aSlot),
			cond: fmt.Sprintf("%s = %s AND %s", e.n(aToken), e.v("tok", avS(l.Token)), inStates(e, counted...)),
		}
		_, err := s.api.TransactWriteItems(ctx, s.slotTx(w, -1))
		return settle(err, func(r refusal) bool {
			// Already released by this holder.
			cur := r.sandbox(slotRecord)
			return ours(cur, l) && cur.State == Stopped && cur.Slot == 0
		}, func(r refusal) (outcome, error) {
			if !r.failed(slotRecord) {
				return done, unavailable(r.err)
			}
			return done, lostOrState(l, r.sandbox(slotRecord))
		})
	})
	if err != nil {
		return fmt.Errorf("%s %s: %w", op, l.UserID, err)
	}
	return nil
}

// stopUpdate ends a counted lease: STOPPED since now for reason, without the agent's
// endpoint and gateway token; set, when not empty, is one more SET clause. The
// update ends with its REMOVE list, so a caller may append names to remove. The lease
// token stays, so a repeated stop knows the record is already its own.
func stopUpdate(e *expr, now time.Time, reason, set string) string {
	if set != "" {
		set = ", " + set
	}
	return fmt.Sprintf("SET %s = %s, %s = %s, %s = %s, %s = %s + %s%s REMOVE %s, %s",
		e.n(aState), e.v("stopped", avS(string(Stopped))),
		e.n(aSince), e.v("now", avMs(now)),
		e.n(aReason), e.v("reason", avS(reason)),
		e.n(aVersion), e.n(aVersion), e.v("one", avN(1)), set,
		e.n(aEndpoint), e.n(aGateway))
}

// RequestRestart records, once per generation, that a frame found userID's sandbox of
// that generation STOPPING (or, by now, STOPPED) and asked for the next one. It
// reports whether this call was the first: the caller that gets true sends the
// restart request, so a frame queued while the old sandbox stops always leads to
// exactly one request, whatever the inbox held before. A new acquisition has a new
// generation, so nothing needs clearing.
func (s *Store) RequestRestart(ctx context.Context, userID string, generation int64) (bool, error) {
	if err := checkID("user id", userID); err != nil {
		return false, fmt.Errorf("request restart: %w", err)
	}
	e := newExpr()
	_, err := s.api.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName: aws.String(s.table), Key: sandboxKey(userID),
		UpdateExpression: aws.String("SET " + e.n(aRestartFor) + " = " + e.v("gen", avN(generation))),
		// STOPPED too: the stop may complete between the frame's enqueue and this
		// write, and the queue still needs a successor.
		ConditionExpression: aws.String(e.n(aState) + " IN (" + e.v("stopping", avS(string(Stopping))) + ", " + e.v("stopped", avS(string(Stopped))) + ")" +
			" AND " + e.n(aGen) + " = " + e.v("gen", avN(generation)) +
			" AND (attribute_not_exists(" + e.n(aRestartFor) + ") OR " + e.n(aRestartFor) + " <> " + e.v("gen", avN(generation)) + ")"),
		ExpressionAttributeNames:  e.Names(),
		ExpressionAttributeValues: e.Values(),
	})
	if _, refused := refusalOf(err); refused {
		return false, nil // already requested, or no longer that sandbox stopping
	}
	if err != nil {
		return false, fmt.Errorf("request restart for %s: %w", userID, unavailable(err))
	}
	return true, nil
}
