package message

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/aws/aws-lambda-go/events"

	"github.com/sandgate/sandgate/internal/agentapi"
	"github.com/sandgate/sandgate/internal/ensure"
	"github.com/sandgate/sandgate/internal/frames"
	"github.com/sandgate/sandgate/internal/logging"
	"github.com/sandgate/sandgate/internal/metrics"
	"github.com/sandgate/sandgate/internal/notice"
	"github.com/sandgate/sandgate/internal/relay"
	"github.com/sandgate/sandgate/internal/state"
	"github.com/sandgate/sandgate/internal/wsroute"
)

// Log keys of this package; the shared ones come from internal/logging.
const (
	logQueued     = "queued"     // frames in the inbox with this one
	logFrameType  = "frameType"  // a platform frame's type
	logGeneration = "generation" // a sandbox's lease generation
	// logAgentRefusal is an agent's refusal of a frame, at DEBUG: the answer to the
	// sender, if any, carries logging.Reason.
	logAgentRefusal = "agentRefusal"
)

// Store is the part of the state store the Handler uses.
type Store interface {
	Get(ctx context.Context, userID string) (*state.Sandbox, error)
	Enqueue(ctx context.Context, userID, connectionID string, payload []byte) (state.InboxItem, error)
	RequestRestart(ctx context.Context, userID string, generation int64) (bool, error)
	TellStarting(ctx context.Context, userID, connectionID string, generation int64) (bool, error)
}

// Ensurer ensures a user's sandbox; *notice.Ensurer is one, which asks the Connect
// function (this function may not start tasks). A RUNNING result need not carry the
// agent's address and token: the Handler reads the record for them.
type Ensurer interface {
	Ensure(ctx context.Context, userID string) (ensure.Result, error)
}

// Agent is the part of the agent API client the Handler uses.
type Agent interface {
	Deliver(ctx context.Context, t agentapi.Target, connectionID string, frame []byte) error
}

// Poster posts platform frames to a connection and closes one; *relay.Relay is one.
type Poster interface {
	Post(ctx context.Context, userID, connectionID string, data []byte) error
	Close(ctx context.Context, connectionID string) error
}

// Notifier sends notices to the Connect function; *notice.Notifier is one.
type Notifier interface {
	Send(ctx context.Context, n notice.Notice) error
}

var (
	_ Store    = (*state.Store)(nil)
	_ Ensurer  = (*notice.Ensurer)(nil)
	_ Agent    = (*agentapi.Client)(nil)
	_ Poster   = (*relay.Relay)(nil)
	_ Notifier = (*notice.Notifier)(nil)
)

// Handler serves the Message function. Its answer to API Gateway is always 200 but for
// events without an authorized user: a non-2xx only makes API Gateway send the client
// its own generic error frame. Every frame it does not deliver or queue is answered
// with a sandgate.error frame to the sender; nothing is dropped silently.
type Handler struct {
	Store    Store
	Ensurer  Ensurer
	Agent    Agent
	Relay    Poster
	Notifier Notifier
	Log      *slog.Logger
	// Now is the clock leases are judged by (time.Now when nil).
	Now func() time.Time
	// MaxFrameBytes bounds one frame (agentapi.MaxFrameBytes, API Gateway's limit).
	MaxFrameBytes int
	// RestartWait bounds a restart notice's wait for a stopping sandbox
	// (notice.DefaultRestartWait).
	RestartWait time.Duration
	// RecordTTL is how long a RUNNING record is reused for the user's next frames
	// (DefaultRecordTTL); negative reads it for every frame.
	RecordTTL time.Duration
	// FrameRate is the frames per second one user may send, FrameBurst how many at once
	// (twice the rate when zero), checked in this process before anything else is done
	// with a frame: no read, no write, no agent call, and the sender answered at most
	// once a second. Zero turns it off (the agent's own limit remains).
	FrameRate  float64
	FrameBurst int
	// RateLimitCloseAfter is how many of one connection's frames a process refuses for
	// the rate, without a pause of RateLimitWindow, before it closes the connection
	// (zero: never).
	RateLimitCloseAfter int
	// Metrics counts closes for the rate (nil: none).
	Metrics *metrics.Emitter

	records records
	limits  limiter
}

func (h *Handler) now() time.Time {
	if h.Now != nil {
		return h.Now()
	}
	return time.Now()
}

// frame is one frame being handled.
type frame struct {
	wsroute.Caller
	data []byte
	log  *slog.Logger
}

