package iampolicy

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sandgate/sandgate/infra/local/identity"
)

// Where the evaluator's files are, relative to the repository root.
const (
	// ScriptPath is simulate.mjs, the Node side of the Evaluator.
	ScriptPath = "infra/local/iampolicy/simulate.mjs"
	// NodeModulesPath holds @cloud-copilot/iam-simulate once `npm ci` has run.
	NodeModulesPath = "node_modules"
	// SimulatorVersion is the pinned @cloud-copilot/iam-simulate release (package.json
	// pins the same version exactly; simulate.mjs refuses any other).
	SimulatorVersion = "0.1.173"
)

// Defaults for Options.
const (
	// DefaultStartTimeout bounds the Node start and iam-simulate's import; generous
	// because CI machines are small and shared.
	DefaultStartTimeout = 60 * time.Second
	// DefaultStopGrace is how long Close waits for the process before killing it.
	DefaultStopGrace = 5 * time.Second
	// DefaultCacheSize bounds the decisions kept; past it, decided entries are dropped.
	DefaultCacheSize = 50000
)

// Log keys of the denial line.
const (
	LogPrincipal  = "principal"
	LogAction     = "action"
	LogResource   = "resource"
	LogExplicit   = "explicit"
	LogStatement  = "statement"
	LogWouldAllow = "wouldAllow"
	LogMismatch   = "mismatch"
	LogAllowedBy  = "allowedBy"
	LogDetail     = "detail"
)

// Errors for a machine that cannot run the evaluator, and for a closed one.
var (
	// ErrNodeMissing: no node executable.
	ErrNodeMissing = errors.New("node not found: install Node 20 (the local stack's policy evaluator runs on it)")
	// ErrSimulatorMissing: @cloud-copilot/iam-simulate is not in node_modules.
	ErrSimulatorMissing = errors.New("@cloud-copilot/iam-simulate is not installed: run `npm ci` at the repository root")
	// ErrClosed: the Evaluator was closed.
	ErrClosed = errors.New("policy evaluator closed")
)

// Options configure Start. The zero value is usable.
type Options struct {
	// Node is the node executable; empty looks up "node" on PATH.
	Node string
	// StartTimeout bounds each process start; zero means DefaultStartTimeout.
	StartTimeout time.Duration
	// StopGrace bounds Close; zero means DefaultStopGrace.
	StopGrace time.Duration
	// CacheSize bounds the decision cache; zero means DefaultCacheSize.
	CacheSize int
	// Logger receives one line per denial or refusal, and process restarts; nil
	// means slog.Default().
	Logger *slog.Logger
	// Recorder, when set, records the statements that allowed each allowed request.
	Recorder *Recorder
}

// Stats count the Evaluator's work.
type Stats struct {
	// Evaluations are simulations sent to the process; CacheHits requests answered
	// from the cache (including those that waited for an identical one in flight).
	Evaluations, CacheHits int64
	// Restarts of the process (at most one).
	Restarts int
}

// Evaluator decides identity.Requests with iam-simulate running in one Node child
// process, which concurrent requests share. It implements identity.Authorizer.
// Decisions are cached by everything that decides them. A process that dies is
// restarted once; after a second death every request fails, never allowed.
type Evaluator struct {
	node, script, nodeModules string
	opts                      Options
	log                       *slog.Logger
	ctx                       context.Context
	cancel                    context.CancelFunc

	pmu      sync.Mutex
	child    *child
	restarts int
	failed   error
	closed   bool

	nextID      atomic.Uint64
	evaluations atomic.Int64
	hits        atomic.Int64

	cmu   sync.Mutex
	cache map[[32]byte]*entry
}

var _ identity.Authorizer = (*Evaluator)(nil)

type entry struct {
	done chan struct{}
	ans  *wireAnswer // set before done is closed, on success
	err  error       // set before done is closed, on failure
}

