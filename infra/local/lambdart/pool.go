package lambdart

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/sandgate/sandgate/internal/logging"
)

// pool holds one function's processes: at most fn.MaxConcurrency, each serving one
// invocation at a time, idle ones reused (warm starts).
type pool struct {
	rt    *Runtime
	fn    Function
	log   *slog.Logger
	slots chan struct{}
	url   *funcURL // the function URL; nil without one

	mu     sync.Mutex
	inits  []time.Duration // each process's init, in the order they finished it
	idle   []*instance
	all    map[*instance]struct{}
	closed bool
	// reserved is the function's reserved concurrency (SetReservedConcurrency); nil
	// when none is set.
	reserved *int
}

func (p *pool) invoke(ctx context.Context, payload []byte) ([]byte, error) {
	release, err := p.admit()
	if err != nil {
		return nil, err
	}
	defer release()
	select {
	case p.slots <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("invoke %s: wait for a free process: %w", p.fn.Name, ctx.Err())
	case <-p.rt.ctx.Done():
		return nil, ErrClosed
	}
	defer func() { <-p.slots }()

	inv := &invocation{
		id:       newRequestID(),
		payload:  payload,
		deadline: time.Now().Add(p.fn.Timeout),
		done:     make(chan outcome, 1),
	}
	start := time.Now()
	var out outcome
	for {
		inst, err := p.get()
		if err != nil {
			return nil, err
		}
		var healthy bool
		out, healthy = inst.run(ctx, inv)
		p.put(inst, healthy)
		if !errors.Is(out.err, errStale) {
			break
		}
	}
	if out.err != nil && p.rt.isClosed() {
		var fe *FunctionError
		if !errors.As(out.err, &fe) || !errors.Is(fe, ErrHandler) {
			return nil, ErrClosed
		}
	}
	p.log.Debug("invoked", logging.RequestID, inv.id, logging.Duration, time.Since(start).Milliseconds(), "ok", out.err == nil)
	return out.body, out.err
}

// get returns an idle live process or starts a new one; the caller holds a slot, so
// the number of processes never exceeds the limit.
func (p *pool) get() (*instance, error) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil, ErrClosed
	}
	for len(p.idle) > 0 {
		inst := p.idle[len(p.idle)-1]
		p.idle = p.idle[:len(p.idle)-1]
		switch {
		case inst.exited():
			delete(p.all, inst)
		case !p.outlasts(inst.expires):
			p.retireLocked(inst)
		default:
			p.mu.Unlock()
			return inst, nil
		}
	}
	p.mu.Unlock()

	inst, err := startInstance(p)
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		inst.stop(0)
		return nil, ErrClosed
	}
	p.all[inst] = struct{}{}
	return inst, nil
}

func (p *pool) recordInit(d time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.inits = append(p.inits, d)
}

func (p *pool) put(inst *instance, healthy bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if healthy && !p.closed && !inst.exited() {
		if !p.outlasts(inst.expires) {
			p.retireLocked(inst)
			return
		}
		p.idle = append(p.idle, inst)
		return
	}
	// An unhealthy process was already stopped by run.
	delete(p.all, inst)
}

// retireLocked stops an idle process whose credentials are about to expire, as
// Lambda retires an execution environment; the pool owns it until it has exited, so
// Close waits for it too. The caller holds p.mu.
func (p *pool) retireLocked(inst *instance) {
	p.log.Debug("process retired: its credentials expire", "pid", inst.proc.Pid(),
		"expires", inst.expires.UTC().Format(time.RFC3339))
	go func() {
		inst.stop(p.rt.StopGrace)
		p.mu.Lock()
		delete(p.all, inst)
		p.mu.Unlock()
	}()
}

// closeAll marks the pool closed and returns every process it still owns.
func (p *pool) closeAll() []*instance {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	out := make([]*instance, 0, len(p.all))
	for inst := range p.all {
		out = append(out, inst)
	}
	p.idle = nil
	return out
}
