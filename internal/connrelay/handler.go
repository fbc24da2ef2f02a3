package connrelay

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/apigatewaymanagementapi"
	"github.com/aws/aws-sdk-go-v2/service/apigatewaymanagementapi/types"

	"github.com/sandgate/sandgate/internal/funcurl"
	"github.com/sandgate/sandgate/internal/logging"
	"github.com/sandgate/sandgate/internal/relay"
	"github.com/sandgate/sandgate/internal/state"
	"github.com/sandgate/sandgate/internal/userid"
)

// Defaults of the Handler's caches and of the $connect grace.
const (
	// DefaultOwnerTTL is how long a verified "this task is the user's recorded task"
	// is reused: after a takeover, the old task may reach its user's connections for
	// at most this long (its own agent has fenced itself long before).
	DefaultOwnerTTL = 5 * time.Second
	// DefaultConnTTL is how long a verified "this connection is the user's" is reused.
	// Connection ids are never reused, so the answer cannot change; the TTL only
	// bounds the cache.
	DefaultConnTTL = 10 * time.Minute
	// DefaultConnectGrace is how long after its record was written a 410 is taken for
	// "still in its $connect" and the record kept (API Gateway refuses posts until the
	// $connect integration returns, at most 29 s); the agent uses the same grace.
	DefaultConnectGrace = 30 * time.Second
	// maxCacheEntries bounds each cache; a full one is emptied.
	maxCacheEntries = 10000
)

// MaxRequestBytes bounds a batch's body.
const MaxRequestBytes = 6 << 20

// Store is the state the relay reads: the user's record, one connection record, and
// the removal of a gone connection's record.
type Store interface {
	Get(ctx context.Context, userID string) (*state.Sandbox, error)
	Connection(ctx context.Context, userID, connectionID string) (state.Connection, error)
	RemoveConnection(ctx context.Context, userID, connectionID string) error
}

var _ Store = (*state.Store)(nil)

// Handler is the relay function.
type Handler struct {
	Store Store
	// API is the management API of the WebSocket stage.
	API relay.API
	// SandboxRole is the name and Account the account of the role whose sessions (the
	// vendor's, one per task) may call.
	SandboxRole, Account string
	// Cluster is the name of the cluster the sandboxes run in.
	Cluster string
	// OwnerTTL, ConnTTL and ConnectGrace are their Default* when zero.
	OwnerTTL, ConnTTL, ConnectGrace time.Duration
	Log                             *slog.Logger
	// Now is the clock (time.Now).
	Now func() time.Time

	owners cache[string]           // user → the task session verified as its recorded task
	conns  cache[state.Connection] // user and connection → the connection's record
}

// Handle answers one function URL request: a batch of operations.
func (h *Handler) Handle(ctx context.Context, ev events.LambdaFunctionURLRequest) (events.LambdaFunctionURLResponse, error) {
	log := h.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if ev.RequestContext.HTTP.Method != http.MethodPost || ev.RawPath != PathBatch {
		log.WarnContext(ctx, "not a relay request", logMethod, ev.RequestContext.HTTP.Method, logPath, ev.RawPath)
		return refuse(http.StatusNotFound, CodeBadRequest), nil
	}
	caller, err := funcurl.CallerOf(ev)
	if err != nil || !caller.Is(h.SandboxRole, h.Account) {
		log.WarnContext(ctx, "relay refused", logging.Reason, ReasonNotSandbox, logCaller, callerARN(ev))
		return refuse(http.StatusForbidden, CodeRefused), nil
	}
	log = log.With(logCaller, caller.ARN)
	req, err := decode(ev)
	if err != nil {
		log.WarnContext(ctx, "relay refused", logging.Reason, ReasonBadRequest, logging.Error, err.Error())
		return refuse(http.StatusBadRequest, CodeBadRequest), nil
	}
	log = log.With(logging.UserID, req.UserID)
	reason, err := h.owner(ctx, caller, req.UserID)
	if err != nil {
		log.ErrorContext(ctx, "relay unavailable", logging.Error, err.Error())
		return refuse(http.StatusServiceUnavailable, CodeUnavailable), nil
	}
	if reason != "" {
		log.WarnContext(ctx, "relay refused", logging.Reason, reason)
		return refuse(http.StatusForbidden, CodeRefused), nil
	}
	results := h.run(ctx, log, req)
	b, err := json.Marshal(Response{Results: results})
	if err != nil {
		return events.LambdaFunctionURLResponse{}, err
	}
	return events.LambdaFunctionURLResponse{StatusCode: http.StatusOK, Headers: jsonHeaders(), Body: string(b)}, nil
}

