package state

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/sandgate/sandgate/internal/logging"
)

// The warm pool: tasks started ahead of demand that wait, with no user, to be claimed.
//
// A pool item (pk POOL, sk TASK#<pool id>) exists from the moment the refill reserves
// its task's capacity slot until the task is claimed or seen to stop, and holds that
// slot all along: every write that creates one adds one to the capacity counter, and
// every write that deletes one gives one back, in the same transaction — except the
// claim, which moves the slot to the user's record (or gives it back when the record
// already held one). The pool id is RunTask's clientToken and is in the task's
// overrides, so the task, its stop event and the item name one another.
//
// A claimed task leaves a claim item (pk POOLCLAIM, sk TASK#<pool id>) naming the user
// and generation it serves, which ECS's events cannot carry, until its stop event has
// been handled; it holds no slot. The pool item is gone by then, so a task registers
// at most once, and a task that served a user can never be claimed again.

// PoolState is where a pool task is in its life.
type PoolState string

// The states of a pool item.
const (
	// PoolLaunching: the slot is reserved and RunTask asked (or about to be); the
	// task's agent has not registered yet.
	PoolLaunching PoolState = "LAUNCHING"
	// PoolWaiting: the agent registered its endpoint and claim secret and waits for a
	// claim. Only a waiting task is claimed.
	PoolWaiting PoolState = "WAITING"
	// PoolDraining: taken out of the pool (too old, of a task definition other than
	// the current one, never registered, or its container exited) while its task is
	// stopped; the slot goes back when the task is seen to stop.
	PoolDraining PoolState = "DRAINING"
)

// Keys and attributes of pool and claim items.
const (
	pkPool      = "POOL"
	pkPoolClaim = "POOLCLAIM"
	poolPrefix  = "TASK#"

	aPoolID     = "poolId"
	aTaskDef    = "taskDefinition"
	aSecret     = "claimSecret"
	aReserved   = "reservedAt"
	aLaunched   = "launchedAt"
	aRegistered = "registeredAt"
	aClaimed    = "claimedAt"
	// aWarm on a sandbox record: its task came from the pool.
	aWarm = "warm"
)

// DefaultClaimTTL is how long a claim item outlives its claim if the task's stop event
// never removes it: past any sandbox's lifetime. It holds no slot, so its expiry
// changes no count.
const DefaultClaimTTL = 48 * time.Hour

// PoolTask is a pool item.
type PoolTask struct {
	ID    string
	State PoolState
	// TaskARN is the task's, once RunTask answered or the agent registered.
	TaskARN string
	// TaskDefinition is the definition the refill launched (LAUNCHING) or ECS says the
	// task runs (from registration on).
	TaskDefinition string
	// Endpoint is where the agent takes its claim, and ClaimSecret what it must be
	// shown; both set by registration. The secret is never logged.
	Endpoint, ClaimSecret string
	// ReservedAt is when the slot was reserved; LaunchedAt when ECS created the task;
	// RegisteredAt when its agent registered.
	ReservedAt, LaunchedAt, RegisteredAt time.Time
	Reason                               string
	Version                              int64
}

// LogValue leaves the claim secret out of logs.
func (p PoolTask) LogValue() slog.Value {
	return slog.GroupValue(slog.String(logPoolID, p.ID), slog.String(logging.State, string(p.State)),
		slog.String(logging.TaskARN, p.TaskARN), slog.String(logTaskDef, p.TaskDefinition))
}

// PoolClaim is a claim item: the user and generation a pool task serves.
type PoolClaim struct {
	ID         string
	UserID     string
	Generation int64
	TaskARN    string
	ClaimedAt  time.Time
}

// Ref is the claimed task as its stop names it.
func (c *PoolClaim) Ref() TaskRef {
	return TaskRef{UserID: c.UserID, Generation: c.Generation, TaskARN: c.TaskARN}
}

// Log keys of the pool.
const (
	logPoolID  = "poolId"
	logTaskDef = "taskDefinition"
)