// Start runs script (simulate.mjs) with node against nodeModules, the repository's
// node_modules, and waits until iam-simulate is loaded. It fails with ErrNodeMissing
// or ErrSimulatorMissing when the machine cannot run it.
func Start(ctx context.Context, script, nodeModules string, opts Options) (*Evaluator, error) {
	node := opts.Node
	if node == "" {
		node = "node"
	}
	path, err := exec.LookPath(node)
	if err != nil {
		return nil, fmt.Errorf("start policy evaluator: %w", ErrNodeMissing)
	}
	if _, err := os.Stat(script); err != nil {
		return nil, fmt.Errorf("start policy evaluator: %w", err)
	}
	if _, err := os.Stat(filepath.Join(nodeModules, "@cloud-copilot", "iam-simulate", "package.json")); err != nil {
		return nil, fmt.Errorf("start policy evaluator: %w (looked in %s)", ErrSimulatorMissing, nodeModules)
	}
	if opts.StartTimeout == 0 {
		opts.StartTimeout = DefaultStartTimeout
	}
	if opts.StopGrace == 0 {
		opts.StopGrace = DefaultStopGrace
	}
	if opts.CacheSize == 0 {
		opts.CacheSize = DefaultCacheSize
	}
	e := &Evaluator{node: path, script: script, nodeModules: nodeModules, opts: opts,
		log: opts.Logger, cache: map[[32]byte]*entry{}}
	if e.log == nil {
		e.log = slog.Default()
	}
	c, err := startChild(ctx, path, script, nodeModules, opts.StartTimeout)
	if err != nil {
		return nil, err
	}
	e.child = c
	e.ctx, e.cancel = context.WithCancel(context.Background())
	return e, nil
}

// Close stops the process; requests in flight and later ones fail with ErrClosed.
func (e *Evaluator) Close() error {
	e.pmu.Lock()
	if e.closed {
		e.pmu.Unlock()
		return nil
	}
	e.closed = true
	c := e.child
	e.pmu.Unlock()
	e.cancel()
	c.stop(e.opts.StopGrace)
	return nil
}

// Stats returns the work done so far.
func (e *Evaluator) Stats() Stats {
	e.pmu.Lock()
	r := e.restarts
	e.pmu.Unlock()
	return Stats{Evaluations: e.evaluations.Load(), CacheHits: e.hits.Load(), Restarts: r}
}

// Authorize decides r: nil when allowed, a *identity.DeniedError when denied, an
// *identity.UnsupportedError when iam-simulate cannot decide it, another error when
// the evaluator cannot run. Every denial and refusal is logged as one line; every
// allowed request goes to the Recorder.
func (e *Evaluator) Authorize(ctx context.Context, r identity.Request) error {
	if r.Principal == nil {
		return errors.New("authorize: request has no principal")
	}
	d, err := e.Decide(ctx, r)
	return e.conclude(ctx, r.Principal.ARN, principalKey(r.Principal), r.Action, r.Resource, d, err, r.Principal.Role)
}

// Decide returns iam-simulate's decision on r without logging or recording it.
func (e *Evaluator) Decide(ctx context.Context, r identity.Request) (*Decision, error) {
	if r.Principal == nil {
		return nil, errors.New("decide: request has no principal")
	}
	p := r.Principal
	w := wireRequest{
		Principal: p.ARN, Action: r.Action, Resource: r.Resource,
		Account:        resourceAccount(r.Resource, p.Account),
		SessionPolicy:  p.SessionPolicy,
		ResourcePolicy: r.ResourcePolicy,
		Context:        merge(identity.PrincipalContext(p), r.Context),
	}
	for _, pol := range p.Policies() {
		w.IdentityPolicies = append(w.IdentityPolicies, wirePolicy{Name: pol.Name, Policy: pol.Document})
	}
	return e.decideWire(ctx, w, "")
}

