package agent

import (
	"context"
	crand "crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sandgate/sandgate/internal/agentapi"
	"github.com/sandgate/sandgate/internal/frames"
	"github.com/sandgate/sandgate/internal/logging"
	"github.com/sandgate/sandgate/internal/objsync"
	"github.com/sandgate/sandgate/internal/relay"
	"github.com/sandgate/sandgate/internal/s3bucket"
	"github.com/sandgate/sandgate/internal/state"
	"github.com/sandgate/sandgate/internal/taskenv"
	"github.com/sandgate/sandgate/internal/upstream"
	"github.com/sandgate/sandgate/internal/workload"
)

// Defaults of the Agent's tunables.
const (
	// DefaultProgressEvery is the most often a restore's progress is broadcast.
	DefaultProgressEvery = time.Second
	// DefaultMaxIdleCheck caps the interval between idle checks (a fraction of
	// SLEEP_AFTER otherwise).
	DefaultMaxIdleCheck = 30 * time.Second
	// DefaultWriteRetryFor is how long a start-up or shutdown write (MarkReady, the
	// inbox read, MarkStopping) is retried while DynamoDB is unavailable.
	DefaultWriteRetryFor = 10 * time.Second
)

// Agent runs one sandbox: the orchestration of issue 6. Set the tunables before Run.
type Agent struct {
	Config     Config
	Store      Store
	Bucket     objsync.Bucket
	Management relay.API
	// Log receives one line per event; scope it with the user id (logging.UserID).
	Log *slog.Logger
	// WorkloadOutput receives the workload's stdout and stderr (nil discards).
	WorkloadOutput io.Writer
	// HTTPClient reaches the task metadata endpoint.
	HTTPClient *http.Client
	// WorkloadCommand runs when Config.Command is empty: the built-in demo.
	WorkloadCommand []string

	// MaxRestarts is how often a crashed workload is restarted (DefaultMaxRestarts;
	// negative: never).
	MaxRestarts int
	// RestartBackoff is the delay before the first restart (DefaultRestartBackoff).
	RestartBackoff time.Duration
	// ConnectGrace is DefaultConnectGrace when zero.
	ConnectGrace time.Duration
	// ProgressEvery is DefaultProgressEvery when zero.
	ProgressEvery time.Duration
	// FenceMargin is how long before the lease's deadline the agent stops writing if
	// it could not renew: a sixth of LEASE_TTL when zero.
	FenceMargin time.Duration
	// IdleCheck is how often idleness is checked: a quarter of SLEEP_AFTER, at most
	// DefaultMaxIdleCheck, when zero.
	IdleCheck time.Duration
	// Now is the clock (time.Now).
	Now func() time.Time
}

// New returns an Agent with the default tunables.
func New(cfg Config, store Store, bucket objsync.Bucket, mgmt relay.API, log *slog.Logger) *Agent {
	return &Agent{
		Config: cfg, Store: store, Bucket: bucket, Management: mgmt, Log: log,
		HTTPClient:  &http.Client{Timeout: 5 * time.Second},
		MaxRestarts: DefaultMaxRestarts, RestartBackoff: DefaultRestartBackoff,
		ConnectGrace: DefaultConnectGrace, ProgressEvery: DefaultProgressEvery,
		Now: time.Now,
	}
}

// Run runs the sandbox until it stops: when ctx ends (SIGTERM), when idle, at the
// maximum lifetime, when the workload keeps crashing, or when the lease is lost.
// nil means a clean stop (files synced, sandbox STOPPED); any error means the process
// should exit non-zero.
func (a *Agent) Run(ctx context.Context) error {
	s, err := a.newSandbox()
	if err != nil {
		return err
	}
	return s.run(ctx)
}

// sandbox is one Run's state.
type sandbox struct {
	agent  *Agent
	cfg    Config
	store  Store
	relay  *relay.Relay
	log    *slog.Logger
	now    func() time.Time
	holder *holder
	router *router
	syncer *objsync.Syncer
	sup    *supervisor
	token  string
	port   int    // the workload's
	url    string // where the Lambdas reach the API

	activity atomic.Int64 // unix nanoseconds of the last client frame or open
	acks     *ackQueue
	srv      *http.Server
	srvDone  chan struct{}

	progressMu sync.Mutex
	progress   *objsync.Progress
}