func poolKey(id string) map[string]types.AttributeValue { return key(pkPool, poolPrefix+id) }
func claimKey(id string) map[string]types.AttributeValue {
	return key(pkPoolClaim, poolPrefix+id)
}

func decodePool(item map[string]types.AttributeValue) *PoolTask {
	if len(item) == 0 {
		return nil
	}
	return &PoolTask{
		ID: getS(item, aPoolID), State: PoolState(getS(item, aState)), TaskARN: getS(item, aTask),
		TaskDefinition: getS(item, aTaskDef), Endpoint: getS(item, aEndpoint), ClaimSecret: getS(item, aSecret),
		ReservedAt: getMs(item, aReserved), LaunchedAt: getMs(item, aLaunched), RegisteredAt: getMs(item, aRegistered),
		Reason: getS(item, aReason), Version: getN(item, aVersion),
	}
}

func decodeClaim(item map[string]types.AttributeValue) *PoolClaim {
	if len(item) == 0 {
		return nil
	}
	return &PoolClaim{ID: getS(item, aPoolID), UserID: getS(item, aUserID), Generation: getN(item, aGen),
		TaskARN: getS(item, aTask), ClaimedAt: getMs(item, aClaimed)}
}

// NewPoolID returns a fresh pool id: RunTask's clientToken (at most 64 printable
// characters) and the task's name in the pool.
func NewPoolID() string { return newToken() }

func checkPoolID(id string) error {
	if id == "" || len(id) > 64 || strings.ContainsAny(id, "# ") {
		return fmt.Errorf("%w: pool id %q", ErrInvalid, id)
	}
	return nil
}

// ReservePool reserves the capacity slot of one pool task about to be launched with
// taskDefinition: a LAUNCHING pool item under a fresh id and one more on the capacity
// counter, in one transaction (ErrCapacity when MaxSandboxes are live, pool tasks
// included). The id is the RunTask clientToken and goes into the task's overrides.
//
// Calls: one TransactWriteItems.
func (s *Store) ReservePool(ctx context.Context, taskDefinition string) (PoolTask, error) {
	if taskDefinition == "" {
		return PoolTask{}, fmt.Errorf("reserve pool slot: %w: no task definition", ErrInvalid)
	}
	now := s.now()
	p := PoolTask{ID: NewPoolID(), State: PoolLaunching, TaskDefinition: taskDefinition, ReservedAt: now, Version: 1}
	e := newExpr()
	w := write{key: poolKey(p.ID), e: e,
		update: fmt.Sprintf("SET %s = %s, %s = %s, %s = %s, %s = %s, %s = %s",
			e.n(aPoolID), e.v("id", avS(p.ID)), e.n(aState), e.v("state", avS(string(PoolLaunching))),
			e.n(aTaskDef), e.v("td", avS(taskDefinition)), e.n(aReserved), e.v("now", avMs(now)),
			e.n(aVersion), e.v("one", avN(1))),
		cond: fmt.Sprintf("attribute_not_exists(%s)", e.n(AttrPK)),
	}
	err := s.retry(ctx, "reserve pool slot", func() (outcome, error) {
		_, err := s.api.TransactWriteItems(ctx, s.slotTx(w, 1))
		return settle(err, nil, func(r refusal) (outcome, error) {
			if r.failed(slotRecord) { // an id drawn twice: never, but not a capacity refusal
				return done, fmt.Errorf("%w: pool id in use", ErrState)
			}
			return done, &CapacityError{Live: int(getN(r.old(slotCounter), aLive)), Max: s.MaxSandboxes}
		})
	})
	if err != nil {
		return PoolTask{}, fmt.Errorf("reserve pool slot: %w", err)
	}
	s.Logger.Info("pool slot reserved", logPoolID, p.ID, logTaskDef, taskDefinition)
	return p, nil
}

