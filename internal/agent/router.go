package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"

	"github.com/sandgate/sandgate/internal/agentapi"
	"github.com/sandgate/sandgate/internal/logging"
	"github.com/sandgate/sandgate/internal/state"
	"github.com/sandgate/sandgate/internal/upstream"
)

// DefaultMaxHeld bounds the frames held while the inbox drains; beyond it the API
// answers rate_limited.
const DefaultMaxHeld = 4096

// phase is where the router is in the sandbox's life.
type phase int

const (
	phaseDraining phase = iota // the inbox is being queued: API events are held
	phaseServing               // API events go straight to the connections
	phaseStopping              // no new frames: agentapi.ErrStopping
)

type eventKind int

const (
	evOpen eventKind = iota
	evFrame
	evClose
)

// event is an API call held while the inbox drains.
type event struct {
	kind eventKind
	id   string
	data []byte
}

// router implements agentapi.Handler: one upstream.Conn per client connection, frames
// queued in the order the API accepted them, inbox frames before any new one.
type router struct {
	userID  string
	url     string // the workload's WebSocket address
	log     *slog.Logger
	limiter *limiter
	// touch records client activity (idle detection).
	touch func()
	// poster returns the function that posts the workload's frames to connection id.
	poster func(id string) upstream.Poster
	// ended is told about connections that ended on their own (the workload closed
	// them or could not be reached), to close the client's side.
	ended   func(id string, err error)
	healthy func() bool
	maxHeld int

	mu    sync.Mutex
	phase phase
	held  []event
	conns map[string]*upstream.Conn
	wg    sync.WaitGroup // connection watchers

	delivered atomic.Int64
}

var _ agentapi.Handler = (*router)(nil)

// validConnectionID accepts API Gateway's connection ids (base64-like, 16 characters
// today) and nothing that could be mistaken for another path or header.
func validConnectionID(id string) bool {
	if id == "" || len(id) > 128 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '=', c == '-', c == '_', c == '+':
		default:
			return false
		}
	}
	return true
}

// Open starts the connection's upstream, so the workload can greet the client.
func (r *router) Open(_ context.Context, id string) error {
	if !validConnectionID(id) {
		return fmt.Errorf("%w: connection id", agentapi.ErrBadRequest)
	}
	r.touch()
	r.mu.Lock()
	defer r.mu.Unlock()
	switch r.phase {
	case phaseStopping:
		return agentapi.ErrStopping
	case phaseDraining:
		return r.holdLocked(event{kind: evOpen, id: id})
	}
	_, err := r.connLocked(id)
	return err
}