func (a *Agent) newSandbox() (*sandbox, error) {
	if a.Store == nil || a.Bucket == nil || a.Management == nil {
		return nil, errors.New("agent: Store, Bucket and Management are required")
	}
	log := a.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	now := a.Now
	if now == nil {
		now = time.Now
	}
	if a.ConnectGrace <= 0 {
		a.ConnectGrace = DefaultConnectGrace
	}
	if a.ProgressEvery <= 0 {
		a.ProgressEvery = DefaultProgressEvery
	}
	if a.RestartBackoff <= 0 {
		a.RestartBackoff = DefaultRestartBackoff
	}
	if a.HTTPClient == nil {
		a.HTTPClient = &http.Client{Timeout: 5 * time.Second}
	}
	s := &sandbox{
		agent: a, cfg: a.Config, store: a.Store, log: log, now: now,
		relay: &relay.Relay{API: a.Management, Conns: a.Store, Log: log},
	}
	s.touch()
	return s, nil
}

func (s *sandbox) touch() { s.activity.Store(s.now().UnixNano()) }

func (s *sandbox) lastActivity() time.Time { return time.Unix(0, s.activity.Load()) }

func (s *sandbox) run(ctx context.Context) error {
	start := s.now()
	s.log.Info("agent starting", logGeneration, s.cfg.Generation, "prefix", s.cfg.Prefix)

	lease, err := s.verify(ctx)
	if err != nil {
		return err
	}
	margin := s.agent.FenceMargin
	if margin <= 0 {
		margin = s.cfg.LeaseTTL / 6
	}
	s.holder = newHolder(s.store, lease, s.cfg.Heartbeat(), margin, s.lastActivity, s.now, s.log)
	hbCtx, hbStop := context.WithCancel(context.Background())
	hbDone := make(chan struct{})
	go func() { defer close(hbDone); s.holder.run(hbCtx) }()
	stopHeartbeats := func() { hbStop(); <-hbDone }
	defer stopHeartbeats()

	// work ends on SIGTERM or when the lease is lost; the stop sequence has its own.
	work, cancelWork := context.WithCancel(ctx)
	defer cancelWork()
	go func() {
		select {
		case <-s.holder.Lost():
			cancelWork()
		case <-work.Done():
		}
	}()

	if err := s.prepare(); err != nil {
		return s.failStart(ctx, "prepare", err)
	}
	if err := s.listen(work); err != nil {
		return s.failStart(ctx, "listen", err)
	}
	defer s.closeServer()

	if err := s.restore(work); err != nil {
		return s.failStart(ctx, "restore", err)
	}
	if err := s.startWorkload(work); err != nil {
		return s.failStart(ctx, "workload", err)
	}
	s.acks = newAckQueue(s)
	if err := s.ready(work); err != nil {
		if s.holder.isLost() || isLost(err) {
			return s.abandon()
		}
		if ctx.Err() != nil {
			return s.shutdown("sigterm", nil, stopHeartbeats)
		}
		return s.shutdown("ready_failed", fmt.Errorf("%w: %w", ErrStart, err), stopHeartbeats)
	}
	return s.serve(ctx, work, start, stopHeartbeats)
}

// verify checks that this task holds the user's STARTING lease and renews it at once,
// so a start that took long is not mistaken for a dead one. Nothing is written when
// the lease is not ours.
func (s *sandbox) verify(ctx context.Context) (state.Lease, error) {
	var sb *state.Sandbox
	err := retryTransient(ctx, func() (err error) { sb, err = s.store.Get(ctx, s.cfg.UserID); return err })
	if errors.Is(err, state.ErrNotFound) {
		return state.Lease{}, fmt.Errorf("%w: no sandbox record", ErrNotHolder)
	}
	if err != nil {
		return state.Lease{}, fmt.Errorf("read lease: %w", err)
	}
	if sb.State != state.Starting || sb.Generation != s.cfg.Generation ||
		subtle.ConstantTimeCompare([]byte(sb.LeaseToken), []byte(s.cfg.LeaseToken)) != 1 {
		s.log.Error("not the lease holder; exiting without writing", logging.State, string(sb.State),
			logGeneration, sb.Generation, "taskGeneration", s.cfg.Generation)
		return state.Lease{}, fmt.Errorf("%w: record is %s at generation %d, task has generation %d",
			ErrNotHolder, sb.State, sb.Generation, s.cfg.Generation)
	}
	l := sb.Lease()
	var renewed state.Lease
	err = retryTransient(ctx, func() (err error) { renewed, err = s.store.Heartbeat(ctx, l, time.Time{}); return err })
	if isLost(err) {
		return state.Lease{}, fmt.Errorf("%w: %w", ErrNotHolder, err)
	}
	if err != nil {
		return state.Lease{}, fmt.Errorf("renew lease: %w", err)
	}
	return renewed, nil
}