// RecordPoolTask records the ARN RunTask returned for pool task id, unless the item
// already names that task (its agent registered first). ErrNotFound when the item is
// gone (the task was seen to stop); ErrState when it names another task.
func (s *Store) RecordPoolTask(ctx context.Context, id, taskARN string) error {
	if err := checkPoolID(id); err != nil {
		return fmt.Errorf("record pool task: %w", err)
	}
	if taskARN == "" {
		return fmt.Errorf("record pool task: %w: empty task ARN", ErrInvalid)
	}
	e := newExpr()
	_, err := s.api.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName: aws.String(s.table), Key: poolKey(id),
		UpdateExpression: aws.String(fmt.Sprintf("SET %s = %s, %s = %s + %s", e.n(aTask), e.v("task", avS(taskARN)),
			e.n(aVersion), e.n(aVersion), e.v("one", avN(1)))),
		ConditionExpression: aws.String(fmt.Sprintf("attribute_exists(%s) AND (attribute_not_exists(%s) OR %s = %s)",
			e.n(AttrPK), e.n(aTask), e.n(aTask), e.v("task", avS(taskARN)))),
		ExpressionAttributeNames: e.Names(), ExpressionAttributeValues: e.Values(),
		ReturnValuesOnConditionCheckFailure: types.ReturnValuesOnConditionCheckFailureAllOld,
	})
	if r, refused := refusalOf(err); refused {
		if decodePool(r.old(soleItem)) == nil {
			return fmt.Errorf("record pool task %s: %w", id, ErrNotFound)
		}
		return fmt.Errorf("record pool task %s: %w: the item names another task", id, ErrState)
	}
	if err != nil {
		return fmt.Errorf("record pool task %s: %w", id, unavailable(err))
	}
	return nil
}

// PoolRegistration is what the credential vendor records when a pool task's agent
// registers: the task as ECS describes it, and the claim secret the agent made.
type PoolRegistration struct {
	ID             string
	TaskARN        string
	TaskDefinition string
	Endpoint       string
	ClaimSecret    string
	LaunchedAt     time.Time
}

// RegisterPool makes a LAUNCHING pool item WAITING with the task's endpoint, claim
// secret, task definition and launch time: from now on a start may claim it. It is
// conditional on the item being LAUNCHING and naming no other task, so a task
// registers once, and a task that has been claimed (its item is gone) or drained
// never again. Repeating a registration that succeeded (same task and secret)
// returns nil. ErrNotFound: no such item; ErrState: not launching, or another task's.
func (s *Store) RegisterPool(ctx context.Context, r PoolRegistration) (PoolTask, error) {
	if err := checkPoolID(r.ID); err != nil {
		return PoolTask{}, fmt.Errorf("register pool task: %w", err)
	}
	if r.TaskARN == "" || r.TaskDefinition == "" || r.Endpoint == "" || r.ClaimSecret == "" || r.LaunchedAt.IsZero() {
		return PoolTask{}, fmt.Errorf("register pool task: %w: incomplete registration", ErrInvalid)
	}
	now := s.now()
	e := newExpr()
	in := &dynamodb.UpdateItemInput{
		TableName: aws.String(s.table), Key: poolKey(r.ID),
		UpdateExpression: aws.String(fmt.Sprintf("SET %s = %s, %s = %s, %s = %s, %s = %s, %s = %s, %s = %s, %s = %s, %s = %s + %s",
			e.n(aState), e.v("waiting", avS(string(PoolWaiting))), e.n(aTask), e.v("task", avS(r.TaskARN)),
			e.n(aTaskDef), e.v("td", avS(r.TaskDefinition)), e.n(aEndpoint), e.v("endpoint", avS(r.Endpoint)),
			e.n(aSecret), e.v("secret", avS(r.ClaimSecret)), e.n(aLaunched), e.v("launched", avMs(r.LaunchedAt)),
			e.n(aRegistered), e.v("now", avMs(now)), e.n(aVersion), e.n(aVersion), e.v("one", avN(1)))),
		ConditionExpression: aws.String(fmt.Sprintf("%s = %s AND (attribute_not_exists(%s) OR %s = %s)",
			e.n(aState), e.v("launching", avS(string(PoolLaunching))), e.n(aTask), e.n(aTask), e.v("task", avS(r.TaskARN)))),
		ExpressionAttributeNames: e.Names(), ExpressionAttributeValues: e.Values(),
		ReturnValuesOnConditionCheckFailure: types.ReturnValuesOnConditionCheckFailureAllOld,
		ReturnValues:                        types.ReturnValueAllNew,
	}
	out, err := s.api.UpdateItem(ctx, in)
	if rf, refused := refusalOf(err); refused {
		cur := decodePool(rf.old(soleItem))
		switch {
		case cur == nil:
			return PoolTask{}, fmt.Errorf("register pool task %s: %w", r.ID, ErrNotFound)
		case cur.State == PoolWaiting && cur.TaskARN == r.TaskARN && cur.ClaimSecret == r.ClaimSecret:
			return *cur, nil // a registration of ours whose answer was lost
		}
		return PoolTask{}, fmt.Errorf("register pool task %s: %w: %s, task %s", r.ID, ErrState, cur.State, cur.TaskARN)
	}
	if err != nil {
		return PoolTask{}, fmt.Errorf("register pool task %s: %w", r.ID, unavailable(err))
	}
	p := decodePool(out.Attributes)
	s.Logger.Info("pool task registered", logPoolID, r.ID, logging.TaskARN, r.TaskARN, logTaskDef, r.TaskDefinition)
	return *p, nil
}