// conclude turns a decision into Authorize's answer, logging and recording it; roles
// hold the policies the decision weighed.
func (e *Evaluator) conclude(ctx context.Context, principalARN, recordAs, action, resource string, d *Decision, err error, roles ...*identity.Role) error {
	if err != nil {
		var ue *identity.UnsupportedError
		if errors.As(err, &ue) {
			e.log.LogAttrs(ctx, slog.LevelWarn, "request refused: unsupported by the local stack",
				slog.String(LogPrincipal, principalARN), slog.String(LogAction, action),
				slog.String(LogResource, resource), slog.String(LogDetail, ue.Detail))
		}
		return err
	}
	if d.Allowed() {
		if e.opts.Recorder != nil {
			e.opts.Recorder.record(recordAs, action, resource, d.Allowing, roles...)
		}
		return nil
	}
	denied := &identity.DeniedError{Principal: principalARN, Action: action, Resource: resource,
		Explicit: d.Result == ExplicitlyDenied}
	attrs := []slog.Attr{slog.String(LogPrincipal, principalARN), slog.String(LogAction, action),
		slog.String(LogResource, resource), slog.Bool(LogExplicit, denied.Explicit)}
	if denied.Explicit && len(d.Denying) > 0 {
		denied.Statement = d.Denying[0].String()
		attrs = append(attrs, slog.String(LogStatement, denied.Statement))
	}
	if n, ok := nearest(d); ok {
		attrs = append(attrs, slog.String(LogWouldAllow, n.String()), slog.String(LogMismatch, n.Mismatch(d.Unexplained)))
	} else {
		attrs = append(attrs, slog.String(LogWouldAllow, "none: no Allow statement names the action"))
	}
	if allowing := d.Allowing; len(allowing) > 0 && !denied.Explicit {
		names := make([]string, len(allowing))
		for i, a := range allowing {
			names[i] = a.PolicyType + " " + a.String()
		}
		attrs = append(attrs, slog.String(LogAllowedBy, strings.Join(names, ", ")))
	}
	e.log.LogAttrs(ctx, slog.LevelInfo, "access denied", attrs...)
	return denied
}

// nearest picks the statement that would have allowed a denied request: one whose
// resource matched first (its condition failed), then any. A session or resource
// policy statement comes before an identity one when identity policies allowed it.
func nearest(d *Decision) (NearStatement, bool) {
	if len(d.Nearest) == 0 {
		return NearStatement{}, false
	}
	best := d.Nearest[0]
	score := func(n NearStatement) int {
		s := 0
		if n.ResourceMatch {
			s += 2
		}
		if n.ConditionMatch {
			s++
		}
		if len(d.IdentityAllowing()) > 0 && n.PolicyType != IdentityPolicy {
			s += 4
		}
		return s
	}
	for _, n := range d.Nearest[1:] {
		if score(n) > score(best) {
			best = n
		}
	}
	return best, true
}