// prepare makes the data directories and the syncer, and picks the workload's port.
func (s *sandbox) prepare() error {
	for _, d := range []string{s.cfg.Workspace(), s.cfg.StatePath()} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return fmt.Errorf("create %s: %w", d, err)
		}
	}
	sy, err := objsync.New(s.agent.Bucket, s.cfg.Prefix, s.cfg.Workspace(), s.cfg.StatePath())
	if err != nil {
		return err
	}
	sy.Fence = s.holder.Fence
	sy.Generation = s.cfg.Generation
	sy.Log = s.log
	sy.Progress = s.reportProgress
	s.syncer = sy
	s.port, err = freePort()
	if err != nil {
		return err
	}
	s.token = newGatewayToken()
	s.router = &router{
		userID: s.cfg.UserID, url: "ws://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) + "/",
		log: s.log, limiter: newLimiter(s.cfg.MessageRate, s.now), touch: s.touch,
		poster: s.poster, ended: s.closeClient, maxHeld: DefaultMaxHeld,
		healthy: s.healthy, conns: map[string]*upstream.Conn{},
	}
	return nil
}

// listen learns the task's address and serves the API on it. The token is published
// only by MarkReady, so nothing but the health check can be served before ready.
func (s *sandbox) listen(ctx context.Context) error {
	addr, err := Address(ctx, s.agent.HTTPClient, s.cfg.MetadataURI, 0)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(addr.String(), strconv.Itoa(s.cfg.Port)))
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	s.srv = &http.Server{
		Handler:           agentapi.NewServer(s.token, s.cfg.UserID, s.router),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       15 * time.Second,
		WriteTimeout:      15 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	s.srvDone = make(chan struct{})
	go func() {
		defer close(s.srvDone)
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("api server failed", logging.Error, err.Error())
		}
	}()
	s.url = Endpoint(addr, s.cfg.Port)
	s.log.Info("api listening", logEndpoint, s.url)
	return nil
}

func (s *sandbox) closeServer() {
	if s.srv == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := s.srv.Shutdown(ctx); err != nil {
		s.srv.Close()
	}
	<-s.srvDone
}

func (s *sandbox) healthy() bool {
	select {
	case <-s.holder.Lost():
		return false
	default:
		return true
	}
}

// restore brings the user's files down, telling the user's connections how far it is.
func (s *sandbox) restore(ctx context.Context) error {
	s.broadcast(ctx, restoringFrame(nil))
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(s.agent.ProgressEvery)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				if p := s.takeProgress(); p != nil {
					s.broadcast(ctx, restoringFrame(p))
				}
			}
		}
	}()
	stats, err := s.syncer.Restore(ctx)
	close(stop)
	<-done
	if err != nil {
		return err
	}
	if p := s.takeProgress(); p != nil {
		s.broadcast(ctx, restoringFrame(p))
	}
	s.log.Info("restored", logFiles, stats.Files, logBytes, stats.Bytes, logging.Duration, stats.Duration.Milliseconds())
	return nil
}

func (s *sandbox) reportProgress(p objsync.Progress) {
	s.progressMu.Lock()
	defer s.progressMu.Unlock()
	s.progress = &p
}

// takeProgress returns the progress reported since the last call, if any.
func (s *sandbox) takeProgress() *objsync.Progress {
	s.progressMu.Lock()
	defer s.progressMu.Unlock()
	p := s.progress
	s.progress = nil
	return p
}