// PoolTasks returns every pool item (LAUNCHING, WAITING, DRAINING), with one
// consistent Query per page. The claim secrets are included: the caller that claims
// needs them.
func (s *Store) PoolTasks(ctx context.Context) ([]PoolTask, error) {
	e := newExpr()
	in := &dynamodb.QueryInput{
		TableName: aws.String(s.table), ConsistentRead: aws.Bool(true),
		KeyConditionExpression: aws.String(fmt.Sprintf("%s = %s", e.n(AttrPK), e.v("pk", avS(pkPool)))),
	}
	in.ExpressionAttributeNames, in.ExpressionAttributeValues = e.Names(), e.Values()
	var all []PoolTask
	for {
		out, err := s.api.Query(ctx, in)
		if err != nil {
			return nil, fmt.Errorf("list pool tasks: %w", unavailable(err))
		}
		for _, it := range out.Items {
			all = append(all, *decodePool(it))
		}
		if len(out.LastEvaluatedKey) == 0 {
			return all, nil
		}
		in.ExclusiveStartKey = out.LastEvaluatedKey
	}
}

// DrainPool takes pool task id out of the pool (DRAINING, recording reason) unless it
// has been claimed or drained already: it reports whether this call drained it. The
// slot stays with the item until its task is seen to stop (RemovePool). A WAITING or
// LAUNCHING item is drained; a claim and a drain of one task cannot both succeed.
func (s *Store) DrainPool(ctx context.Context, id, reason string) (bool, error) {
	if err := checkPoolID(id); err != nil {
		return false, fmt.Errorf("drain pool task: %w", err)
	}
	e := newExpr()
	_, err := s.api.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName: aws.String(s.table), Key: poolKey(id),
		UpdateExpression: aws.String(fmt.Sprintf("SET %s = %s, %s = %s, %s = %s + %s REMOVE %s",
			e.n(aState), e.v("draining", avS(string(PoolDraining))), e.n(aReason), e.v("reason", avS(truncate(reason, 200))),
			e.n(aVersion), e.n(aVersion), e.v("one", avN(1)), e.n(aSecret))),
		ConditionExpression: aws.String(fmt.Sprintf("%s IN (%s, %s)", e.n(aState),
			e.v("launching", avS(string(PoolLaunching))), e.v("waiting", avS(string(PoolWaiting))))),
		ExpressionAttributeNames: e.Names(), ExpressionAttributeValues: e.Values(),
	})
	if _, refused := refusalOf(err); refused {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("drain pool task %s: %w", id, unavailable(err))
	}
	s.Logger.Info("pool task drained", logPoolID, id, logging.Reason, reason)
	return true, nil
}