// Deliver queues one client frame for the connection's upstream.
func (r *router) Deliver(_ context.Context, id string, frame []byte) error {
	if !validConnectionID(id) {
		return fmt.Errorf("%w: connection id", agentapi.ErrBadRequest)
	}
	if len(frame) > agentapi.MaxFrameBytes {
		return agentapi.ErrTooLarge
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.phase == phaseStopping {
		return agentapi.ErrStopping
	}
	if !r.limiter.allow() {
		return agentapi.ErrRateLimited
	}
	r.touch()
	if r.phase == phaseDraining {
		return r.holdLocked(event{kind: evFrame, id: id, data: frame})
	}
	return r.sendLocked(id, frame, nil)
}

// Close ends the connection's upstream once its queued frames are written.
func (r *router) Close(_ context.Context, id string) error {
	if !validConnectionID(id) {
		return fmt.Errorf("%w: connection id", agentapi.ErrBadRequest)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.phase == phaseDraining {
		return r.holdLocked(event{kind: evClose, id: id})
	}
	if c := r.conns[id]; c != nil {
		c.Close()
	}
	return nil
}

// Healthy reports whether the sandbox still serves.
func (r *router) Healthy() bool { return r.healthy() }

func (r *router) holdLocked(ev event) error {
	if len(r.held) >= r.maxHeld {
		return agentapi.ErrRateLimited
	}
	r.held = append(r.held, ev)
	return nil
}

// sendLocked queues data on the connection, replacing an upstream that has ended.
func (r *router) sendLocked(id string, data []byte, written func(error)) error {
	for range 2 {
		c, err := r.connLocked(id)
		if err != nil {
			return err
		}
		err = c.Send(data, written)
		switch {
		case err == nil:
			r.delivered.Add(1)
			return nil
		case errors.Is(err, upstream.ErrQueueFull):
			r.log.Warn("connection queue full; frame refused", logging.ConnectionID, id)
			return fmt.Errorf("%w: %w", agentapi.ErrRateLimited, err)
		case errors.Is(err, upstream.ErrClosed):
			// Closing or ended: a frame that arrives after the close starts a new
			// upstream rather than being lost.
			delete(r.conns, id)
		default:
			return err
		}
	}
	return fmt.Errorf("%w: connection %s keeps closing", agentapi.ErrUnavailable, id)
}

// connLocked returns the connection's upstream, opening it on first use.
func (r *router) connLocked(id string) (*upstream.Conn, error) {
	if c := r.conns[id]; c != nil {
		return c, nil
	}
	if r.phase == phaseStopping {
		return nil, agentapi.ErrStopping
	}
	log := r.log.With(logging.ConnectionID, id)
	c := upstream.Open(upstream.Config{
		URL:    r.url,
		Header: http.Header{upstream.HeaderConnection: {id}, upstream.HeaderUser: {r.userID}},
		Post:   r.poster(id),
		Log:    log,
	})
	r.conns[id] = c
	r.wg.Add(1)
	go r.watch(id, c, log)
	return c, nil
}

// watch forgets a connection once it ends and reports an end the client did not ask for.
func (r *router) watch(id string, c *upstream.Conn, log *slog.Logger) {
	defer r.wg.Done()
	<-c.Done()
	r.mu.Lock()
	if r.conns[id] == c {
		delete(r.conns, id)
	}
	stopping := r.phase == phaseStopping
	r.mu.Unlock()
	err := c.Err()
	switch {
	case err == nil, errors.Is(err, upstream.ErrClosed), errors.Is(err, upstream.ErrGone):
		log.Debug("connection ended")
	case stopping:
		log.Info("connection ended while stopping", logging.Error, err.Error())
	default:
		log.Warn("connection ended by the workload side", logging.Error, err.Error())
		r.ended(id, err)
	}
}

// drain queues the inbox, in order, ahead of everything held meanwhile; ack is called
// for each item once it has been written to its upstream.
func (r *router) drain(items []state.InboxItem, ack func(state.InboxItem)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, it := range items {
		if !validConnectionID(it.ConnectionID) {
			r.log.Warn("inbox item for an invalid connection id; left in the inbox", logSeq, it.Seq)
			continue
		}
		err := r.sendLocked(it.ConnectionID, it.Payload, func(err error) {
			if err == nil {
				ack(it)
				return
			}
			r.log.Warn("inbox frame not delivered; left in the inbox", logging.ConnectionID, it.ConnectionID, logSeq, it.Seq, logging.Error, err.Error())
		})
		if err != nil {
			r.log.Warn("inbox frame not queued; left in the inbox", logging.ConnectionID, it.ConnectionID, logSeq, it.Seq, logging.Error, err.Error())
		}
	}
}

// serve replays what was held during the drain, in arrival order, and from then on
// passes API calls straight through.
func (r *router) serve() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.phase != phaseDraining {
		return
	}
	r.phase = phaseServing
	r.replayLocked()
}

// replayLocked queues what was held during the drain on the connections, in arrival
// order, and forgets it. It must run before the phase becomes phaseStopping, which
// refuses to open an upstream.
func (r *router) replayLocked() {
	for _, ev := range r.held {
		var err error
		switch ev.kind {
		case evOpen:
			_, err = r.connLocked(ev.id)
		case evFrame:
			err = r.sendLocked(ev.id, ev.data, nil)
		case evClose:
			if c := r.conns[ev.id]; c != nil {
				c.Close()
			}
		}
		if err != nil {
			r.log.Warn("held frame not queued", logging.ConnectionID, ev.id, logging.Error, err.Error())
		}
	}
	r.held = nil
}

// ensure opens upstreams for connections that have none yet (the user's connections
// at ready), so the workload greets each.
func (r *router) ensure(ids []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, id := range ids {
		if validConnectionID(id) {
			if _, err := r.connLocked(id); err != nil {
				r.log.Warn("connection not opened", logging.ConnectionID, id, logging.Error, err.Error())
			}
		}
	}
}

// stopTaking makes the API refuse new frames with agentapi.ErrStopping. Frames still
// held (the stop came before the drain finished: the inbox could not be read, or
// SIGTERM) were answered 202 once MarkReady had published the endpoint, so they are
// queued on their connections first and flush writes them to the workload like any
// other accepted frame. Inbox items not yet read stay in the inbox for the next
// sandbox, so on such a stop they reach a workload after these newer frames: late
// rather than lost.
func (r *router) stopTaking() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.phase == phaseDraining {
		r.replayLocked()
	}
	r.phase = phaseStopping
}

// snapshot returns the open connections.
func (r *router) snapshot() map[string]*upstream.Conn {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]*upstream.Conn, len(r.conns))
	for id, c := range r.conns {
		out[id] = c
	}
	return out
}

// flush waits until every accepted frame has been written to the workload (or given
// up), or ctx ends.
func (r *router) flush(ctx context.Context) {
	var wg sync.WaitGroup
	for id, c := range r.snapshot() {
		wg.Go(func() {
			if err := c.Flush(ctx); err != nil {
				r.log.Warn("frames not flushed to the workload", logging.ConnectionID, id, logging.Error, err.Error())
			}
		})
	}
	wg.Wait()
}

// forget closes the upstream of a connection whose client is gone.
func (r *router) forget(id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if c := r.conns[id]; c != nil {
		c.Close()
	}
}

// abort ends every upstream at once and waits until none can post any more.
func (r *router) abort() {
	r.mu.Lock()
	r.phase = phaseStopping
	conns := make([]*upstream.Conn, 0, len(r.conns))
	for _, c := range r.conns {
		conns = append(conns, c)
	}
	r.mu.Unlock()
	for _, c := range conns {
		c.Abort()
	}
	for _, c := range conns {
		<-c.Done()
	}
	r.wg.Wait()
}

// open returns how many upstreams are open, for tests and logs.
func (r *router) open() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.conns)
}
