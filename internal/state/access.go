package state

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/smithy-go"
)

// The access item: what governs one user's share of the service, in one item per user
// so that a connect makes one conditional write (and the authorizer, later, one read):
// the connections counted against the user's cap, the connect rate, and a reserved
// "not before" (revocation: URLs issued before it refused; see Access.NotBefore).
//
// It lives under a partition key of its own (ACCESS#<userId>), outside USER#<userId>:
// a sandbox's scoped session reaches its user's USER# items only, so a workload can
// neither read its user's limits nor reset them.
const (
	accessPrefix = "ACCESS#"
	skAccess     = "ACCESS"

	aConns      = "conns"      // map: connection id → connected at (Unix ms), the connections counted
	aConnectTAT = "connectTat" // the connect rate's theoretical arrival time (Unix ms, GCRA)
	aCheckedAt  = "checkedAt"  // when the counted connections were last checked against API Gateway (Unix ms)
	aNotBefore  = "notBefore"  // reserved: URLs issued before it are refused (Unix ms)
)

func accessKey(userID string) map[string]types.AttributeValue {
	return key(accessPrefix+userID, skAccess)
}

// Errors of the per-user limits.
var (
	// ErrTooManyConnections: the user has ConnectLimits.MaxConnections live connections.
	ErrTooManyConnections = errors.New("too many connections for one user")
	// ErrConnectRate: the user connects faster than ConnectLimits allow.
	ErrConnectRate = errors.New("user connects too fast")
)

// LimitError is a connect refused by a per-user limit; it matches ErrTooManyConnections
// or ErrConnectRate.
type LimitError struct {
	// Limit is ErrTooManyConnections or ErrConnectRate.
	Limit error
	// Live and Max are the counted connections and the cap (ErrTooManyConnections).
	Live, Max int
	// RetryAfter is when the next connect would be within the rate (ErrConnectRate).
	RetryAfter time.Duration
	// Access is the item as the refusal found it.
	Access *Access
}

func (e *LimitError) Error() string {
	if e.Limit == ErrConnectRate {
		return fmt.Sprintf("%v: next connect allowed in %s", e.Limit, e.RetryAfter.Round(time.Millisecond))
	}
	return fmt.Sprintf("%v: %d of %d", e.Limit, e.Live, e.Max)
}

// Is matches Limit.
func (e *LimitError) Is(target error) bool { return target == e.Limit }

// ConnectLimits are the per-user connection limits.
type ConnectLimits struct {
	// MaxConnections is the most connections a user may hold at once.
	MaxConnections int
	// Interval is the sustained time between connects (one over the rate), Burst how
	// many may come at once: a generic cell rate algorithm (a token bucket of Burst
	// tokens refilled one per Interval), kept exactly in the access item.
	Interval time.Duration
	Burst    int
}

// intervalMs is Interval in the item's unit (whole milliseconds, at least one).
func (l ConnectLimits) intervalMs() int64 { return max(1, l.Interval.Milliseconds()) }

// toleranceMs is how far ahead of now the arrival time may be for a connect to be
// within the rate: the burst less the one being admitted.
func (l ConnectLimits) toleranceMs() int64 { return int64(l.Burst-1) * l.intervalMs() }

// Defaults of the per-user limits (template.yaml's MaxConnectionsPerUser,
// ConnectsPerMinute, ConnectBurst).
const (
	DefaultMaxConnections = 20
	DefaultConnectBurst   = 20
	DefaultConnectRate    = 60 // per minute
	// ConnectionMaxAge is API Gateway's connection limit (2 h) with a margin: a counted
	// connection older than this is gone, whatever became of its $disconnect.
	ConnectionMaxAge = DefaultConnectionTTL
)

// DefaultConnectLimits are the limits of a Store until set.
var DefaultConnectLimits = ConnectLimits{MaxConnections: DefaultMaxConnections,
	Interval: time.Minute / DefaultConnectRate, Burst: DefaultConnectBurst}

// Access is a user's access item.
type Access struct {
	UserID string
	// Conns are the counted connections and when each was admitted.
	Conns map[string]time.Time
	// NextConnect is the connect rate's theoretical arrival time: a connect at now is
	// within the rate while NextConnect ≤ now + (Burst-1)·Interval.
	NextConnect time.Time
	// CheckedAt is when Conns was last checked against API Gateway (ClaimCheck).
	CheckedAt time.Time
	// NotBefore is reserved for revocation: URLs issued before it are refused. Nothing
	// writes it yet; a writer must keep the item's TTL at least as far as it matters.
	NotBefore time.Time
	// hasConns reports that the conns attribute exists (it may be empty).
	hasConns bool
}

