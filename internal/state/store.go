package state

import (
	"context"
	crand "crypto/rand"
	"encoding/base64"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/sandgate/sandgate/internal/logging"
)

// API is the part of the DynamoDB client the Store uses.
type API interface {
	GetItem(context.Context, *dynamodb.GetItemInput, ...func(*dynamodb.Options)) (*dynamodb.GetItemOutput, error)
	PutItem(context.Context, *dynamodb.PutItemInput, ...func(*dynamodb.Options)) (*dynamodb.PutItemOutput, error)
	UpdateItem(context.Context, *dynamodb.UpdateItemInput, ...func(*dynamodb.Options)) (*dynamodb.UpdateItemOutput, error)
	DeleteItem(context.Context, *dynamodb.DeleteItemInput, ...func(*dynamodb.Options)) (*dynamodb.DeleteItemOutput, error)
	Query(context.Context, *dynamodb.QueryInput, ...func(*dynamodb.Options)) (*dynamodb.QueryOutput, error)
	Scan(context.Context, *dynamodb.ScanInput, ...func(*dynamodb.Options)) (*dynamodb.ScanOutput, error)
	BatchGetItem(context.Context, *dynamodb.BatchGetItemInput, ...func(*dynamodb.Options)) (*dynamodb.BatchGetItemOutput, error)
	TransactWriteItems(context.Context, *dynamodb.TransactWriteItemsInput, ...func(*dynamodb.Options)) (*dynamodb.TransactWriteItemsOutput, error)
}

var _ API = (*dynamodb.Client)(nil)

// Defaults for Store's tunable fields.
const (
	// DefaultStartTTL is a new lease's term: it must outlast a cold start (image
	// pull, restore) until the agent's first heartbeat, or a slow start is taken over.
	DefaultStartTTL = 5 * time.Minute
	// DefaultLeaseTTL is the term a heartbeat or MarkReady grants; the agent renews
	// every third of it.
	DefaultLeaseTTL = 60 * time.Second
	// DefaultPurgeTTL is the term of cleanup's PURGING lock: the Cleanup function's
	// 300 s timeout plus a margin, so no later pass retakes a lock whose purge may
	// still be running, and a pass soon after a crash resumes it. An expired lock
	// still refuses starts: only the resumed purge ends it.
	DefaultPurgeTTL = 6 * time.Minute
	// DefaultMaxSandboxes matches template.yaml's MaxSandboxes default.
	DefaultMaxSandboxes = 50
	// DefaultConnectionTTL is a little past API Gateway's 2 h connection limit, so
	// records whose $disconnect was lost disappear on their own.
	DefaultConnectionTTL = 2*time.Hour + 10*time.Minute
	// DefaultInboxTTL bounds how long a message waits for a sandbox to start.
	DefaultInboxTTL = 15 * time.Minute
	// DefaultInboxMaxItems and DefaultInboxMaxBytes bound one user's inbox.
	DefaultInboxMaxItems = 100
	DefaultInboxMaxBytes = 1 << 20
	// DefaultMaxMessageBytes is API Gateway's WebSocket message limit (128 KB).
	DefaultMaxMessageBytes = 128 << 10
)

// RetryPolicy bounds the retries of writes that lose to another writer.
//
// Conflicts (DynamoDB cancelled the write because a concurrent transaction touched
// the same item) are retried after "full jitter" exponential back-off: a delay
// uniform in [0, min(MaxDelay, BaseDelay·2^n)), at most MaxAttempts times.
//
// Races (an optimistic condition failed because the record or the inbox counter
// changed between read and write) are retried at once with the new value DynamoDB
// returned with the failure, at most MaxRaces times: waiting would only make that
// value stale again. Inbox appends add a jitter under BaseDelay so that writers in
// step fall out of it. Zero counts take DefaultRetry's.
type RetryPolicy struct {
	MaxAttempts int
	BaseDelay   time.Duration
	MaxDelay    time.Duration
	MaxRaces    int
}