func restoringFrame(p *objsync.Progress) frames.Frame {
	f := frames.Status(frames.Restoring)
	f.Progress = &frames.Progress{}
	if p != nil {
		f.Progress = &frames.Progress{Files: int64(p.Files), Bytes: p.Bytes, TotalFiles: int64(p.TotalFiles), TotalBytes: p.TotalBytes}
	}
	return f
}

// startWorkload starts SANDBOX_COMMAND, or the demo, on the workload's port.
func (s *sandbox) startWorkload(ctx context.Context) error {
	cmd := s.cfg.Command
	if len(cmd) == 0 {
		cmd = s.agent.WorkloadCommand
	}
	if len(cmd) == 0 {
		return errors.New("no SANDBOX_COMMAND and no built-in workload")
	}
	out := s.agent.WorkloadOutput
	wc := workload.Config{
		Command: cmd, Dir: s.cfg.Workspace(), Host: "127.0.0.1", Port: s.port, UserID: s.cfg.UserID,
		Stdout: out, Stderr: out,
		// The workload often runs the user's code: it gets none of the agent's secrets.
		Unset: []string{taskenv.LeaseToken, s3bucket.EnvAccessKeyID, s3bucket.EnvSecretAccessKey},
	}
	restarts := s.agent.MaxRestarts
	if restarts < 0 {
		restarts = 0
	}
	sup, err := startWorkload(ctx, wc, restarts, s.agent.RestartBackoff, s.log, s.workloadCrashed)
	if err != nil {
		return err
	}
	s.sup = sup
	s.log.Info("workload started", logPort, s.port, "command", cmd[0])
	return nil
}

func (s *sandbox) workloadCrashed(restarting bool) {
	msg := "the workload stopped unexpectedly and is restarting"
	if !restarting {
		msg = "the workload keeps crashing; the sandbox is stopping"
	}
	s.broadcast(context.Background(), frames.Error(frames.ReasonUnavailable, msg))
}

// ready publishes the endpoint and token (RUNNING), queues the inbox ahead of any new
// frame, opens the user's connections' upstreams and tells the clients.
func (s *sandbox) ready(ctx context.Context) error {
	var renewed state.Lease
	err := retryTransient(ctx, func() (err error) {
		if err := s.holder.Fence(ctx); err != nil {
			return err
		}
		renewed, err = s.store.MarkReady(ctx, s.holder.Lease(), s.url, s.token)
		return err
	})
	if err != nil {
		if isLost(err) {
			s.holder.stepDown(err)
		}
		return fmt.Errorf("mark ready: %w", err)
	}
	s.holder.renewed(renewed)
	s.log.Info("running", logEndpoint, s.url)

	var items []state.InboxItem
	err = retryTransient(ctx, func() (err error) { items, err = s.store.Inbox(ctx, s.cfg.UserID); return err })
	if err != nil {
		return fmt.Errorf("read inbox: %w", err)
	}
	s.router.drain(items, s.acks.push)
	s.router.serve()
	if len(items) > 0 {
		s.log.Info("inbox queued", "frames", len(items))
	}

	var conns []state.Connection
	err = retryTransient(ctx, func() (err error) { conns, err = s.store.Connections(ctx, s.cfg.UserID); return err })
	if err != nil {
		s.log.Warn("list connections failed; upstreams open on their first frame", logging.Error, err.Error())
	}
	ids := make([]string, 0, len(conns))
	for _, c := range conns {
		ids = append(ids, c.ConnectionID)
	}
	s.router.ensure(ids)
	s.broadcast(ctx, frames.Status(frames.Ready))
	return nil
}