// Live returns the counted connections admitted after now less ConnectionMaxAge.
func (a *Access) Live(now time.Time) int {
	n := 0
	for _, at := range a.Conns {
		if now.Sub(at) < ConnectionMaxAge {
			n++
		}
	}
	return n
}

// expired returns the counted connections older than ConnectionMaxAge, sorted.
func (a *Access) expired(now time.Time) []string {
	var ids []string
	for id, at := range a.Conns {
		if now.Sub(at) >= ConnectionMaxAge {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	return ids
}

func decodeAccess(userID string, item map[string]types.AttributeValue) *Access {
	if len(item) == 0 {
		return nil
	}
	a := &Access{UserID: userID, Conns: map[string]time.Time{},
		NextConnect: getMs(item, aConnectTAT), CheckedAt: getMs(item, aCheckedAt), NotBefore: getMs(item, aNotBefore)}
	if m, ok := item[aConns].(*types.AttributeValueMemberM); ok {
		a.hasConns = true
		for id, v := range m.Value {
			if n, ok := v.(*types.AttributeValueMemberN); ok {
				ms, _ := strconv.ParseInt(n.Value, 10, 64)
				a.Conns[id] = time.UnixMilli(ms)
			}
		}
	}
	return a
}

// maxAdmitAttempts bounds the writes of one admission: each failed one returns the
// item, so the next decides on what DynamoDB holds; only a user racing their own
// connects needs more than two.
const maxAdmitAttempts = 8

// AdmitConnection counts connectionID against userID's limits and, within them, records
// it, in one conditional UpdateItem of the access item (a second when the item is new
// or the first guessed wrong): exact under any race, with no read. A connect over the
// rate is refused (*LimitError, ErrConnectRate) without changing anything; one over the
// cap (ErrTooManyConnections) too, and the caller decides whether to check the counted
// connections (ClaimCheck, ForgetConnections) or to charge it to the rate
// (ChargeConnect). Counted connections older than ConnectionMaxAge are dropped on the
// way. Admitting a connection already counted changes nothing but the rate.
func (s *Store) AdmitConnection(ctx context.Context, userID, connectionID string) (*Access, error) {
	return s.admit(ctx, userID, connectionID)
}

// ChargeConnect counts one connect against userID's rate without admitting a
// connection (a connect refused for the cap still spends the rate, so refusals are
// bounded by it too). Over the rate it returns *LimitError (ErrConnectRate).
func (s *Store) ChargeConnect(ctx context.Context, userID string) error {
	_, err := s.admit(ctx, userID, "")
	return err
}

func (s *Store) admit(ctx context.Context, userID, connectionID string) (*Access, error) {
	if err := checkID("user id", userID); err != nil {
		return nil, fmt.Errorf("admit connection: %w", err)
	}
	l := s.ConnectLimits
	if l.MaxConnections <= 0 || l.Interval <= 0 || l.Burst <= 0 {
		return nil, fmt.Errorf("admit connection: %w: limits %+v", ErrInvalid, l)
	}
	now := s.now()
	var known *Access // the item as the last refusal returned it; nil: not known yet
	var missing bool  // the last refusal found no item
	for range maxAdmitAttempts {
		in, err := s.admitInput(userID, connectionID, now, known, missing)
		if err != nil {
			return nil, err
		}
		_, err = s.api.UpdateItem(ctx, in)
		if err == nil {
			return known, nil
		}
		if invalidPath(err) {
			// The item exists without its connections map: create the map.
			known, missing = &Access{UserID: userID, Conns: map[string]time.Time{}}, false
			continue
		}
		if isConflict(err) {
			continue
		}
		r, ok := refusalOf(err)
		if !ok {
			return nil, fmt.Errorf("admit connection of %s: %w", userID, unavailable(err))
		}
		known = decodeAccess(userID, r.old(soleItem))
		missing = known == nil
		if known == nil {
			continue
		}
		if over := known.NextConnect.UnixMilli() - (now.UnixMilli() + l.toleranceMs()); over > 0 {
			return known, &LimitError{Limit: ErrConnectRate, RetryAfter: time.Duration(over) * time.Millisecond, Access: known}
		}
		if _, counted := known.Conns[connectionID]; connectionID != "" && !counted {
			if live := known.Live(now); live >= l.MaxConnections {
				return known, &LimitError{Limit: ErrTooManyConnections, Live: live, Max: l.MaxConnections, Access: known}
			}
		}
	}
	return nil, fmt.Errorf("admit connection of %s: %w", userID, ErrContention)
}

// admitInput builds one admission attempt on what is known of the item: nil means
// guess the common case (the item and its map exist, the rate is idle).
func (s *Store) admitInput(userID, connectionID string, now time.Time, known *Access, missing bool) (*dynamodb.UpdateItemInput, error) {
	l := s.ConnectLimits
	e := newExpr()
	var set, remove, cond []string
	nowMs := now.UnixMilli()
	interval := l.intervalMs()
	// The rate: an idle bucket starts from now, a busy one from its arrival time, never
	// further ahead than the burst allows.
	tat := e.n(aConnectTAT)
	if known == nil || !known.NextConnect.After(now) {
		set = append(set, tat+" = "+e.v("next", avN(nowMs+interval)))
		cond = append(cond, "(attribute_not_exists("+tat+") OR "+tat+" <= "+e.v("now", avN(nowMs))+")")
	} else {
		set = append(set, tat+" = "+tat+" + "+e.v("interval", avN(interval)))
		cond = append(cond, tat+" > "+e.v("now", avN(nowMs)),
			tat+" <= "+e.v("limit", avN(nowMs+l.toleranceMs())))
	}
	if connectionID != "" {
		if err := checkID("connection id", connectionID); err != nil {
			return nil, fmt.Errorf("admit connection: %w", err)
		}
		conns := e.n(aConns)
		switch {
		case missing || (known != nil && !known.hasConns):
			set = append(set, conns+" = "+e.v("conns", &types.AttributeValueMemberM{
				Value: map[string]types.AttributeValue{connectionID: avN(nowMs)}}))
			cond = append(cond, "attribute_not_exists("+conns+")")
		default:
			id := "#cid"
			e.names[id] = connectionID
			set = append(set, conns+"."+id+" = "+e.v("at", avN(nowMs)))
			// Counted connections past their age go, and are not counted: each must
			// still be there for the count to be exact.
			var stale []string
			if known != nil {
				stale = known.expired(now)
			}
			for i, sid := range stale {
				if sid == connectionID {
					continue
				}
				ph := "#stale" + strconv.Itoa(i)
				e.names[ph] = sid
				remove = append(remove, conns+"."+ph)
				cond = append(cond, "attribute_exists("+conns+"."+ph+")")
			}
			cond = append(cond, "(size("+conns+") < "+e.v("max", avN(int64(l.MaxConnections+len(remove))))+
				" OR attribute_exists("+conns+"."+id+"))")
		}
	}
	set = append(set, e.n(aUserID)+" = "+e.v("user", avS(userID)),
		e.n(AttrTTL)+" = "+e.v("ttl", avN(ttl(now.Add(s.ConnectionTTL)))))
	update := "SET " + strings.Join(set, ", ")
	if len(remove) > 0 {
		update += " REMOVE " + strings.Join(remove, ", ")
	}
	return &dynamodb.UpdateItemInput{
		TableName: aws.String(s.table), Key: accessKey(userID),
		UpdateExpression:                    aws.String(update),
		ConditionExpression:                 aws.String(strings.Join(cond, " AND ")),
		ExpressionAttributeNames:            e.Names(),
		ExpressionAttributeValues:           e.Values(),
		ReturnValuesOnConditionCheckFailure: types.ReturnValuesOnConditionCheckFailureAllOld,
	}, nil
}

// invalidPath reports DynamoDB's refusal of a document path that does not exist (a
// map entry set on an item without the map).
func invalidPath(err error) bool {
	var ae smithy.APIError
	return errors.As(err, &ae) && ae.ErrorCode() == "ValidationException" &&
		strings.Contains(ae.ErrorMessage(), "document path")
}

// ReleaseConnection stops counting connectionID against userID's cap ($disconnect, or
// a connection found gone). Releasing one not counted, or of a user without an access
// item, changes nothing.
func (s *Store) ReleaseConnection(ctx context.Context, userID, connectionID string) error {
	return s.ForgetConnections(ctx, userID, connectionID)
}

// ForgetConnections stops counting the connections ids of userID, in one write.
func (s *Store) ForgetConnections(ctx context.Context, userID string, ids ...string) error {
	if err := checkID("user id", userID); err != nil {
		return fmt.Errorf("release connection: %w", err)
	}
	if len(ids) == 0 {
		return nil
	}
	e := newExpr()
	conns := e.n(aConns)
	var remove []string
	for i, id := range ids {
		if err := checkID("connection id", id); err != nil {
			return fmt.Errorf("release connection: %w", err)
		}
		ph := "#c" + strconv.Itoa(i)
		e.names[ph] = id
		remove = append(remove, conns+"."+ph)
	}
	_, err := s.api.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName: aws.String(s.table), Key: accessKey(userID),
		UpdateExpression:         aws.String("REMOVE " + strings.Join(remove, ", ")),
		ConditionExpression:      aws.String("attribute_exists(" + conns + ")"),
		ExpressionAttributeNames: e.Names(),
	})
	if _, refused := refusalOf(err); err == nil || refused {
		return nil
	}
	return fmt.Errorf("release connections of %s: %w", userID, unavailable(err))
}