// RemovePool deletes pool task id's item and gives its slot back, in one transaction:
// its task was seen to stop, never started (RunTask refused), or ECS no longer runs it.
// It reports whether this call removed it; an item already removed or claimed is
// left alone, so each slot goes back once.
func (s *Store) RemovePool(ctx context.Context, id, reason string) (bool, error) {
	if err := checkPoolID(id); err != nil {
		return false, fmt.Errorf("remove pool task: %w", err)
	}
	e := newExpr()
	items := []types.TransactWriteItem{
		{Delete: &types.Delete{
			TableName: aws.String(s.table), Key: poolKey(id),
			ConditionExpression:      aws.String(fmt.Sprintf("attribute_exists(%s)", e.n(AttrPK))),
			ExpressionAttributeNames: e.Names(),
		}},
		capacityWrite(-1, s.MaxSandboxes).tx(s.table),
	}
	removed := false
	err := s.retry(ctx, "remove pool task", func() (outcome, error) {
		removed = false
		_, err := s.api.TransactWriteItems(ctx, &dynamodb.TransactWriteItemsInput{TransactItems: items})
		gone := false
		out, err := settle(err, nil, func(r refusal) (outcome, error) {
			if !r.failed(0) {
				return done, unavailable(r.err)
			}
			gone = true // removed already, or claimed
			return done, nil
		})
		removed = out == done && err == nil && !gone
		return out, err
	})
	if err != nil {
		return false, fmt.Errorf("remove pool task %s: %w", id, err)
	}
	if removed {
		s.Logger.Info("pool task removed; slot given back", logPoolID, id, logging.Reason, reason)
	}
	return removed, nil
}

// PoolClaimOf returns the claim item of pool task id: the user and generation it was
// claimed for. ErrNotFound when the task was never claimed (or its claim is handled).
func (s *Store) PoolClaimOf(ctx context.Context, id string) (*PoolClaim, error) {
	if err := checkPoolID(id); err != nil {
		return nil, fmt.Errorf("read pool claim: %w", err)
	}
	out, err := s.api.GetItem(ctx, &dynamodb.GetItemInput{TableName: aws.String(s.table), Key: claimKey(id), ConsistentRead: aws.Bool(true)})
	if err != nil {
		return nil, fmt.Errorf("read pool claim %s: %w", id, unavailable(err))
	}
	c := decodeClaim(out.Item)
	if c == nil {
		return nil, fmt.Errorf("read pool claim %s: %w", id, ErrNotFound)
	}
	return c, nil
}

// PoolTaskOf returns pool item id; ErrNotFound when there is none.
func (s *Store) PoolTaskOf(ctx context.Context, id string) (*PoolTask, error) {
	if err := checkPoolID(id); err != nil {
		return nil, fmt.Errorf("read pool task: %w", err)
	}
	out, err := s.api.GetItem(ctx, &dynamodb.GetItemInput{TableName: aws.String(s.table), Key: poolKey(id), ConsistentRead: aws.Bool(true)})
	if err != nil {
		return nil, fmt.Errorf("read pool task %s: %w", id, unavailable(err))
	}
	p := decodePool(out.Item)
	if p == nil {
		return nil, fmt.Errorf("read pool task %s: %w", id, ErrNotFound)
	}
	return p, nil
}

// ForgetPoolClaim deletes claim item id, once the claimed task's stop has been
// recorded on the user's record. It holds no slot.
func (s *Store) ForgetPoolClaim(ctx context.Context, id string) error {
	if err := checkPoolID(id); err != nil {
		return fmt.Errorf("forget pool claim: %w", err)
	}
	_, err := s.api.DeleteItem(ctx, &dynamodb.DeleteItemInput{TableName: aws.String(s.table), Key: claimKey(id)})
	if err != nil {
		return fmt.Errorf("forget pool claim %s: %w", id, unavailable(err))
	}
	return nil
}