// Reasons a batch or an operation is refused, for the relay's log.
const (
	ReasonNotSandbox = "not_sandbox_role" // not a session of the sandbox role
	ReasonBadRequest = "bad_request"
	ReasonNoRecord   = "no_record"  // the user has no sandbox record
	ReasonNotLive    = "not_live"   // the record's lease has ended or expired
	ReasonOtherTask  = "other_task" // the record names another task (or none)
	ReasonNotOwner   = "not_the_user's_connection"
)

// owner checks that the caller is the task the user's record names, with a live
// lease: "" when it is, else the reason. A positive answer is reused for OwnerTTL.
func (h *Handler) owner(ctx context.Context, caller funcurl.Caller, userID string) (string, error) {
	now := h.now()
	if s, ok := h.owners.get(userID, now); ok && s == caller.Session {
		return "", nil
	}
	sb, err := h.Store.Get(ctx, userID)
	if errors.Is(err, state.ErrNotFound) {
		return ReasonNoRecord, nil
	}
	if err != nil {
		return "", err
	}
	switch {
	case !sb.Live(now):
		return ReasonNotLive, nil
	case !caller.RunsTask(sb.TaskARN, h.Cluster):
		return ReasonOtherTask, nil
	}
	h.owners.put(userID, caller.Session, now.Add(orDefault(h.OwnerTTL, DefaultOwnerTTL)))
	return "", nil
}

// run does the batch: each connection's operations in order, connections at once.
func (h *Handler) run(ctx context.Context, log *slog.Logger, req Request) []Result {
	results := make([]Result, len(req.Ops))
	byConn := map[string][]int{}
	var order []string
	for i, op := range req.Ops {
		if _, ok := byConn[op.ConnectionID]; !ok {
			order = append(order, op.ConnectionID)
		}
		byConn[op.ConnectionID] = append(byConn[op.ConnectionID], i)
	}
	var wg sync.WaitGroup
	for _, id := range order {
		wg.Go(func() {
			for _, i := range byConn[id] {
				results[i] = h.do(ctx, log, req.UserID, req.Ops[i])
			}
		})
	}
	wg.Wait()
	return results
}

// do runs one operation on a connection proven to be the user's.
func (h *Handler) do(ctx context.Context, log *slog.Logger, userID string, op Operation) Result {
	id := op.ConnectionID
	conn, err := h.connection(ctx, userID, id)
	if errors.Is(err, state.ErrNotFound) {
		// Not the user's, or its record is gone: either way nothing is done, and the
		// answer does not say which.
		log.WarnContext(ctx, "relay operation refused", logging.Reason, ReasonNotOwner, logging.ConnectionID, id, logOp, op.Op)
		return Result{Status: http.StatusGone, Error: "gone"}
	}
	if err != nil {
		log.ErrorContext(ctx, "relay operation failed", logging.ConnectionID, id, logging.Error, err.Error())
		return Result{Status: http.StatusServiceUnavailable, Error: "unavailable"}
	}
	switch op.Op {
	case OpPost:
		_, err = h.API.PostToConnection(ctx, &apigatewaymanagementapi.PostToConnectionInput{ConnectionId: aws.String(id), Data: op.Data})
	case OpGet:
		_, err = h.API.GetConnection(ctx, &apigatewaymanagementapi.GetConnectionInput{ConnectionId: aws.String(id)})
	case OpDelete:
		_, err = h.API.DeleteConnection(ctx, &apigatewaymanagementapi.DeleteConnectionInput{ConnectionId: aws.String(id)})
	}
	var (
		gone     *types.GoneException
		tooLarge *types.PayloadTooLargeException
		limited  *types.LimitExceededException
	)
	switch {
	case err == nil:
		return Result{Status: http.StatusOK}
	case errors.As(err, &gone):
		h.gone(ctx, log, conn)
		return Result{Status: http.StatusGone, Error: "gone"}
	case errors.As(err, &tooLarge):
		return Result{Status: http.StatusRequestEntityTooLarge, Error: "payload too large"}
	case errors.As(err, &limited):
		return Result{Status: http.StatusTooManyRequests, Error: "limit exceeded"}
	}
	log.WarnContext(ctx, "relay operation failed", logging.ConnectionID, id, logOp, op.Op, logging.Error, err.Error())
	return Result{Status: http.StatusBadGateway, Error: "management api failed"}
}