// decideWire asks the process about w, through the cache.
func (e *Evaluator) decideWire(ctx context.Context, w wireRequest, resourcePolicyName string) (*Decision, error) {
	body, err := json.Marshal(w)
	if err != nil {
		return nil, fmt.Errorf("decide: %w", err)
	}
	key := sha256.Sum256(body)
	e.cmu.Lock()
	ent, hit := e.cache[key]
	if !hit {
		if len(e.cache) >= e.opts.CacheSize {
			e.pruneLocked()
		}
		ent = &entry{done: make(chan struct{})}
		e.cache[key] = ent
	}
	e.cmu.Unlock()
	if hit {
		e.hits.Add(1)
	} else {
		// The evaluation belongs to the Evaluator, not to this caller: a caller that
		// gives up does not fail the others waiting for the same answer.
		go e.fill(key, ent, body)
	}
	select {
	case <-ent.done:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if ent.err != nil {
		return nil, ent.err
	}
	if ent.ans.Error != "" {
		return nil, &identity.UnsupportedError{Action: w.Action, Resource: w.Resource, Detail: "iam-simulate: " + ent.ans.Error}
	}
	switch ent.ans.Result {
	case Allowed, ExplicitlyDenied, ImplicitlyDenied:
	default:
		return nil, fmt.Errorf("decide: iam-simulate answered result %q", ent.ans.Result)
	}
	return ent.ans.decision(resourcePolicyName), nil
}

func (e *Evaluator) fill(key [32]byte, ent *entry, body []byte) {
	ans, err := e.evaluate(body)
	if err != nil {
		// Not a decision: forget it, so a later request tries again.
		e.cmu.Lock()
		if e.cache[key] == ent {
			delete(e.cache, key)
		}
		e.cmu.Unlock()
		ent.err = err
	} else {
		ent.ans = ans
	}
	close(ent.done)
}

// pruneLocked drops decided entries; those in flight stay.
func (e *Evaluator) pruneLocked() {
	for k, ent := range e.cache {
		select {
		case <-ent.done:
			delete(e.cache, k)
		default:
		}
	}
}

// evaluate sends body to the process, restarting it once if it died.
func (e *Evaluator) evaluate(body []byte) (*wireAnswer, error) {
	for {
		c, err := e.running()
		if err != nil {
			return nil, err
		}
		id := e.nextID.Add(1)
		line := make([]byte, 0, len(body)+24)
		line = append(line, `{"id":`...)
		line = strconv.AppendUint(line, id, 10)
		line = append(line, ',')
		line = append(line, body[1:]...)
		line = append(line, '\n')
		e.evaluations.Add(1)
		ans, err := c.call(e.ctx, id, line)
		if err == nil {
			return ans, nil
		}
		if e.ctx.Err() != nil {
			return nil, ErrClosed
		}
		if !errors.Is(err, errDied) {
			return nil, err
		}
		if err := e.restart(c, err); err != nil {
			return nil, err
		}
	}
}

func (e *Evaluator) running() (*child, error) {
	e.pmu.Lock()
	defer e.pmu.Unlock()
	switch {
	case e.closed:
		return nil, ErrClosed
	case e.failed != nil:
		return nil, e.failed
	}
	return e.child, nil
}

// restart replaces dead with a new process, once in the Evaluator's life.
func (e *Evaluator) restart(dead *child, cause error) error {
	e.pmu.Lock()
	defer e.pmu.Unlock()
	switch {
	case e.closed:
		return ErrClosed
	case e.failed != nil:
		return e.failed
	case e.child != dead:
		return nil // another request restarted it already
	case e.restarts >= 1:
		e.failed = fmt.Errorf("policy evaluator died again after its restart, every request is refused: %w", cause)
		e.log.Error("policy evaluator died again; not restarting", LogDetail, cause.Error())
		return e.failed
	}
	e.log.Warn("policy evaluator died; restarting it once", LogDetail, cause.Error())
	dead.stop(time.Second)
	c, err := startChild(e.ctx, e.node, e.script, e.nodeModules, e.opts.StartTimeout)
	if err != nil {
		e.failed = fmt.Errorf("policy evaluator died and could not restart: %w", err)
		return e.failed
	}
	e.child = c
	e.restarts++
	return nil
}

// merge returns base overlaid with over (over's keys win).
func merge(base, over map[string][]string) map[string][]string {
	out := make(map[string][]string, len(base)+len(over))
	for k, v := range base {
		out[k] = v
	}
	for k, v := range over {
		out[k] = v
	}
	return out
}

// resourceAccount is the account owning arn: its account field, or fallback for
// ARNs without one (S3) and for "*".
func resourceAccount(arn, fallback string) string {
	parts := strings.SplitN(arn, ":", 6)
	if len(parts) == 6 && parts[4] != "" && parts[4] != "*" {
		return parts[4]
	}
	return fallback
}

// principalKey is what the Recorder files a principal's requests under: its role's
// name, or its own ARN.
func principalKey(p *identity.Principal) string {
	if p.Role != nil {
		return p.Role.Name
	}
	return p.ARN
}
