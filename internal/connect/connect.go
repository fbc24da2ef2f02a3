package connect

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/apigatewaymanagementapi"
	mgmttypes "github.com/aws/aws-sdk-go-v2/service/apigatewaymanagementapi/types"

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
	logStarted   = "started"   // this call launched the task
	logNotice    = "notice"    // the notice's kind
	logFrameType = "frameType" // a platform frame's type
)

// Defaults of the Handler's tunables.
const (
	// DefaultPostWindow is how long a connect notice keeps retrying a post that API
	// Gateway answers 410: the handshake completes only after $connect has returned,
	// and until then the new connection is "gone" to the management API.
	DefaultPostWindow = 5 * time.Second
	// DefaultPollInterval is how often a restart re-reads the record while it waits.
	DefaultPollInterval = time.Second
	// DefaultInvokeMargin is the time a restart keeps before its invocation's deadline
	// to hand the wait over to a fresh invocation of itself.
	DefaultInvokeMargin = 2 * time.Second
)

// Store is the part of the state store the Handler uses.
type Store interface {
	AddConnection(ctx context.Context, userID, connectionID string) (state.Connection, error)
	RemoveConnection(ctx context.Context, userID, connectionID string) error
	Get(ctx context.Context, userID string) (*state.Sandbox, error)
}

// Ensurer ensures a user's sandbox; *ensure.Ensurer is one.
type Ensurer interface {
	Ensure(ctx context.Context, userID string) (ensure.Result, error)
}

// Management is the part of the management API client the Handler uses.
type Management interface {
	PostToConnection(ctx context.Context, in *apigatewaymanagementapi.PostToConnectionInput, optFns ...func(*apigatewaymanagementapi.Options)) (*apigatewaymanagementapi.PostToConnectionOutput, error)
}

// Agent is the part of the agent API client the Handler uses.
type Agent interface {
	Open(ctx context.Context, t agentapi.Target, connectionID string) error
}

var (
	_ Store      = (*state.Store)(nil)
	_ Ensurer    = (*ensure.Ensurer)(nil)
	_ Management = (*apigatewaymanagementapi.Client)(nil)
	_ Agent      = (*agentapi.Client)(nil)
)

// Handler serves the Connect function: $connect events and notices.
//
// Why a notice: API Gateway answers 410 to a post to a connection whose $connect has
// not returned yet, so nothing can tell the client anything during $connect, and a
// refused handshake tells a browser nothing. $connect therefore records the
// connection, ensures the sandbox (never waiting for the task), sends this function a
// notice as an asynchronous invocation and accepts the connection. The notice retries
// its post while the handshake completes and sends the client a status frame
// (starting, ready, stopping) or an error frame (capacity, start_failed, purging,
// unavailable).
//
// Why ensure notices: only this function may start tasks (ecs:RunTask, iam:PassRole).
// A frame that finds no live sandbox makes the Message function invoke this one
// synchronously with an ensure notice; it runs Ensure as for a $connect and answers
// with what Ensure found, while the Message function still queues the frame and tells
// its sender, as before.
type Handler struct {
	Store    Store
	Ensurer  Ensurer
	Mgmt     Management
	Agent    Agent
	Notifier *notice.Notifier
	Metrics  *metrics.Emitter
	Log      *slog.Logger
	// Now is the clock leases are judged by (time.Now when nil).
	Now func() time.Time

	// Tunables; zero means the Default* constant (notice.DefaultRestartWait for
	// RestartWait).
	PostWindow   time.Duration
	RestartWait  time.Duration
	PollInterval time.Duration
	InvokeMargin time.Duration
}

func (h *Handler) now() time.Time {
	if h.Now != nil {
		return h.Now()
	}
	return time.Now()
}