// PoolCandidates returns the pool tasks a start may claim, in the order to try them;
// AcquireClaim calls it at most once, and only when it is about to take a lease.
type PoolCandidates func(ctx context.Context) ([]PoolTask, error)

// Acquisition is what AcquireClaim took.
type Acquisition struct {
	Lease Lease
	// Replaced is the record whose run-out lease was taken over (nil: none).
	Replaced *Sandbox
	// Claimed is the pool task the lease claimed, with its endpoint and claim secret;
	// nil when none was: the caller launches a task.
	Claimed *PoolTask
}

// Positions in a claim's transaction.
const (
	claimRecord = iota
	claimPool
	claimItem
	claimCounter // moves by -1 when the record already held a slot, else 0
)

// claim tries to take lease l over cur (nil: no record) by claiming pool task p, in
// one transaction: the record becomes STARTING under l naming p's task (warm), p's
// pool item is deleted on condition that it is WAITING and still p's (so no two
// starts claim one task), and a claim item names the user and generation for the
// task's stop. The pool item's slot moves to the record; when the record already held
// one (a takeover, or a start over a STOPPED record whose task was not yet seen to
// stop) it keeps that one and the counter gives the pool item's back.
//
// It returns the retry loop's outcome, whether the pool task was lost (try the next
// one), and, when the record changed, the record as it is now.
func (s *Store) claim(ctx context.Context, userID string, cur *Sandbox, l Lease, p PoolTask, now time.Time) (out outcome, err error, lostTask bool, latest *Sandbox) {
	w := withTask(takeWrite(userID, cur, l, Starting, now, true), p.TaskARN)
	e := newExpr()
	poolDel := &types.Delete{
		TableName: aws.String(s.table), Key: poolKey(p.ID),
		ConditionExpression: aws.String(fmt.Sprintf("%s = %s AND %s = %s", e.n(aState), e.v("waiting", avS(string(PoolWaiting))),
			e.n(aTask), e.v("task", avS(p.TaskARN)))),
		ExpressionAttributeNames: e.Names(), ExpressionAttributeValues: e.Values(),
		ReturnValuesOnConditionCheckFailure: types.ReturnValuesOnConditionCheckFailureAllOld,
	}
	ce := newExpr()
	claimPut := &types.Put{
		TableName: aws.String(s.table),
		Item: map[string]types.AttributeValue{
			AttrPK: avS(pkPoolClaim), AttrSK: avS(poolPrefix + p.ID),
			aPoolID: avS(p.ID), aUserID: avS(userID), aGen: avN(l.Generation), aTask: avS(p.TaskARN),
			aClaimed: avMs(now), AttrTTL: avN(ttl(now.Add(DefaultClaimTTL))),
		},
		ConditionExpression:      aws.String(fmt.Sprintf("attribute_not_exists(%s)", ce.n(AttrPK))),
		ExpressionAttributeNames: ce.Names(),
	}
	// The counter is written even when it does not move, so that a reconciliation
	// counting records and pool items around this claim sees that it happened.
	var delta int64
	if cur.HoldsSlot() {
		delta = -1
	}
	items := []types.TransactWriteItem{claimRecord: w.tx(s.table), claimPool: {Delete: poolDel}, claimItem: {Put: claimPut},
		claimCounter: capacityWrite(delta, s.MaxSandboxes).tx(s.table)}
	_, err = s.api.TransactWriteItems(ctx, &dynamodb.TransactWriteItemsInput{TransactItems: items})
	out, err = settle(err, nil, func(r refusal) (outcome, error) {
		if r.failed(claimRecord) {
			latest = r.sandbox(claimRecord)
			return retryNow, r.err // the record changed: decide again
		}
		if r.failed(claimPool) || r.failed(claimItem) {
			lostTask = true // claimed, drained or gone: try the next one
			return retryNow, r.err
		}
		return done, unavailable(r.err)
	})
	return out, err, lostTask, latest
}