// DefaultRetry is the RetryPolicy of a new Store. Worst case, conflicts cost about
// 2.5 s of back-off, well inside a 10 s Lambda timeout.
var DefaultRetry = RetryPolicy{MaxAttempts: 10, BaseDelay: 5 * time.Millisecond, MaxDelay: 400 * time.Millisecond, MaxRaces: 50}

// Store reads and writes the per-user state in one DynamoDB table. Set the tunable
// fields before first use; a Store is then safe for concurrent use.
type Store struct {
	// StartTTL is the term of a lease taken by Acquire.
	StartTTL time.Duration
	// LeaseTTL is the term granted by Heartbeat and MarkReady.
	LeaseTTL time.Duration
	// PurgeTTL is the term of a lease taken by AcquirePurge.
	PurgeTTL time.Duration
	// MaxSandboxes is the most sandboxes live at once (the capacity counter's bound).
	MaxSandboxes int
	// ConnectionTTL is how long a connection record lives without removal.
	ConnectionTTL time.Duration
	// InboxTTL is how long a message waits in the inbox.
	InboxTTL time.Duration
	// InboxMaxItems and InboxMaxBytes bound one user's inbox.
	InboxMaxItems int
	InboxMaxBytes int
	// MaxMessageBytes bounds one message's payload.
	MaxMessageBytes int
	// ConnectLimits are the per-user connection cap and connect rate (AdmitConnection).
	ConnectLimits ConnectLimits
	// Retry bounds retries of conflicting writes.
	Retry RetryPolicy
	// ScanPageSize, when set, limits the items one Scan call of ListSandboxes,
	// ListSandboxesIndexed and the counts evaluates; zero lets DynamoDB fill 1 MB pages.
	ScanPageSize int32
	// BackfillSettle is how long after its first scan BackfillSandboxIndex keeps
	// scanning (DefaultBackfillSettle when zero).
	BackfillSettle time.Duration
	// Now is the clock; tests move it to expire leases.
	Now func() time.Time
	// Logger records takeovers, reaps and retries; it never sees tokens.
	Logger *slog.Logger

	api   API
	table string
}

// New returns a Store over table with the default tunables.
func New(api API, table string) *Store {
	return &Store{
		StartTTL:        DefaultStartTTL,
		LeaseTTL:        DefaultLeaseTTL,
		PurgeTTL:        DefaultPurgeTTL,
		MaxSandboxes:    DefaultMaxSandboxes,
		ConnectionTTL:   DefaultConnectionTTL,
		InboxTTL:        DefaultInboxTTL,
		InboxMaxItems:   DefaultInboxMaxItems,
		InboxMaxBytes:   DefaultInboxMaxBytes,
		MaxMessageBytes: DefaultMaxMessageBytes,
		ConnectLimits:   DefaultConnectLimits,
		Retry:           DefaultRetry,
		Now:             time.Now,
		Logger:          slog.New(slog.DiscardHandler),
		api:             api,
		table:           table,
	}
}

// Table returns the table's name.
func (s *Store) Table() string { return s.table }

func (s *Store) now() time.Time { return s.Now() }

// outcome says what a retry loop does after one attempt.
type outcome int

const (
	done       outcome = iota // return the attempt's error (nil on success)
	retryNow                  // a race: decide again at once with what DynamoDB returned
	retrySoon                 // a race among appenders: as retryNow, after a small jitter
	retryLater                // a conflict: back off, then try again
)

// retry runs attempt until it is done, ctx ends or the policy's budget is spent.
func (s *Store) retry(ctx context.Context, op string, attempt func() (outcome, error)) error {
	p := s.Retry
	if p.MaxAttempts <= 0 {
		p.MaxAttempts = DefaultRetry.MaxAttempts
	}
	if p.MaxRaces <= 0 {
		p.MaxRaces = DefaultRetry.MaxRaces
	}
	var conflicts, races int
	for {
		out, err := attempt()
		var wait time.Duration
		switch out {
		case done:
			return err
		case retryLater:
			conflicts++
			if conflicts >= p.MaxAttempts {
				return s.exhausted(op, conflicts+races, err)
			}
			d := p.BaseDelay << min(conflicts-1, 20)
			if d > p.MaxDelay || d <= 0 {
				d = p.MaxDelay
			}
			if d > 0 {
				wait = rand.N(d) + 1
			}
		case retryNow, retrySoon:
			races++
			if races > p.MaxRaces {
				return s.exhausted(op, conflicts+races, err)
			}
			if out == retrySoon && p.BaseDelay > 0 {
				wait = rand.N(p.BaseDelay) + 1
			}
		}
		if wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return ctx.Err()
			case <-t.C:
			}
		}
	}
}