func orDefault(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

// Handle serves one invocation: an ensure notice (answered), another notice, or a
// $connect event.
func (h *Handler) Handle(ctx context.Context, ev Event) (Response, error) {
	switch {
	case ev.Notice != nil && ev.Notice.Kind == notice.KindEnsure:
		return Response{APIGatewayProxyResponse: wsroute.OK(), Answer: h.answer(ctx, *ev.Notice)}, nil
	case ev.Notice != nil:
		h.serveNotice(ctx, *ev.Notice)
		return Response{APIGatewayProxyResponse: wsroute.OK()}, nil
	}
	return Response{APIGatewayProxyResponse: h.connect(ctx, ev.APIGatewayWebsocketProxyRequest)}, nil
}

// connect serves a $connect event. One without an authorized user (or of another
// route) is refused with 500 before anything is written; otherwise the connection is
// accepted, whatever the sandbox's fate, which the notice reports.
func (h *Handler) connect(ctx context.Context, ev events.APIGatewayWebsocketProxyRequest) events.APIGatewayProxyResponse {
	rc := ev.RequestContext
	caller, err := wsroute.Identify(rc)
	if err == nil && rc.EventType != "CONNECT" {
		err = fmt.Errorf("not a $connect event: route %q, event type %q", rc.RouteKey, rc.EventType)
	}
	if err != nil {
		h.Log.ErrorContext(ctx, "connect refused", logging.ConnectionID, rc.ConnectionID, logging.Error, err.Error())
		return wsroute.Refused()
	}
	log := h.Log.With(logging.UserID, caller.UserID, logging.ConnectionID, caller.ConnectionID)
	if _, err := h.Store.AddConnection(ctx, caller.UserID, caller.ConnectionID); err != nil {
		// Without the record the agent could never reach this connection: refuse, and
		// the client reconnects.
		log.ErrorContext(ctx, "connect refused", logging.Reason, "record connection", logging.Error, err.Error())
		return wsroute.Refused()
	}
	n := notice.Notice{Kind: notice.KindConnect, UserID: caller.UserID, ConnectionID: caller.ConnectionID, Stage: caller.Stage}
	res, err := h.Ensurer.Ensure(ctx, caller.UserID)
	if err != nil {
		n.Reason = ensure.Reason(err)
		h.count(ctx, caller.Stage, err)
		log.WarnContext(ctx, "sandbox not ensured", logging.Reason, n.Reason, logging.Error, err.Error())
	}
	if err := h.Notifier.Send(ctx, n); err != nil {
		// The connection stands and its frames will ensure the sandbox again; only the
		// status frame is lost.
		log.ErrorContext(ctx, "notice not sent", logging.Error, err.Error())
	}
	attrs := []any{}
	if res.Sandbox != nil {
		attrs = append(attrs, logging.State, string(res.State()), logStarted, res.Started)
	}
	log.InfoContext(ctx, "connected", attrs...)
	return wsroute.OK()
}

func (h *Handler) count(ctx context.Context, stage string, err error) {
	if name := ensure.Metric(err); name != "" {
		if merr := h.Metrics.Count(stage, name); merr != nil {
			h.Log.WarnContext(ctx, "metric not emitted", logging.Error, merr.Error())
		}
	}
}

// answer serves an ensure notice: the Message function, which may not start tasks,
// asks for the sandbox a frame needs. It runs this function's Ensure, bounded by the
// notice's Until (when the asker stops waiting), logs and counts the outcome as for a
// $connect, and answers with what Ensure found: no token, no frame to anyone.
func (h *Handler) answer(ctx context.Context, n notice.Notice) notice.Answer {
	log := h.Log.With(logging.UserID, n.UserID, logging.ConnectionID, n.ConnectionID, logNotice, n.Kind)
	if err := n.Validate(); err != nil {
		log.ErrorContext(ctx, "notice refused", logging.Error, err.Error())
		return notice.AnswerOf(ensure.Result{}, err)
	}
	if n.Until != 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, time.UnixMilli(n.Until))
		defer cancel()
	}
	res, err := h.Ensurer.Ensure(ctx, n.UserID)
	if err != nil {
		h.count(ctx, n.Stage, err)
		log.WarnContext(ctx, "sandbox not ensured", logging.Reason, ensure.Reason(err), logging.Error, err.Error())
		return notice.AnswerOf(res, err)
	}
	log.InfoContext(ctx, "sandbox ensured", logging.State, string(res.State()), logStarted, res.Started)
	return notice.AnswerOf(res, nil)
}