// Handle serves one $default event.
func (h *Handler) Handle(ctx context.Context, ev events.APIGatewayWebsocketProxyRequest) (events.APIGatewayProxyResponse, error) {
	rc := ev.RequestContext
	caller, err := wsroute.Identify(rc)
	if err == nil && rc.EventType != "MESSAGE" {
		err = fmt.Errorf("not a message event: route %q, event type %q", rc.RouteKey, rc.EventType)
	}
	if err != nil {
		h.Log.ErrorContext(ctx, "frame refused", logging.ConnectionID, rc.ConnectionID, logging.Error, err.Error())
		return wsroute.Refused(), nil
	}
	f := &frame{Caller: caller, data: []byte(ev.Body),
		log: h.Log.With(logging.UserID, caller.UserID, logging.ConnectionID, caller.ConnectionID)}
	if ev.IsBase64Encoded {
		if f.data, err = base64.StdEncoding.DecodeString(ev.Body); err != nil {
			f.log.ErrorContext(ctx, "frame refused", logging.Error, "body is not base64: "+err.Error())
			return wsroute.Refused(), nil
		}
	}
	max := h.MaxFrameBytes
	if max <= 0 {
		max = agentapi.MaxFrameBytes
	}
	if len(f.data) > max {
		h.refuse(ctx, f, frames.ReasonTooLarge, fmt.Errorf("%d bytes, limit %d", len(f.data), max))
		return wsroute.OK(), nil
	}
	if h.FrameRate > 0 && !h.limits.allow(f.UserID, h.FrameRate, h.frameBurst(), h.now()) {
		h.rateLimited(ctx, f, errFrameRate)
		return wsroute.OK(), nil
	}
	if h.deliverCached(ctx, f) {
		return wsroute.OK(), nil
	}
	sb, err := h.Store.Get(ctx, caller.UserID)
	switch {
	case errors.Is(err, state.ErrNotFound):
		h.ensureAndQueue(ctx, f)
	case err != nil:
		h.refuse(ctx, f, frames.ReasonUnavailable, err)
	default:
		if ttl := h.recordTTL(); sb.State == state.Running && ttl > 0 {
			h.records.put(sb, h.now().Add(ttl))
		}
		h.route(ctx, f, sb)
	}
	return wsroute.OK(), nil
}

func (h *Handler) recordTTL() time.Duration {
	if h.RecordTTL == 0 {
		return DefaultRecordTTL
	}
	return h.RecordTTL
}

// deliverCached delivers f with the user's cached RUNNING record, and reports whether
// f is dealt with. Any answer but acceptance or a refusal of the frame itself drops the
// record: the caller reads it again and decides from what DynamoDB says.
func (h *Handler) deliverCached(ctx context.Context, f *frame) bool {
	sb := h.records.get(f.UserID, h.now())
	if sb == nil {
		return false
	}
	err := h.Agent.Deliver(ctx, target(sb), f.ConnectionID, f.data)
	if err == nil {
		f.log.DebugContext(ctx, "frame delivered")
		return true
	}
	if reason, ok := frameRefusal(err); ok {
		h.refuseFrame(ctx, f, reason, err)
		return true
	}
	h.records.drop(f.UserID)
	if errors.Is(err, agentapi.ErrNoAnswer) {
		// The agent may have taken the frame: sending it again could deliver it twice.
		h.refuse(ctx, f, frames.ReasonNoAnswer, err)
		return true
	}
	f.log.DebugContext(ctx, "cached record stale; reading it again", logging.Error, err.Error())
	return false
}

func target(sb *state.Sandbox) agentapi.Target {
	return agentapi.Target{Endpoint: sb.Endpoint, Token: sb.GatewayToken, UserID: sb.UserID}
}

// frameRefusal names the agent's refusals of the frame itself, which another sandbox
// would refuse too.
func frameRefusal(err error) (string, bool) {
	switch {
	case errors.Is(err, agentapi.ErrRateLimited):
		return frames.ReasonRateLimited, true
	case errors.Is(err, agentapi.ErrTooLarge):
		return frames.ReasonTooLarge, true
	}
	return "", false
}

// route sends f where the record says: the warm path (one read, no write) when the
// sandbox runs.
func (h *Handler) route(ctx context.Context, f *frame, sb *state.Sandbox) {
	now := h.now()
	switch {
	case sb.State == state.Running:
		h.deliver(ctx, f, sb, true)
	case sb.Live(now) && sb.State == state.Starting:
		h.queue(ctx, f, sb, state.Starting, true)
	case sb.Live(now) && sb.State == state.Stopping:
		h.queue(ctx, f, sb, state.Stopping, true)
	case sb.State == state.Purging && !sb.Expired(now):
		h.refuse(ctx, f, frames.ReasonPurging, state.ErrPurging)
	default: // stopped, or a dead holder
		h.ensureAndQueue(ctx, f)
	}
}

