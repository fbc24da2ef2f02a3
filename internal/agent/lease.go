package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/sandgate/sandgate/internal/logging"
	"github.com/sandgate/sandgate/internal/state"
)

// holder is the lease this sandbox holds: renewed by heartbeats, checked cheaply
// before every write (the fence), and given up for good on the first sign that
// another sandbox may own the user's data.
type holder struct {
	store    LeaseStore
	every    time.Duration // heartbeat interval
	retry    time.Duration // delay after a failed heartbeat
	margin   time.Duration // step down this long before the deadline
	activity func() time.Time
	now      func() time.Time
	log      *slog.Logger

	mu    sync.Mutex
	lease state.Lease

	lostOnce sync.Once
	lost     chan struct{}
	lostErr  error
}

func newHolder(store LeaseStore, l state.Lease, every, margin time.Duration, activity func() time.Time, now func() time.Time, log *slog.Logger) *holder {
	return &holder{
		store: store, every: every, retry: min(every/4, time.Second), margin: margin,
		activity: activity, now: now, log: log, lease: l, lost: make(chan struct{}),
	}
}

// Lease returns the lease as last renewed.
func (h *holder) Lease() state.Lease {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.lease
}

// renewed records a lease returned by Heartbeat or MarkReady, keeping the later
// deadline when two renewals cross.
func (h *holder) renewed(l state.Lease) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if l.Token == h.lease.Token && l.Deadline.After(h.lease.Deadline) {
		h.lease = l
	}
}

// Fence allows a write only while the lease is surely still ours: not lost, and the
// deadline (less the margin, for clock skew and a slow request) not passed. It costs
// no request, so it is called before every write to the bucket, the table or the
// management API.
func (h *holder) Fence(context.Context) error {
	select {
	case <-h.lost:
		return h.lostErr
	default:
	}
	l := h.Lease()
	if !h.now().Before(l.Deadline.Add(-h.margin)) {
		h.stepDown(fmt.Errorf("lease not renewed before %s", l.Deadline.UTC().Format(time.RFC3339Nano)))
		return h.lostErr
	}
	return nil
}

// Lost is closed once the lease is lost or given up.
func (h *holder) Lost() <-chan struct{} { return h.lost }

// isLost reports whether the lease is lost.
func (h *holder) isLost() bool {
	select {
	case <-h.lost:
		return true
	default:
		return false
	}
}

// Err says why the lease was lost (it matches ErrLeaseLost); valid after Lost.
func (h *holder) Err() error { <-h.lost; return h.lostErr }

// stepDown gives the lease up: from now on every Fence refuses.
func (h *holder) stepDown(cause error) {
	h.lostOnce.Do(func() {
		h.lostErr = fmt.Errorf("%w: %w", ErrLeaseLost, cause)
		h.log.Error("lease lost; stopping without writing", logging.Error, cause.Error())
		close(h.lost)
	})
}

// run heartbeats every h.every until ctx ends or the lease is lost. A heartbeat that
// fails for a transient reason is retried; if none succeeds before the deadline less
// the margin, the holder steps down then, before another sandbox could take over.
func (h *holder) run(ctx context.Context) {
	next := h.now().Add(h.every)
	for {
		// Wake for the next heartbeat, or when the fence closes, whichever is first.
		wait := min(next.Sub(h.now()), h.Lease().Deadline.Add(-h.margin).Sub(h.now()))
		t := time.NewTimer(max(wait, 0))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-h.lost:
			t.Stop()
			return
		case <-t.C:
		}
		if h.Fence(ctx) != nil {
			return
		}
		if h.now().Before(next) {
			continue
		}
		l := h.Lease()
		// A renewal answered after the fence would close is worth nothing.
		callCtx, cancel := context.WithDeadline(ctx, l.Deadline.Add(-h.margin))
		nl, err := h.store.Heartbeat(callCtx, l, h.activity())
		cancel()
		switch {
		case err == nil:
			h.renewed(nl)
			next = h.now().Add(h.every)
		case errors.Is(err, state.ErrLeaseLost), errors.Is(err, state.ErrState):
			h.stepDown(err)
			return
		case ctx.Err() != nil:
			return
		default:
			h.log.Warn("heartbeat failed; retrying", logging.Error, err.Error())
			next = h.now().Add(h.retry)
		}
	}
}