// serveNotice serves a connect or restart notice. Failures are logged, not returned: Lambda retries a failed
// asynchronous invocation, and a retry would repeat frames the client already has.
func (h *Handler) serveNotice(ctx context.Context, n notice.Notice) {
	log := h.Log.With(logging.UserID, n.UserID, logging.ConnectionID, n.ConnectionID, logNotice, n.Kind)
	if err := n.Validate(); err != nil {
		log.ErrorContext(ctx, "notice refused", logging.Error, err.Error())
		return
	}
	p := &poster{h: h, n: n, log: log, window: n.Kind == notice.KindConnect}
	switch {
	case n.Kind == notice.KindRestart:
		h.restart(ctx, p)
	case n.Reason != "":
		p.post(ctx, wsroute.ErrorFrame(n.Reason))
	default:
		h.greet(ctx, p)
	}
}

// greet tells a new connection the sandbox's state.
func (h *Handler) greet(ctx context.Context, p *poster) {
	sb, err := h.get(ctx, p.n.UserID)
	if err != nil {
		p.log.ErrorContext(ctx, "read sandbox failed", logging.Error, err.Error())
		p.post(ctx, wsroute.ErrorFrame(frames.ReasonUnavailable))
		return
	}
	now := h.now()
	switch {
	case sb.Live(now) && sb.State == state.Running:
		h.ready(ctx, p, sb)
	case sb.Live(now) && sb.State == state.Starting:
		if !p.post(ctx, frames.Status(frames.Starting)) {
			return
		}
		// The agent may have become ready between the read and the post, and its own
		// "ready" may have reached the connection first (or not at all, during the
		// handshake): look once more, so the last word the client has is the truth.
		if sb, err := h.get(ctx, p.n.UserID); err == nil && sb.Live(h.now()) && sb.State == state.Running {
			h.ready(ctx, p, sb)
		}
	case sb.Live(now) && sb.State == state.Stopping:
		if !p.post(ctx, frames.Status(frames.Stopping)) {
			return
		}
		p.n.Until = time.Now().Add(orDefault(h.RestartWait, notice.DefaultRestartWait)).UnixMilli()
		p.n.Kind = notice.KindRestart
		h.restart(ctx, p)
	case sb != nil && sb.State == state.Purging && !sb.Expired(now):
		p.post(ctx, wsroute.ErrorFrame(frames.ReasonPurging))
	default:
		// What $connect ensured is gone already (a failed or stopped start): the
		// client is still here, so ensure once more.
		res, err := h.Ensurer.Ensure(ctx, p.n.UserID)
		h.report(ctx, p, res, err)
	}
}

// report tells the connection what an Ensure did.
func (h *Handler) report(ctx context.Context, p *poster, res ensure.Result, err error) {
	if err != nil {
		h.count(ctx, p.n.Stage, err)
		p.log.WarnContext(ctx, "sandbox not ensured", logging.Reason, ensure.Reason(err), logging.Error, err.Error())
		p.post(ctx, wsroute.ErrorFrame(ensure.Reason(err)))
		return
	}
	switch res.State() {
	case state.Running:
		h.ready(ctx, p, res.Sandbox)
	case state.Stopping:
		p.post(ctx, frames.Status(frames.Stopping))
	default:
		p.post(ctx, frames.Status(frames.Starting))
	}
}

// ready tells the connection the sandbox is ready, then the agent that the
// connection is open, so the workload can greet it.
func (h *Handler) ready(ctx context.Context, p *poster, sb *state.Sandbox) {
	if !p.post(ctx, frames.Status(frames.Ready)) {
		return
	}
	t := agentapi.Target{Endpoint: sb.Endpoint, Token: sb.GatewayToken, UserID: sb.UserID}
	if err := h.Agent.Open(ctx, t, p.n.ConnectionID); err != nil {
		p.log.WarnContext(ctx, "agent open failed", logging.Error, err.Error())
	}
}

// restart waits for a STOPPING sandbox to stop, then starts a new one.
func (h *Handler) restart(ctx context.Context, p *poster) {
	switch h.awaitStopped(ctx, p) {
	case handedOver:
		return
	case gaveUp:
		p.log.WarnContext(ctx, "sandbox still stopping; restart abandoned")
		p.post(ctx, wsroute.ErrorFrame(frames.ReasonUnavailable))
		return
	}
	res, err := h.Ensurer.Ensure(ctx, p.n.UserID)
	if err == nil {
		p.log.InfoContext(ctx, "sandbox restarted", logging.State, string(res.State()), logStarted, res.Started)
	}
	h.report(ctx, p, res, err)
}

