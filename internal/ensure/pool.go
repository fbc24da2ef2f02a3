package ensure

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	lambdatypes "github.com/aws/aws-sdk-go-v2/service/lambda/types"

	"github.com/sandgate/sandgate/internal/agentapi"
	"github.com/sandgate/sandgate/internal/logging"
	"github.com/sandgate/sandgate/internal/metrics"
	"github.com/sandgate/sandgate/internal/state"
)

// What a start's log line says of the pool.
const (
	PoolHit  = "hit"  // the start claimed a waiting pool task
	PoolMiss = "miss" // no pool task could be claimed: a task was launched
	PoolOff  = "off"  // no pool configured
)

// logPool is the log key of a start's pool outcome.
const logPool = "pool"

// DefaultClaimMargin is how long before its maximum age a pool task is no longer
// claimed: the refill would drain it soon, and a claim must not race that drain.
const DefaultClaimMargin = time.Minute

// Claimer hands a claimed pool task its user; *agentapi.Client is one.
type Claimer interface {
	Claim(ctx context.Context, endpoint, secret string, c agentapi.Claim) error
}

// Refiller asks for the pool to be refilled without waiting for it.
type Refiller interface {
	Refill(ctx context.Context, reason string) error
}

var _ Claimer = (*agentapi.Client)(nil)

// Pool is what Ensure needs to claim warm pool tasks.
type Pool struct {
	// Store lists the pool's tasks.
	Store interface {
		PoolTasks(ctx context.Context) ([]state.PoolTask, error)
	}
	// TaskDefinition is the current sandbox task definition: only tasks running it
	// are claimed, so a deploy never hands a user an older image.
	TaskDefinition string
	// MaxAge is the oldest a pool task may be when claimed, less DefaultClaimMargin
	// (the refill drains older ones); zero means no bound.
	MaxAge time.Duration
	// Claimer hands the task its claim.
	Claimer Claimer
	// Refill, when set, is asked to refill the pool after each claim, at most once
	// per RefillEvery from this process (the refill is one at a time anyway, and a
	// storm of claims need not invoke it a hundred times).
	Refill      Refiller
	RefillEvery time.Duration
	// Metrics count hits and misses under Stage.
	Metrics *metrics.Emitter
	Stage   string

	mu          sync.Mutex
	lastRefill  time.Time
	refillAsked bool
}

// DefaultRefillEvery is Pool.RefillEvery when zero.
const DefaultRefillEvery = time.Second

// candidates returns the pool tasks a start at now may claim, in random order, so
// that starts at the same moment try different tasks first.
func (p *Pool) candidates(now time.Time) state.PoolCandidates {
	return func(ctx context.Context) ([]state.PoolTask, error) {
		all, err := p.Store.PoolTasks(ctx)
		if err != nil {
			return nil, err
		}
		var ok []state.PoolTask
		for _, t := range all {
			if p.Claimable(t, now) {
				ok = append(ok, t)
			}
		}
		rand.Shuffle(len(ok), func(i, j int) { ok[i], ok[j] = ok[j], ok[i] })
		return ok, nil
	}
}

// Claimable reports whether a start at now may claim pool task t: waiting, running
// the current task definition, and not near its maximum age.
func (p *Pool) Claimable(t state.PoolTask, now time.Time) bool {
	if t.State != state.PoolWaiting || t.TaskDefinition != p.TaskDefinition || t.Endpoint == "" || t.ClaimSecret == "" {
		return false
	}
	return p.MaxAge <= 0 || now.Sub(t.LaunchedAt) < p.MaxAge-DefaultClaimMargin
}

// count emits a hit or a miss.
func (p *Pool) count(ctx context.Context, log *slog.Logger, outcome string) {
	name := metrics.PoolMisses
	if outcome == PoolHit {
		name = metrics.PoolHits
	}
	if err := p.Metrics.Count(p.Stage, name); err != nil {
		log.WarnContext(ctx, "metric not emitted", logging.Error, err.Error())
	}
}

// refill asks for a refill, best effort: the schedule refills anyway.
func (p *Pool) refill(ctx context.Context, log *slog.Logger, reason string) {
	if p.Refill == nil {
		return
	}
	every := p.RefillEvery
	if every <= 0 {
		every = DefaultRefillEvery
	}
	p.mu.Lock()
	now := time.Now()
	if p.refillAsked && now.Sub(p.lastRefill) < every {
		p.mu.Unlock()
		return
	}
	p.lastRefill, p.refillAsked = now, true
	p.mu.Unlock()
	if err := p.Refill.Refill(ctx, reason); err != nil {
		log.WarnContext(ctx, "pool refill not asked for", logging.Error, err.Error())
	}
}

// RefillRequest is the event a refill is asked with (the schedule sends {}).
type RefillRequest struct {
	Reason string `json:"reason,omitempty"`
}

// Invoker is the part of the Lambda client a LambdaRefiller uses.
type Invoker interface {
	Invoke(ctx context.Context, in *lambda.InvokeInput, optFns ...func(*lambda.Options)) (*lambda.InvokeOutput, error)
}

// LambdaRefiller asks the pool function for a refill with an asynchronous invocation
// (InvocationType Event): the start does not wait for it.
type LambdaRefiller struct {
	Lambda   Invoker
	Function string
}

// Refill invokes the pool function asynchronously.
func (r *LambdaRefiller) Refill(ctx context.Context, reason string) error {
	b, err := json.Marshal(RefillRequest{Reason: reason})
	if err != nil {
		return err
	}
	_, err = r.Lambda.Invoke(ctx, &lambda.InvokeInput{
		FunctionName: aws.String(r.Function), InvocationType: lambdatypes.InvocationTypeEvent, Payload: b,
	})
	if err != nil {
		return fmt.Errorf("invoke %s: %w", r.Function, err)
	}
	return nil
}