// withTask makes a lease write record taskARN as the lease's task, and the start as
// warm, instead of clearing both (takeWrite's REMOVE list names them).
func withTask(w write, taskARN string) write {
	e := w.e
	set, remove, _ := strings.Cut(w.update, " REMOVE ")
	var kept []string
	for _, n := range strings.Split(remove, ", ") {
		if n != e.n(aTask) && n != e.n(aWarm) {
			kept = append(kept, n)
		}
	}
	w.update = set + ", " + e.n(aTask) + " = " + e.v("task", avS(taskARN)) + ", " +
		e.n(aWarm) + " = " + e.v("warm", &types.AttributeValueMemberBOOL{Value: true})
	if len(kept) > 0 {
		w.update += " REMOVE " + strings.Join(kept, ", ")
	}
	return w
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

// The refill's lock (pk POOLLOCK, sk REFILL): one refill at a time, so that refills
// asked for by many starts at once do not each fill the pool; and a refill that ECS
// throttled leaves the lock held by no one until its back-off ends.
const (
	pkPoolLock = "POOLLOCK"
	skRefill   = "REFILL"
	aHolder    = "holder"
	aUntil     = "until"
)

// LockRefill takes the refill's lock for holder until now+term, unless another holder
// has it, or a back-off keeps it, until later. It reports whether holder has it.
func (s *Store) LockRefill(ctx context.Context, holder string, term time.Duration) (bool, error) {
	now := s.now()
	e := newExpr()
	_, err := s.api.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName: aws.String(s.table), Key: key(pkPoolLock, skRefill),
		UpdateExpression: aws.String(fmt.Sprintf("SET %s = %s, %s = %s", e.n(aHolder), e.v("holder", avS(holder)),
			e.n(aUntil), e.v("until", avMs(now.Add(term))))),
		ConditionExpression: aws.String(fmt.Sprintf("attribute_not_exists(%s) OR %s < %s OR %s = %s",
			e.n(aUntil), e.n(aUntil), e.v("now", avMs(now)), e.n(aHolder), e.v("holder", avS(holder)))),
		ExpressionAttributeNames: e.Names(), ExpressionAttributeValues: e.Values(),
	})
	if _, refused := refusalOf(err); refused {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("lock refill: %w", unavailable(err))
	}
	return true, nil
}

// UnlockRefill gives the refill's lock back: at once, or, when backoff is positive,
// to no one until backoff has passed (ECS throttled the refill: the next one waits).
func (s *Store) UnlockRefill(ctx context.Context, holder string, backoff time.Duration) error {
	e := newExpr()
	var err error
	cond := aws.String(fmt.Sprintf("%s = %s", e.n(aHolder), e.v("holder", avS(holder))))
	if backoff > 0 {
		_, err = s.api.UpdateItem(ctx, &dynamodb.UpdateItemInput{
			TableName: aws.String(s.table), Key: key(pkPoolLock, skRefill),
			UpdateExpression: aws.String(fmt.Sprintf("SET %s = %s, %s = %s", e.n(aHolder), e.v("none", avS("")),
				e.n(aUntil), e.v("until", avMs(s.now().Add(backoff))))),
			ConditionExpression: cond, ExpressionAttributeNames: e.Names(), ExpressionAttributeValues: e.Values(),
		})
	} else {
		_, err = s.api.DeleteItem(ctx, &dynamodb.DeleteItemInput{
			TableName: aws.String(s.table), Key: key(pkPoolLock, skRefill),
			ConditionExpression: cond, ExpressionAttributeNames: e.Names(), ExpressionAttributeValues: e.Values(),
		})
	}
	if _, refused := refusalOf(err); refused {
		return nil // lapsed and taken by another refill
	}
	if err != nil {
		return fmt.Errorf("unlock refill: %w", unavailable(err))
	}
	return nil
}