// serve runs until a reason to stop, then stops.
func (s *sandbox) serve(ctx, work context.Context, start time.Time, stopHeartbeats func()) error {
	syncStop, syncDone := s.syncLoop(work)
	defer func() { syncStop(); <-syncDone }()

	every := s.agent.IdleCheck
	if every <= 0 {
		every = min(s.cfg.SleepAfter/4, DefaultMaxIdleCheck)
	}
	idle := time.NewTicker(max(every, 10*time.Millisecond))
	defer idle.Stop()
	lifetime := time.NewTimer(max(s.cfg.MaxLifetime-s.now().Sub(start), 0))
	defer lifetime.Stop()

	for {
		select {
		case <-s.holder.Lost():
			return s.abandon()
		case <-ctx.Done():
			syncStop()
			<-syncDone
			return s.shutdown("sigterm", nil, stopHeartbeats)
		case <-lifetime.C:
			syncStop()
			<-syncDone
			return s.shutdown("max_lifetime", nil, stopHeartbeats)
		case err := <-s.sup.Failed():
			syncStop()
			<-syncDone
			return s.shutdown("workload_failed", err, stopHeartbeats)
		case <-idle.C:
			if s.idle(work) {
				syncStop()
				<-syncDone
				return s.shutdown("idle", nil, stopHeartbeats)
			}
		}
	}
}

// syncLoop syncs every SYNC_INTERVAL until stopped.
func (s *sandbox) syncLoop(ctx context.Context) (stop func(), done <-chan struct{}) {
	ctx, cancel := context.WithCancel(ctx)
	ch := make(chan struct{})
	go func() {
		defer close(ch)
		t := time.NewTicker(s.cfg.SyncInterval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			if _, err := s.syncer.Sync(ctx); err != nil {
				if errors.Is(err, objsync.ErrFenced) {
					s.holder.stepDown(err)
					return
				}
				if ctx.Err() == nil {
					s.log.Warn("sync failed; retrying at the next interval", logging.Error, err.Error())
				}
			}
		}
	}()
	var once sync.Once
	return func() { once.Do(cancel) }, ch
}

// idle reports whether nothing happened for SLEEP_AFTER and no connection is open.
// Records whose $disconnect was lost are checked with the management API; those of
// gone connections are removed.
func (s *sandbox) idle(ctx context.Context) bool {
	if s.now().Sub(s.lastActivity()) < s.cfg.SleepAfter {
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, DefaultPostTimeout)
	defer cancel()
	conns, err := s.store.Connections(ctx, s.cfg.UserID)
	if err != nil {
		s.log.Warn("idle check: list connections failed", logging.Error, err.Error())
		return false
	}
	live := 0
	for _, c := range conns {
		if s.isYoung(c) {
			live++
			continue
		}
		if s.holder.Fence(ctx) != nil {
			return false
		}
		ok, err := s.relay.Live(ctx, c.ConnectionID)
		switch {
		case err != nil:
			s.log.Warn("idle check: connection state unknown", logging.ConnectionID, c.ConnectionID, logging.Error, err.Error())
			return false
		case ok:
			live++
		default:
			s.removeRecord(ctx, c.ConnectionID)
			s.router.forget(c.ConnectionID)
		}
	}
	return live == 0
}

// failStart ends a start that did not reach the workload: the lease is released
// (nothing to sync: no workload ran) so the next connection starts afresh.
func (s *sandbox) failStart(ctx context.Context, step string, cause error) error {
	if s.holder.isLost() || isLost(cause) {
		return s.abandon()
	}
	if s.sup != nil {
		s.sup.kill()
	}
	wctx, cancel := context.WithTimeout(context.Background(), s.reserve())
	defer cancel()
	interrupted := ctx.Err() != nil
	reason := "start failed: " + step
	if interrupted {
		reason = "stopped while starting"
		s.broadcast(wctx, frames.Status(frames.Stopping))
	} else {
		s.log.Error("start failed", logging.Reason, step, logging.Error, cause.Error())
		s.broadcast(wctx, frames.Error(frames.ReasonStartFailed, "the sandbox could not start; reconnect to try again"))
	}
	if err := s.holder.Fence(wctx); err != nil {
		return s.abandon()
	}
	if err := s.store.Release(wctx, s.holder.Lease(), reason); err != nil {
		s.log.Error("release failed", logging.Error, err.Error())
	}
	if interrupted {
		s.log.Info("stopped while starting")
		return nil
	}
	return fmt.Errorf("%w: %s: %w", ErrStart, step, cause)
}

// reserve is the time kept for the last write of a stop (Stop or Release).
func (s *sandbox) reserve() time.Duration { return min(5*time.Second, s.cfg.StopTimeout/5) }

