package connrelay

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/apigatewaymanagementapi"
	"github.com/aws/aws-sdk-go-v2/service/apigatewaymanagementapi/types"

	"github.com/sandgate/sandgate/internal/funcurl"
	"github.com/sandgate/sandgate/internal/relay"
)

// Defaults of the Client.
const (
	// DefaultMaxInFlight is how many batches may be on their way at once. Whatever is
	// asked while they are goes into the next batch: an idle sandbox's post goes out at
	// once, a busy one's are batched. Each batch on its way is one concurrent execution
	// of the relay function, which shares the account's Lambda concurrency with every
	// other function: two keep a busy sandbox's replies flowing without one slow call
	// holding the rest up, and keep the relay's instances (and their caches) few.
	DefaultMaxInFlight = 2
	// DefaultTimeout bounds one batch, retries included.
	DefaultTimeout = 15 * time.Second
	// DefaultAttempts is how often a batch is sent when the function cannot be
	// reached or answers 429 or 5xx.
	DefaultAttempts = 3
)

// ErrRefused: the relay refused the batch (this task is not the user's recorded task).
var ErrRefused = errors.New("relay refused")

// Client is the relay function as the agent calls it: a relay.API whose calls are sent
// in batches, each connection's operations in the order they were asked. It is safe
// for concurrent use.
type Client struct {
	fu     *funcurl.Client
	userID string
	// MaxInFlight, Timeout and Attempts are their Default* when zero.
	MaxInFlight int
	Timeout     time.Duration
	Attempts    int

	mu       sync.Mutex
	queue    []*pending
	inFlight int
	busy     map[string]bool // connections with an operation in a batch on its way
}

var _ relay.API = (*Client)(nil)

// NewClient returns a Client of the relay's function URL rawURL for userID's sandbox,
// signing with creds (the sandbox's scoped credentials).
func NewClient(rawURL, userID string, creds aws.CredentialsProvider, region string, hc *http.Client) (*Client, error) {
	fu, err := funcurl.NewClient(rawURL, creds, region, hc)
	if err != nil {
		return nil, err
	}
	return &Client{fu: fu, userID: userID, busy: map[string]bool{}}, nil
}

// pending is one operation waiting for its result.
type pending struct {
	op   Operation
	ctx  context.Context
	done chan error
}

// PostToConnection posts through the relay.
func (c *Client) PostToConnection(ctx context.Context, in *apigatewaymanagementapi.PostToConnectionInput, _ ...func(*apigatewaymanagementapi.Options)) (*apigatewaymanagementapi.PostToConnectionOutput, error) {
	if err := c.do(ctx, Operation{Op: OpPost, ConnectionID: aws.ToString(in.ConnectionId), Data: in.Data}); err != nil {
		return nil, err
	}
	return &apigatewaymanagementapi.PostToConnectionOutput{}, nil
}

// GetConnection asks the relay whether the connection is open.
func (c *Client) GetConnection(ctx context.Context, in *apigatewaymanagementapi.GetConnectionInput, _ ...func(*apigatewaymanagementapi.Options)) (*apigatewaymanagementapi.GetConnectionOutput, error) {
	if err := c.do(ctx, Operation{Op: OpGet, ConnectionID: aws.ToString(in.ConnectionId)}); err != nil {
		return nil, err
	}
	return &apigatewaymanagementapi.GetConnectionOutput{}, nil
}

// DeleteConnection closes the connection through the relay.
func (c *Client) DeleteConnection(ctx context.Context, in *apigatewaymanagementapi.DeleteConnectionInput, _ ...func(*apigatewaymanagementapi.Options)) (*apigatewaymanagementapi.DeleteConnectionOutput, error) {
	if err := c.do(ctx, Operation{Op: OpDelete, ConnectionID: aws.ToString(in.ConnectionId)}); err != nil {
		return nil, err
	}
	return &apigatewaymanagementapi.DeleteConnectionOutput{}, nil
}