type waitResult int

const (
	stopped    waitResult = iota // the sandbox is not a live STOPPING one
	gaveUp                       // the notice's deadline passed
	handedOver                   // a fresh invocation continues the wait
)

func (h *Handler) awaitStopped(ctx context.Context, p *poster) waitResult {
	until := time.UnixMilli(p.n.Until)
	poll := orDefault(h.PollInterval, DefaultPollInterval)
	margin := orDefault(h.InvokeMargin, DefaultInvokeMargin)
	for {
		sb, err := h.get(ctx, p.n.UserID)
		switch {
		case err != nil:
			p.log.WarnContext(ctx, "read sandbox failed", logging.Error, err.Error())
		case sb == nil || sb.State != state.Stopping || !sb.Live(h.now()):
			return stopped
		}
		now := time.Now()
		if !now.Before(until) {
			return gaveUp
		}
		wait := min(poll, until.Sub(now))
		if dl, ok := ctx.Deadline(); ok && now.Add(wait+margin).After(dl) {
			// This invocation ends before the wait would: a fresh one continues it.
			n := p.n
			n.Kind = notice.KindRestart
			if err := h.Notifier.Send(context.WithoutCancel(ctx), n); err != nil {
				p.log.ErrorContext(ctx, "restart hand-over failed", logging.Error, err.Error())
			}
			return handedOver
		}
		if !sleep(ctx, wait) {
			return gaveUp
		}
	}
}

// get returns the user's record, nil when there is none.
func (h *Handler) get(ctx context.Context, userID string) (*state.Sandbox, error) {
	sb, err := h.Store.Get(ctx, userID)
	if errors.Is(err, state.ErrNotFound) {
		return nil, nil
	}
	return sb, err
}

// poster posts a notice's frames to its connection.
type poster struct {
	h   *Handler
	n   notice.Notice
	log *slog.Logger
	// window: retry 410 for PostWindow, since the handshake may not have completed.
	window bool
	posted bool
}

// post sends f and reports whether it arrived. The first post that arrives within
// the handshake window also records the connection again: a broadcast that met the
// handshake's 410 has removed the record $connect wrote.
func (p *poster) post(ctx context.Context, f frames.Frame) bool {
	h := p.h
	in := &apigatewaymanagementapi.PostToConnectionInput{ConnectionId: aws.String(p.n.ConnectionID), Data: f.Bytes()}
	deadline := time.Now().Add(orDefault(h.PostWindow, DefaultPostWindow))
	delay := 20 * time.Millisecond
	for {
		_, err := h.Mgmt.PostToConnection(ctx, in)
		var gone *mgmttypes.GoneException
		switch {
		case err == nil:
			if p.window && !p.posted {
				if _, err := h.Store.AddConnection(ctx, p.n.UserID, p.n.ConnectionID); err != nil {
					p.log.WarnContext(ctx, "refresh connection failed", logging.Error, err.Error())
				}
			}
			p.posted = true
			p.log.InfoContext(ctx, "frame sent", logFrameType, f.Type, logging.State, f.State, logging.Reason, f.Reason)
			return true
		case !errors.As(err, &gone):
			p.log.WarnContext(ctx, "post failed", logFrameType, f.Type, logging.Error, err.Error())
			return false
		case p.window && !p.posted && time.Now().Before(deadline):
			if !sleep(ctx, min(delay, time.Until(deadline))) {
				return false
			}
			delay = min(2*delay, 400*time.Millisecond)
			continue
		}
		// Gone for good: the client left.
		if err := h.Store.RemoveConnection(ctx, p.n.UserID, p.n.ConnectionID); err != nil {
			p.log.WarnContext(ctx, "remove gone connection failed", logging.Error, err.Error())
		}
		p.log.InfoContext(ctx, "connection gone", logFrameType, f.Type, logging.Error, relay.ErrGone.Error())
		return false
	}
}

// sleep waits d or until ctx ends; it reports whether the wait completed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