// ClaimCheck reports whether this caller may check userID's counted connections
// against API Gateway now: at most once per interval per user, decided by one
// conditional write, so a user at the cap does not make every refused connect cost a
// round of GetConnection calls.
func (s *Store) ClaimCheck(ctx context.Context, userID string, interval time.Duration) (bool, error) {
	if err := checkID("user id", userID); err != nil {
		return false, fmt.Errorf("claim check: %w", err)
	}
	now := s.now()
	e := newExpr()
	at := e.n(aCheckedAt)
	_, err := s.api.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName: aws.String(s.table), Key: accessKey(userID),
		UpdateExpression: aws.String("SET " + at + " = " + e.v("now", avMs(now))),
		ConditionExpression: aws.String("attribute_exists(" + e.n(AttrPK) + ") AND (attribute_not_exists(" + at + ") OR " +
			at + " <= " + e.v("since", avMs(now.Add(-interval))) + ")"),
		ExpressionAttributeNames: e.Names(), ExpressionAttributeValues: e.Values(),
	})
	if _, refused := refusalOf(err); refused {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("claim check of %s: %w", userID, unavailable(err))
	}
	return true, nil
}

// Access returns userID's access item (one strongly consistent read); ErrNotFound when
// there is none.
func (s *Store) Access(ctx context.Context, userID string) (*Access, error) {
	if err := checkID("user id", userID); err != nil {
		return nil, fmt.Errorf("get access: %w", err)
	}
	out, err := s.api.GetItem(ctx, &dynamodb.GetItemInput{
		TableName: aws.String(s.table), Key: accessKey(userID), ConsistentRead: aws.Bool(true),
	})
	if err != nil {
		return nil, fmt.Errorf("get access of %s: %w", userID, unavailable(err))
	}
	a := decodeAccess(userID, out.Item)
	if a == nil {
		return nil, fmt.Errorf("get access of %s: %w", userID, ErrNotFound)
	}
	return a, nil
}

// Counted reports whether connectionID is counted against userID's cap: one strongly
// consistent read of that one entry. A connection admitted and not counted any more was
// released — its $disconnect ran, or it was found gone.
func (s *Store) Counted(ctx context.Context, userID, connectionID string) (bool, error) {
	if err := checkID("user id", userID); err != nil {
		return false, fmt.Errorf("counted: %w", err)
	}
	if err := checkID("connection id", connectionID); err != nil {
		return false, fmt.Errorf("counted: %w", err)
	}
	out, err := s.api.GetItem(ctx, &dynamodb.GetItemInput{
		TableName: aws.String(s.table), Key: accessKey(userID), ConsistentRead: aws.Bool(true),
		ProjectionExpression:     aws.String("#c.#id"),
		ExpressionAttributeNames: map[string]string{"#c": aConns, "#id": connectionID},
	})
	if err != nil {
		return false, fmt.Errorf("counted %s of %s: %w", connectionID, userID, unavailable(err))
	}
	m, ok := out.Item[aConns].(*types.AttributeValueMemberM)
	if !ok {
		return false, nil
	}
	_, ok = m.Value[connectionID]
	return ok, nil
}
