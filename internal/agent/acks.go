package agent

import (
	"context"
	"sync"
	"time"

	"github.com/sandgate/sandgate/internal/logging"
	"github.com/sandgate/sandgate/internal/state"
)

// DefaultAckAttempts is how often one inbox item's Ack is tried; an item never acked
// stays in the inbox until its TTL and is delivered again by the next start.
const DefaultAckAttempts = 5

// ackQueue deletes delivered inbox items one at a time, in the order they were
// written to the workload, off the connections' write paths. Acks of one user all
// update the inbox counter, so running them in parallel would only make them conflict.
type ackQueue struct {
	s *sandbox

	mu      sync.Mutex
	items   []state.InboxItem
	closed  bool
	dropped bool
	wake    chan struct{}
	done    chan struct{}
}

func newAckQueue(s *sandbox) *ackQueue {
	q := &ackQueue{s: s, wake: make(chan struct{}, 1), done: make(chan struct{})}
	go q.run()
	return q
}

// push queues it for deletion; it never blocks.
func (q *ackQueue) push(it state.InboxItem) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return
	}
	q.items = append(q.items, it)
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

func (q *ackQueue) run() {
	defer close(q.done)
	for {
		q.mu.Lock()
		if q.dropped || (q.closed && len(q.items) == 0) {
			q.mu.Unlock()
			return
		}
		if len(q.items) == 0 {
			q.mu.Unlock()
			<-q.wake
			continue
		}
		it := q.items[0]
		q.items = q.items[1:]
		q.mu.Unlock()
		q.ack(it)
	}
}

func (q *ackQueue) ack(it state.InboxItem) {
	s := q.s
	delay := 100 * time.Millisecond
	for attempt := 1; ; attempt++ {
		ctx, cancel := context.WithTimeout(context.Background(), DefaultPostTimeout)
		if s.holder.Fence(ctx) != nil {
			cancel()
			return
		}
		err := s.store.Ack(ctx, it)
		cancel()
		if err == nil {
			return
		}
		if attempt == DefaultAckAttempts {
			s.log.Warn("inbox ack failed; the frame may be delivered again by the next start",
				logging.ConnectionID, it.ConnectionID, logSeq, it.Seq, logging.Error, err.Error())
			return
		}
		time.Sleep(delay)
		delay *= 2
	}
}

// close waits, at most until ctx ends, for the queued acks to be written.
func (q *ackQueue) close(ctx context.Context) {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
	select {
	case <-q.done:
	case <-ctx.Done():
		q.drop()
	}
}

// drop abandons the queued acks (the lease is lost: no more writes).
func (q *ackQueue) drop() {
	q.mu.Lock()
	q.closed, q.dropped = true, true
	q.items = nil
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}