// do queues op and waits for its result.
func (c *Client) do(ctx context.Context, op Operation) error {
	if op.ConnectionID == "" {
		return errors.New("relay: no connection id")
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	p := &pending{op: op, ctx: ctx, done: make(chan error, 1)}
	c.mu.Lock()
	c.queue = append(c.queue, p)
	if c.inFlight < orInt(c.MaxInFlight, DefaultMaxInFlight) {
		c.inFlight++
		go c.flush()
	}
	c.mu.Unlock()
	select {
	case err := <-p.done:
		return err
	case <-ctx.Done():
		// The operation may still go out in a batch already on its way.
		return ctx.Err()
	}
}

// flush sends batches while there is something to send it may take.
func (c *Client) flush() {
	for {
		batch := c.take()
		if len(batch) == 0 {
			return
		}
		c.send(batch)
		c.mu.Lock()
		for _, p := range batch {
			delete(c.busy, p.op.ConnectionID)
		}
		c.mu.Unlock()
	}
}

// take removes the next batch from the queue: operations whose caller still waits, of
// connections with nothing on its way, one per connection, within the batch's
// limits. With nothing to take it gives its place up.
func (c *Client) take() []*pending {
	c.mu.Lock()
	defer c.mu.Unlock()
	var batch, rest []*pending
	size := 0
	for _, p := range c.queue {
		switch {
		case p.ctx.Err() != nil:
			p.done <- p.ctx.Err()
		case c.busy[p.op.ConnectionID] || len(batch) == MaxOps || size+len(p.op.Data) > MaxBatchData && len(batch) > 0:
			rest = append(rest, p)
		default:
			c.busy[p.op.ConnectionID] = true
			batch = append(batch, p)
			size += len(p.op.Data)
		}
	}
	c.queue = rest
	if len(batch) == 0 {
		c.inFlight--
	}
	return batch
}

// send sends one batch and hands each operation its result.
func (c *Client) send(batch []*pending) {
	req := Request{UserID: c.userID, Ops: make([]Operation, len(batch))}
	for i, p := range batch {
		req.Ops[i] = p.op
	}
	results, err := c.post(req)
	for i, p := range batch {
		if err != nil {
			p.done <- err
			continue
		}
		p.done <- resultError(p.op, results[i])
	}
}

// post sends req, retrying what may succeed when sent again.
func (c *Client) post(req Request) ([]Result, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), orDuration(c.Timeout, DefaultTimeout))
	defer cancel()
	delay := 100 * time.Millisecond
	var last error
	for attempt := range orInt(c.Attempts, DefaultAttempts) {
		if attempt > 0 {
			t := time.NewTimer(delay)
			select {
			case <-ctx.Done():
				t.Stop()
				return nil, errors.Join(last, ctx.Err())
			case <-t.C:
			}
			delay *= 4
		}
		resp, err := c.fu.Post(ctx, PathBatch, body)
		switch {
		case err != nil:
			last = fmt.Errorf("relay: %w", err)
			continue
		case resp.Status == http.StatusOK:
			var out Response
			if err := json.Unmarshal(resp.Body, &out); err != nil || len(out.Results) != len(req.Ops) {
				return nil, fmt.Errorf("relay: an answer of %d results for %d operations (%v)", len(out.Results), len(req.Ops), err)
			}
			return out.Results, nil
		case resp.Status == http.StatusTooManyRequests || resp.Status >= 500:
			last = fmt.Errorf("relay answered %d", resp.Status)
			continue
		}
		var ref Refusal
		_ = json.Unmarshal(resp.Body, &ref)
		if resp.Status == http.StatusForbidden && ref.Error == CodeRefused {
			return nil, ErrRefused
		}
		return nil, fmt.Errorf("relay answered %d %s", resp.Status, ref.Error)
	}
	return nil, last
}

// resultError turns one operation's result into what the management API's client
// would have returned.
func resultError(op Operation, r Result) error {
	msg := aws.String(r.Error)
	switch r.Status {
	case http.StatusOK:
		return nil
	case http.StatusGone:
		return &types.GoneException{Message: msg}
	case http.StatusRequestEntityTooLarge:
		return &types.PayloadTooLargeException{Message: msg}
	case http.StatusTooManyRequests:
		return &types.LimitExceededException{Message: msg}
	}
	return fmt.Errorf("relay: %s %s: %d %s", op.Op, op.ConnectionID, r.Status, r.Error)
}

func orInt(n, def int) int {
	if n <= 0 {
		return def
	}
	return n
}

func orDuration(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}