// shutdown is the stop sequence: MarkStopping, tell the clients, refuse new frames,
// deliver the accepted ones, stop the workload (SIGTERM, grace), final sync, STOPPED.
func (s *sandbox) shutdown(reason string, cause error, stopHeartbeats func()) error {
	begin := s.now()
	s.log.Info("stopping", logging.Reason, reason)
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.StopTimeout-s.reserve())
	defer cancel()

	err := retryTransientFor(ctx, 5*time.Second, func() error {
		if err := s.holder.Fence(ctx); err != nil {
			return err
		}
		return s.store.MarkStopping(ctx, s.holder.Lease())
	})
	if isLost(err) {
		s.holder.stepDown(err)
		return s.abandon()
	}
	if err != nil {
		s.log.Warn("mark stopping failed; stopping anyway", logging.Error, err.Error())
	}
	s.broadcast(ctx, frames.Status(frames.Stopping))
	s.router.stopTaking()

	flushCtx, flushCancel := context.WithTimeout(ctx, min(s.cfg.StopTimeout/4, 10*time.Second))
	s.router.flush(flushCtx)
	flushCancel()
	s.sup.stop(s.cfg.WorkloadGrace)
	s.router.abort()
	s.acks.close(ctx)
	if s.holder.isLost() {
		return s.abandon()
	}

	stats, syncErr := s.syncer.Sync(ctx)
	stopHeartbeats()
	if errors.Is(syncErr, objsync.ErrFenced) || s.holder.isLost() {
		s.holder.stepDown(fmt.Errorf("final sync: %w", syncErr))
		return s.abandon()
	}
	wctx, wcancel := context.WithTimeout(context.Background(), s.reserve())
	defer wcancel()
	if syncErr != nil {
		s.log.Error("final sync failed; releasing the lease without marking the files saved", logging.Error, syncErr.Error())
		if err := s.store.Release(wctx, s.holder.Lease(), "final sync failed"); err != nil {
			s.log.Error("release failed", logging.Error, err.Error())
		}
		return fmt.Errorf("%w: %w", ErrFinalSync, syncErr)
	}
	if err := s.store.Stop(wctx, s.holder.Lease()); err != nil {
		s.log.Error("mark stopped failed", logging.Error, err.Error())
		if isLost(err) {
			return fmt.Errorf("%w: %w", ErrLeaseLost, err)
		}
		return fmt.Errorf("mark stopped: %w", err)
	}
	s.log.Info("stopped", logging.Reason, reason, logFiles, stats.Files, logBytes, stats.Bytes,
		logging.Duration, s.now().Sub(begin).Milliseconds())
	return cause
}

// abandon stops at once after the lease was lost: no sync, no post, no write.
func (s *sandbox) abandon() error {
	if s.router != nil {
		s.router.abort()
	}
	if s.sup != nil {
		s.sup.kill()
	}
	if s.acks != nil {
		s.acks.drop()
	}
	return s.holder.Err()
}

func isLost(err error) bool {
	return errors.Is(err, state.ErrLeaseLost) || errors.Is(err, ErrLeaseLost) || errors.Is(err, objsync.ErrFenced)
}

// retryTransient calls fn until it succeeds, fails for a reason other than DynamoDB
// being unavailable, ctx ends, or DefaultWriteRetryFor passes.
func retryTransient(ctx context.Context, fn func() error) error {
	return retryTransientFor(ctx, DefaultWriteRetryFor, fn)
}

func retryTransientFor(ctx context.Context, d time.Duration, fn func() error) error {
	deadline := time.Now().Add(d)
	delay := 100 * time.Millisecond
	for {
		err := fn()
		if err == nil || !(errors.Is(err, state.ErrUnavailable) || errors.Is(err, state.ErrContention)) || time.Now().After(deadline) {
			return err
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return errors.Join(err, ctx.Err())
		case <-t.C:
		}
		delay = min(2*delay, time.Second)
	}
}

// newGatewayToken returns the token the Lambdas must present: 32 random bytes,
// base64url. It is published only through MarkReady and never logged.
func newGatewayToken() string {
	var b [32]byte
	_, _ = crand.Read(b[:]) // crypto/rand.Read never fails on Linux
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// freePort returns a loopback port that was free a moment ago.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("pick workload port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}