// connection returns the user's record of connection id, from the cache when it was
// read before; ErrNotFound when there is none.
func (h *Handler) connection(ctx context.Context, userID, id string) (state.Connection, error) {
	now := h.now()
	k := userID + "\x00" + id
	if c, ok := h.conns.get(k, now); ok {
		return c, nil
	}
	c, err := h.Store.Connection(ctx, userID, id)
	if err != nil {
		return state.Connection{}, err
	}
	h.conns.put(k, c, now.Add(orDefault(h.ConnTTL, DefaultConnTTL)))
	return c, nil
}

// gone forgets a connection API Gateway answered 410 for, and removes its record once
// it is past its $connect (a young one may still be in its handshake).
func (h *Handler) gone(ctx context.Context, log *slog.Logger, c state.Connection) {
	h.conns.drop(c.UserID + "\x00" + c.ConnectionID)
	if h.now().Sub(c.ConnectedAt) < orDefault(h.ConnectGrace, DefaultConnectGrace) {
		return
	}
	if err := h.Store.RemoveConnection(ctx, c.UserID, c.ConnectionID); err != nil {
		log.WarnContext(ctx, "remove gone connection failed", logging.ConnectionID, c.ConnectionID, logging.Error, err.Error())
		return
	}
	log.InfoContext(ctx, "gone connection removed", logging.ConnectionID, c.ConnectionID)
}

func (h *Handler) now() time.Time {
	if h.Now != nil {
		return h.Now()
	}
	return time.Now()
}

func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

// decode reads and checks a batch.
func decode(ev events.LambdaFunctionURLRequest) (Request, error) {
	var r Request
	if err := funcurl.DecodeBody(ev, MaxRequestBytes, &r); err != nil {
		return Request{}, err
	}
	if !userid.Valid(r.UserID) {
		return Request{}, errors.New("no valid user id")
	}
	if len(r.Ops) == 0 || len(r.Ops) > MaxOps {
		return Request{}, fmt.Errorf("%d operations, want 1 to %d", len(r.Ops), MaxOps)
	}
	for i, op := range r.Ops {
		switch {
		case op.Op != OpPost && op.Op != OpGet && op.Op != OpDelete:
			return Request{}, fmt.Errorf("operation %d: unknown %q", i, op.Op)
		case op.ConnectionID == "" || len(op.ConnectionID) > 256:
			return Request{}, fmt.Errorf("operation %d: no connection id", i)
		case op.Op != OpPost && len(op.Data) > 0:
			return Request{}, fmt.Errorf("operation %d: data on a %s", i, op.Op)
		case len(op.Data) > MaxDataBytes:
			return Request{}, fmt.Errorf("operation %d: %d bytes of data", i, len(op.Data))
		}
	}
	return r, nil
}

func callerARN(ev events.LambdaFunctionURLRequest) string {
	if a := ev.RequestContext.Authorizer; a != nil && a.IAM != nil {
		return a.IAM.UserARN
	}
	return ""
}

func refuse(status int, code string) events.LambdaFunctionURLResponse {
	b, _ := json.Marshal(Refusal{Error: code})
	return events.LambdaFunctionURLResponse{StatusCode: status, Headers: jsonHeaders(), Body: string(b)}
}

func jsonHeaders() map[string]string {
	return map[string]string{"Content-Type": "application/json", "Cache-Control": "no-store"}
}

// cache is a small map of values that expire.
type cache[V any] struct {
	mu sync.Mutex
	m  map[string]entry[V]
}

type entry[V any] struct {
	v     V
	until time.Time
}

func (c *cache[V]) get(k string, now time.Time) (V, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[k]
	if !ok || !now.Before(e.until) {
		var zero V
		return zero, false
	}
	return e.v, true
}

func (c *cache[V]) put(k string, v V, until time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) >= maxCacheEntries {
		c.m = map[string]entry[V]{}
	}
	c.m[k] = entry[V]{v: v, until: until}
}

func (c *cache[V]) drop(k string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.m, k)
}

// Log keys of this package; the shared ones come from internal/logging.
const (
	logCaller = "caller"
	logMethod = "method"
	logPath   = "path"
	logOp     = "op"
)