// deliver posts f to the agent of sb. fallback allows one more way round (queue, or
// take over a dead sandbox) when the agent does not take it; without it, the sender
// is told.
func (h *Handler) deliver(ctx context.Context, f *frame, sb *state.Sandbox, fallback bool) {
	err := h.Agent.Deliver(ctx, target(sb), f.ConnectionID, f.data)
	reason, refused := frameRefusal(err)
	if err != nil && !refused {
		h.records.drop(f.UserID)
	}
	switch {
	case err == nil:
		f.log.DebugContext(ctx, "frame delivered")
	case refused:
		h.refuseFrame(ctx, f, reason, err)
	case !fallback && errors.Is(err, agentapi.ErrNoAnswer):
		h.refuse(ctx, f, frames.ReasonNoAnswer, err)
	case !fallback:
		h.refuse(ctx, f, frames.ReasonUnavailable, err)
	case errors.Is(err, agentapi.ErrStopping):
		// The agent is syncing and stopping: keep the frame for the next sandbox.
		h.queue(ctx, f, sb, state.Stopping, false)
	case sb.Expired(h.now()):
		// No answer and no heartbeat: the agent is dead, and fenced: whatever it took
		// it cannot act on. Take over and queue.
		f.log.WarnContext(ctx, "agent dead; taking over", logging.Error, err.Error(), logging.TaskARN, sb.TaskARN)
		h.ensureAndQueue(ctx, f)
	case errors.Is(err, agentapi.ErrNoAnswer):
		// The lease is alive and the agent took the frame but did not answer: it may be
		// busy. Sending it again could deliver it twice; the sender decides.
		h.refuse(ctx, f, frames.ReasonNoAnswer, err)
	default:
		// Unreachable, but the lease is alive: the agent may be partitioned. The frame
		// cannot be queued (the inbox refuses a RUNNING sandbox's frames, which would wait
		// for a drain that already happened), so the sender retries.
		h.refuse(ctx, f, frames.ReasonUnavailable, err)
	}
}

// ensureAndQueue ensures the sandbox, then queues f (or delivers it, if the sandbox
// is running by now). The Connect function runs the ensure: it logs it and counts a
// refusal in its metrics, so this function only tells the sender.
func (h *Handler) ensureAndQueue(ctx context.Context, f *frame) {
	res, err := h.Ensurer.Ensure(notice.WithOrigin(ctx, f.ConnectionID, f.Stage), f.UserID)
	if err != nil {
		h.refuse(ctx, f, ensure.Reason(err), err)
		return
	}
	if res.Started {
		f.log.InfoContext(ctx, "sandbox starting for a frame", logGeneration, res.Sandbox.Generation)
	}
	switch res.State() {
	case state.Running:
		// Another caller's sandbox became ready meanwhile; the answer carries no gateway
		// token, so read the record for the agent.
		sb, err := h.Store.Get(ctx, f.UserID)
		if err != nil {
			h.refuse(ctx, f, frames.ReasonUnavailable, err)
			return
		}
		h.deliver(ctx, f, sb, false)
	case state.Stopping:
		h.queue(ctx, f, res.Sandbox, state.Stopping, false)
	default:
		h.queue(ctx, f, res.Sandbox, state.Starting, false)
	}
}

// queue appends f to the inbox of sb's user. The sender of the first frame of an empty
// inbox hears `starting`, once per start, not once per frame. While sb stops, the first
// frame to ask after its generation (recorded in DynamoDB, so whatever the inbox held
// before) hears `stopping` and requests the restart that will deliver the queue.
func (h *Handler) queue(ctx context.Context, f *frame, sb *state.Sandbox, st state.State, fallback bool) {
	it, err := h.Store.Enqueue(ctx, f.UserID, f.ConnectionID, f.data)
	var running *state.RunningError
	switch {
	case err == nil:
		f.log.DebugContext(ctx, "frame queued", logQueued, it.Queued, logging.State, string(st))
		if st == state.Stopping {
			first, rerr := h.Store.RequestRestart(ctx, f.UserID, sb.Generation)
			if rerr != nil {
				f.log.WarnContext(ctx, "restart request not recorded", logging.Error, rerr.Error())
				first = it.Queued == 1
			}
			if first {
				h.post(ctx, f, frames.Status(frames.Stopping))
				h.requestRestart(ctx, f)
			}
			return
		}
		if it.Queued == 1 && h.tellStarting(ctx, f, sb.Generation) {
			h.post(ctx, f, frames.Status(frames.Starting))
		}
	case errors.As(err, &running):
		// The sandbox became ready meanwhile and has drained the inbox: deliver.
		h.deliver(ctx, f, running.Sandbox, fallback)
	case errors.Is(err, state.ErrInboxFull):
		h.refuse(ctx, f, frames.ReasonInboxFull, err)
	case errors.Is(err, state.ErrTooLarge):
		h.refuse(ctx, f, frames.ReasonTooLarge, err)
	default:
		h.refuse(ctx, f, frames.ReasonUnavailable, err)
	}
}

