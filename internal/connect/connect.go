package connect

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
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
	logGone      = "gone"      // connections found gone
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
	// DefaultHandshakeGrace is how long after $connect sent its notice a 410 may still
	// mean "handshake not complete": $connect returns right after sending, and API
	// Gateway completes the handshake within milliseconds of that, so past this a 410
	// means the client is gone and the notice stops.
	DefaultHandshakeGrace = 2 * time.Second
	// DefaultCheckInterval is how often, at most, a user at the connection cap has their
	// counted connections checked against API Gateway (a $disconnect lost, say).
	DefaultCheckInterval = 30 * time.Second
	// DefaultCheckAge is how old a counted connection must be to be checked: a younger
	// one may still be in its handshake, which API Gateway answers 410 as if gone.
	DefaultCheckAge = 30 * time.Second
)

// Store is the part of the state store the Handler uses.
type Store interface {
	AddConnection(ctx context.Context, userID, connectionID string) (state.Connection, error)
	RemoveConnection(ctx context.Context, userID, connectionID string) error
	Get(ctx context.Context, userID string) (*state.Sandbox, error)
	// The per-user limits (the access item).
	AdmitConnection(ctx context.Context, userID, connectionID string) (*state.Access, error)
	ChargeConnect(ctx context.Context, userID string) error
	ReleaseConnection(ctx context.Context, userID, connectionID string) error
	ForgetConnections(ctx context.Context, userID string, ids ...string) error
	ClaimCheck(ctx context.Context, userID string, interval time.Duration) (bool, error)
	Counted(ctx context.Context, userID, connectionID string) (bool, error)
	Access(ctx context.Context, userID string) (*state.Access, error)
	TellStarting(ctx context.Context, userID, connectionID string, generation int64) (bool, error)
}

// Ensurer ensures a user's sandbox; *ensure.Ensurer is one.
type Ensurer interface {
	Ensure(ctx context.Context, userID string) (ensure.Result, error)
}