func (s *Store) exhausted(op string, attempts int, last error) error {
	s.Logger.Warn("state: retries exhausted", logOp, op, "attempts", attempts, logging.Error, last)
	return fmt.Errorf("%w after %d attempts: %w", ErrContention, attempts, last)
}

// newToken returns a fresh, unguessable lease token.
func newToken() string {
	var b [18]byte
	_, _ = crand.Read(b[:]) // crypto/rand.Read never fails on Linux
	return base64.RawURLEncoding.EncodeToString(b[:])
}

func checkID(kind, v string) error {
	if v == "" {
		return fmt.Errorf("%w: empty %s", ErrInvalid, kind)
	}
	if len(v) > 256 {
		return fmt.Errorf("%w: %s longer than 256 bytes", ErrInvalid, kind)
	}
	return nil
}

func checkLease(l Lease) error {
	if err := checkID("user id", l.UserID); err != nil {
		return err
	}
	if l.Token == "" {
		return fmt.Errorf("%w: lease without a token", ErrInvalid)
	}
	return nil
}

// expr collects the placeholders one request's expressions use: DynamoDB rejects
// unused names or values, so they are added as the expression is written.
type expr struct {
	names  map[string]string
	values map[string]types.AttributeValue
}

func newExpr() *expr {
	return &expr{names: map[string]string{}, values: map[string]types.AttributeValue{}}
}

// n returns the placeholder of attribute name a.
func (e *expr) n(a string) string { e.names["#"+a] = a; return "#" + a }

// v returns a placeholder for value av under key.
func (e *expr) v(key string, av types.AttributeValue) string {
	e.values[":"+key] = av
	return ":" + key
}

func (e *expr) Names() map[string]string {
	if len(e.names) == 0 {
		return nil
	}
	return e.names
}

func (e *expr) Values() map[string]types.AttributeValue {
	if len(e.values) == 0 {
		return nil
	}
	return e.values
}

// Attribute value helpers.

func avS(v string) types.AttributeValue { return &types.AttributeValueMemberS{Value: v} }
func avN(v int64) types.AttributeValue {
	return &types.AttributeValueMemberN{Value: strconv.FormatInt(v, 10)}
}
func avMs(t time.Time) types.AttributeValue { return avN(t.UnixMilli()) }

// ttl returns the TTL attribute's value for t: Unix seconds, rounded up so an item
// never expires before t.
func ttl(t time.Time) int64 {
	s := t.Unix()
	if t.Nanosecond() > 0 {
		s++
	}
	return s
}

func getS(item map[string]types.AttributeValue, a string) string {
	if v, ok := item[a].(*types.AttributeValueMemberS); ok {
		return v.Value
	}
	return ""
}

func getN(item map[string]types.AttributeValue, a string) int64 {
	if v, ok := item[a].(*types.AttributeValueMemberN); ok {
		n, _ := strconv.ParseInt(v.Value, 10, 64)
		return n
	}
	return 0
}

func getMs(item map[string]types.AttributeValue, a string) time.Time {
	if _, ok := item[a]; !ok {
		return time.Time{}
	}
	return time.UnixMilli(getN(item, a))
}

func getB(item map[string]types.AttributeValue, a string) []byte {
	if v, ok := item[a].(*types.AttributeValueMemberB); ok {
		return v.Value
	}
	return nil
}

func getBool(item map[string]types.AttributeValue, a string) bool {
	v, ok := item[a].(*types.AttributeValueMemberBOOL)
	return ok && v.Value
}