// tellStarting reports whether f's sender is yet to hear that the sandbox of
// generation is starting — its connect notice may have told it already — and records
// that it now will. When the record cannot say, the sender hears it (twice rather
// than never).
func (h *Handler) tellStarting(ctx context.Context, f *frame, generation int64) bool {
	first, err := h.Store.TellStarting(ctx, f.UserID, f.ConnectionID, generation)
	if err != nil {
		f.log.WarnContext(ctx, "starting not recorded as told", logging.Error, err.Error())
		return true
	}
	return first
}

// requestRestart asks the Connect function to start a new sandbox once the stopping
// one has stopped; the new one drains what was queued meanwhile.
func (h *Handler) requestRestart(ctx context.Context, f *frame) {
	wait := h.RestartWait
	if wait <= 0 {
		wait = notice.DefaultRestartWait
	}
	n := notice.Notice{Kind: notice.KindRestart, UserID: f.UserID, ConnectionID: f.ConnectionID,
		Stage: f.Stage, Until: time.Now().Add(wait).UnixMilli()}
	if err := h.Notifier.Send(ctx, n); err != nil {
		// The frame stays queued; the next connect or frame to a stopped sandbox starts one.
		f.log.ErrorContext(ctx, "restart not requested", logging.Error, err.Error())
		return
	}
	f.log.InfoContext(ctx, "restart requested")
}

// errFrameRate is the refusal of a frame over its user's rate in this process.
var errFrameRate = errors.New("over the user's frame rate")

func (h *Handler) frameBurst() int {
	if h.FrameBurst > 0 {
		return h.FrameBurst
	}
	return max(1, int(2*h.FrameRate))
}

// refuseFrame tells the sender why the agent refused f; a refusal for the rate also puts
// this process's bucket for the user into debt (see limiter.drain) and counts as one.
func (h *Handler) refuseFrame(ctx context.Context, f *frame, reason string, cause error) {
	f.log.DebugContext(ctx, "frame refused by the agent", logAgentRefusal, reason)
	if reason == frames.ReasonRateLimited {
		h.limits.drain(f.UserID, h.frameBurst(), h.now())
		h.rateLimited(ctx, f, cause)
		return
	}
	h.refuse(ctx, f, reason, cause)
}

// rateLimited deals with a frame refused for its user's rate: the first of each second
// is answered (rate_limited), the others dropped without a post — a sender over the
// rate would otherwise cost a management API post per frame — and a connection refused
// RateLimitCloseAfter times without a pause is told and closed.
func (h *Handler) rateLimited(ctx context.Context, f *frame, cause error) {
	answer, closeIt := h.limits.refused(f.ConnectionID, h.RateLimitCloseAfter, h.now())
	switch {
	case closeIt:
		f.log.WarnContext(ctx, "connection closed for the rate", logging.Reason, frames.ReasonRateLimited, logging.Error, cause.Error())
		h.post(ctx, f, wsroute.RateLimitCloseFrame())
		if err := h.Relay.Close(ctx, f.ConnectionID); err != nil && !errors.Is(err, relay.ErrGone) {
			f.log.WarnContext(ctx, "close connection failed", logging.Error, err.Error())
		}
		if h.Metrics != nil {
			if err := h.Metrics.Count(f.Stage, metrics.RateLimitCloses); err != nil {
				f.log.WarnContext(ctx, "metric not emitted", logging.Error, err.Error())
			}
		}
	case answer:
		h.refuse(ctx, f, frames.ReasonRateLimited, cause)
	}
}

// refuse tells the sender that f was not delivered, and why.
func (h *Handler) refuse(ctx context.Context, f *frame, reason string, cause error) {
	lvl := slog.LevelInfo
	if reason == frames.ReasonUnavailable || reason == frames.ReasonStartFailed || reason == frames.ReasonNoAnswer {
		lvl = slog.LevelWarn
	}
	f.log.Log(ctx, lvl, "frame refused", logging.Reason, reason, logging.Error, cause.Error())
	h.post(ctx, f, wsroute.ErrorFrame(reason))
}

func (h *Handler) post(ctx context.Context, f *frame, pf frames.Frame) {
	if err := h.Relay.Post(ctx, f.UserID, f.ConnectionID, pf.Bytes()); err != nil {
		lvl := slog.LevelWarn
		if errors.Is(err, relay.ErrGone) {
			lvl = slog.LevelInfo // the sender left; its record is gone too
		}
		f.log.Log(ctx, lvl, "frame to sender failed", logFrameType, pf.Type, logging.Error, err.Error())
	}
}