// Management is the part of the management API client the Handler uses.
type Management interface {
	PostToConnection(ctx context.Context, in *apigatewaymanagementapi.PostToConnectionInput, optFns ...func(*apigatewaymanagementapi.Options)) (*apigatewaymanagementapi.PostToConnectionOutput, error)
	GetConnection(ctx context.Context, in *apigatewaymanagementapi.GetConnectionInput, optFns ...func(*apigatewaymanagementapi.Options)) (*apigatewaymanagementapi.GetConnectionOutput, error)
	DeleteConnection(ctx context.Context, in *apigatewaymanagementapi.DeleteConnectionInput, optFns ...func(*apigatewaymanagementapi.Options)) (*apigatewaymanagementapi.DeleteConnectionOutput, error)
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
	PostWindow     time.Duration
	HandshakeGrace time.Duration
	RestartWait    time.Duration
	PollInterval   time.Duration
	InvokeMargin   time.Duration
	CheckInterval  time.Duration
	CheckAge       time.Duration

	// refusedUntil remembers, per user, until when this process refuses their connects
	// for the rate without asking DynamoDB again (the RetryAfter of the last refusal):
	// a user reconnecting in a loop costs this process one write per interval, not one
	// per attempt.
	refusedMu    sync.Mutex
	refusedUntil map[string]time.Time
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
	// The user's limits come first, before anything is spent on the connection: one
	// conditional write of the user's access item.
	if resp, admitted := h.admit(ctx, caller, log); !admitted {
		return resp
	}
	if _, err := h.Store.AddConnection(ctx, caller.UserID, caller.ConnectionID); err != nil {
		// Without the record the agent could never reach this connection: refuse, and
		// the client reconnects.
		log.ErrorContext(ctx, "connect refused", logging.Reason, "record connection", logging.Error, err.Error())
		h.release(ctx, caller.UserID, caller.ConnectionID, log)
		return wsroute.Refused()
	}
	n := notice.Notice{Kind: notice.KindConnect, UserID: caller.UserID, ConnectionID: caller.ConnectionID, Stage: caller.Stage,
		Sent: time.Now().UnixMilli()}
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

// admit counts the connection against its user's limits. Within them it reports
// admitted. Over the connect rate the handshake is refused with 429 at once (the
// cheapest answer to a client that reconnects in a loop; its body is the error frame,
// for clients that read it). Over the cap — after a check of the counted connections,
// at most every CheckInterval, in case a $disconnect was lost — the connect is charged
// to the rate and accepted only to be told why and closed by a notice: a person who
// opened one tab too many reads the reason.
func (h *Handler) admit(ctx context.Context, c wsroute.Caller, log *slog.Logger) (events.APIGatewayProxyResponse, bool) {
	if h.refusedRecently(c.UserID) {
		return wsroute.Limited(frames.ReasonConnectRate), false
	}
	_, err := h.Store.AdmitConnection(ctx, c.UserID, c.ConnectionID)
	if errors.Is(err, state.ErrTooManyConnections) && h.checkCounted(ctx, c.UserID, log) {
		_, err = h.Store.AdmitConnection(ctx, c.UserID, c.ConnectionID)
	}
	if errors.Is(err, state.ErrTooManyConnections) {
		if cerr := h.Store.ChargeConnect(ctx, c.UserID); cerr != nil {
			err = cerr
		}
	}
	switch {
	case err == nil:
		return events.APIGatewayProxyResponse{}, true
	case errors.Is(err, state.ErrTooManyConnections):
		log.WarnContext(ctx, "connect refused", logging.Reason, frames.ReasonTooManyConnections, logging.Error, err.Error())
		h.countLimit(ctx, c.Stage)
		n := notice.Notice{Kind: notice.KindConnect, UserID: c.UserID, ConnectionID: c.ConnectionID, Stage: c.Stage,
			Reason: frames.ReasonTooManyConnections, Close: true, Sent: time.Now().UnixMilli()}
		if err := h.Notifier.Send(ctx, n); err != nil {
			// Without the notice nobody would close it: refuse the handshake instead.
			log.ErrorContext(ctx, "notice not sent", logging.Error, err.Error())
			return wsroute.Limited(frames.ReasonTooManyConnections), false
		}
		return wsroute.OK(), false
	case errors.Is(err, state.ErrConnectRate), errors.Is(err, state.ErrContention):
		var le *state.LimitError
		if errors.As(err, &le) {
			h.refuse(c.UserID, le.RetryAfter)
		}
		log.WarnContext(ctx, "connect refused", logging.Reason, frames.ReasonConnectRate, logging.Error, err.Error())
		h.countLimit(ctx, c.Stage)
		return wsroute.Limited(frames.ReasonConnectRate), false
	default:
		log.ErrorContext(ctx, "connect refused", logging.Reason, "limits", logging.Error, err.Error())
		return wsroute.Refused(), false
	}
}

// maxRefused bounds refusedUntil; past it, the table starts over.
const maxRefused = 10_000

// refusedRecently reports whether this process refused userID's connects for the rate
// and the refusal's RetryAfter has not passed.
func (h *Handler) refusedRecently(userID string) bool {
	h.refusedMu.Lock()
	defer h.refusedMu.Unlock()
	until, ok := h.refusedUntil[userID]
	return ok && h.now().Before(until)
}

func (h *Handler) refuse(userID string, retryAfter time.Duration) {
	h.refusedMu.Lock()
	defer h.refusedMu.Unlock()
	if h.refusedUntil == nil || len(h.refusedUntil) >= maxRefused {
		h.refusedUntil = map[string]time.Time{}
	}
	h.refusedUntil[userID] = h.now().Add(retryAfter)
}

// checkCounted checks the user's counted connections against API Gateway, if no one
// did within CheckInterval, and stops counting those it no longer knows. It reports
// whether any was found gone.
func (h *Handler) checkCounted(ctx context.Context, userID string, log *slog.Logger) bool {
	claimed, err := h.Store.ClaimCheck(ctx, userID, orDefault(h.CheckInterval, DefaultCheckInterval))
	if err != nil || !claimed {
		return false
	}
	acc, err := h.Store.Access(ctx, userID)
	if err != nil {
		log.WarnContext(ctx, "check connections failed", logging.Error, err.Error())
		return false
	}
	var gone []string
	cutoff := h.now().Add(-orDefault(h.CheckAge, DefaultCheckAge))
	for id, at := range acc.Conns {
		if at.After(cutoff) {
			continue
		}
		_, err := h.Mgmt.GetConnection(ctx, &apigatewaymanagementapi.GetConnectionInput{ConnectionId: aws.String(id)})
		var ge *mgmttypes.GoneException
		if errors.As(err, &ge) {
			gone = append(gone, id)
		}
	}
	if len(gone) == 0 {
		return false
	}
	if err := h.Store.ForgetConnections(ctx, userID, gone...); err != nil {
		log.WarnContext(ctx, "forget gone connections failed", logging.Error, err.Error())
		return false
	}
	for _, id := range gone {
		if err := h.Store.RemoveConnection(ctx, userID, id); err != nil {
			log.WarnContext(ctx, "remove gone connection failed", logging.ConnectionID, id, logging.Error, err.Error())
		}
	}
	log.InfoContext(ctx, "gone connections no longer counted", logGone, len(gone))
	return true
}

// release stops counting a connection that will not be used.
func (h *Handler) release(ctx context.Context, userID, connectionID string, log *slog.Logger) {
	if err := h.Store.ReleaseConnection(ctx, userID, connectionID); err != nil {
		log.WarnContext(ctx, "release connection failed", logging.Error, err.Error())
	}
}

func (h *Handler) countLimit(ctx context.Context, stage string) {
	if err := h.Metrics.Count(stage, metrics.ConnectsLimited); err != nil {
		h.Log.WarnContext(ctx, "metric not emitted", logging.Error, err.Error())
	}
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
		if n.Close {
			h.close(ctx, p)
		}
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
		if h.tellStarting(ctx, p, sb.Generation) && !p.post(ctx, frames.Status(frames.Starting)) {
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
		if h.tellStarting(ctx, p, res.Sandbox.Generation) {
			p.post(ctx, frames.Status(frames.Starting))
		}
	}
}

// tellStarting reports whether the connection is yet to hear that the sandbox of
// generation is starting — the Message function may have told the sender of its first
// frame already — and records that it now will. When the record cannot say, the
// connection hears it (twice rather than never).
func (h *Handler) tellStarting(ctx context.Context, p *poster, generation int64) bool {
	first, err := h.Store.TellStarting(ctx, p.n.UserID, p.n.ConnectionID, generation)
	if err != nil {
		p.log.WarnContext(ctx, "starting not recorded as told", logging.Error, err.Error())
		return true
	}
	return first
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
	case handedOver, abandoned:
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
	abandoned                    // nobody is left to tell or to start a sandbox for
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
		if h.nobodyLeft(ctx, p.n.UserID) {
			// Nobody is waiting for the next sandbox; the next connect starts it, and it
			// delivers what is queued.
			p.log.InfoContext(ctx, "restart abandoned: the user has no connection left")
			return abandoned
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

// nobodyLeft reports whether the user is known to have no live connection counted.
func (h *Handler) nobodyLeft(ctx context.Context, userID string) bool {
	acc, err := h.Store.Access(ctx, userID)
	return err == nil && acc.Live(h.now()) == 0
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
//
// A 410 before the first post arrived may mean the handshake is not complete yet, so it
// is retried — but only while the connection may still be coming: not once it is known
// gone, which is either of
//   - its $disconnect ran (the connection is no longer counted against its user: one
//     read of that entry), for a connection that was admitted;
//   - $connect sent the notice more than HandshakeGrace ago: API Gateway completes a
//     handshake within milliseconds of $connect returning, so a 410 then is final.
//
// GetConnection cannot tell a connection in its handshake from one gone (both are 410),
// so it adds nothing here. A client that drops at once therefore holds its notice for
// milliseconds, not the PostWindow that bounds everything.
func (p *poster) post(ctx context.Context, f frames.Frame) bool {
	h := p.h
	in := &apigatewaymanagementapi.PostToConnectionInput{ConnectionId: aws.String(p.n.ConnectionID), Data: f.Bytes()}
	deadline := time.Now().Add(orDefault(h.PostWindow, DefaultPostWindow))
	if p.n.Sent != 0 {
		if d := time.UnixMilli(p.n.Sent).Add(orDefault(h.PostWindow, DefaultPostWindow)); d.Before(deadline) {
			deadline = d
		}
	}
	delay := 20 * time.Millisecond
	for {
		_, err := h.Mgmt.PostToConnection(ctx, in)
		var gone *mgmttypes.GoneException
		switch {
		case err == nil:
			if p.window && !p.posted && !p.n.Close {
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
		case p.window && !p.posted && time.Now().Before(deadline) && !p.knownGone(ctx):
			if !sleep(ctx, min(delay, time.Until(deadline))) {
				return false
			}
			delay = min(2*delay, 400*time.Millisecond)
			continue
		}
		// Gone for good: the client left.
		if p.n.Close {
			return false // never recorded nor counted
		}
		if err := h.Store.RemoveConnection(ctx, p.n.UserID, p.n.ConnectionID); err != nil {
			p.log.WarnContext(ctx, "remove gone connection failed", logging.Error, err.Error())
		}
		h.release(ctx, p.n.UserID, p.n.ConnectionID, p.log)
		p.log.InfoContext(ctx, "connection gone", logFrameType, f.Type, logging.Error, relay.ErrGone.Error())
		return false
	}
}

// knownGone reports whether a connection whose post met 410 is known to be gone (see
// post), so its notice stops.
func (p *poster) knownGone(ctx context.Context) bool {
	h := p.h
	if p.n.Sent != 0 && time.Since(time.UnixMilli(p.n.Sent)) > orDefault(h.HandshakeGrace, DefaultHandshakeGrace) {
		p.log.InfoContext(ctx, "notice stopped: the handshake is long over")
		return true
	}
	if p.n.Close {
		// Never admitted, so never counted: only the grace tells.
		return false
	}
	counted, err := h.Store.Counted(ctx, p.n.UserID, p.n.ConnectionID)
	if err == nil && !counted {
		p.log.InfoContext(ctx, "notice stopped: the connection's $disconnect has run")
		return true
	}
	return false
}

// close ends a connection the notice was to close (one over its user's cap): API
// Gateway sends the client a close frame.
func (h *Handler) close(ctx context.Context, p *poster) {
	_, err := h.Mgmt.DeleteConnection(ctx, &apigatewaymanagementapi.DeleteConnectionInput{ConnectionId: aws.String(p.n.ConnectionID)})
	var gone *mgmttypes.GoneException
	switch {
	case err == nil:
		p.log.InfoContext(ctx, "connection closed", logging.Reason, p.n.Reason)
	case errors.As(err, &gone):
	default:
		p.log.WarnContext(ctx, "close connection failed", logging.Error, err.Error())
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
