package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sandgate/sandgate/internal/apiproxy"
	"github.com/sandgate/sandgate/internal/logging"
	"github.com/sandgate/sandgate/internal/objsync"
	"github.com/sandgate/sandgate/internal/relay"
	"github.com/sandgate/sandgate/internal/state"
	"github.com/sandgate/sandgate/internal/vend"
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
	// Credentials, when set, are what Store, Bucket and Management sign with (see
	// container/main.go): Run fetches them before anything else and keeps them
	// renewed, and the sandbox fences itself as on a lost lease when they are lost.
	// Tests that give the agent credentials of their own leave it nil.
	Credentials *Credentials
	// Log receives one line per event; scope it with the user id (logging.UserID).
	Log *slog.Logger
	// WorkloadOutput receives the workload's stdout and stderr (nil discards).
	WorkloadOutput io.Writer
	// HTTPClient reaches the task metadata endpoint.
	HTTPClient *http.Client
	// WorkloadCommand runs when Config.Command is empty: the built-in demo.
	WorkloadCommand []string
	// Reaper, when set, collects the workload's exit status and the orphans it leaves
	// (the agent as the container's init: see container/main.go); the agent kills
	// what orphans remain once the workload has stopped. A process with a Reaper must
	// start every child through it, so tests that run the agent inside a test binary
	// leave it nil.
	Reaper *workload.Reaper
	// SpendLedger keeps the user's spend on the upstreams (Config.Upstreams) across
	// the sandbox's restarts; nil keeps it in memory, for this sandbox only.
	SpendLedger apiproxy.Ledger
	// UpstreamTransport, when set, sends the upstream proxies' calls (tests that
	// trust their own TLS server).
	UpstreamTransport http.RoundTripper

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

	// The Agent's tunables, defaults applied.
	hc                                     *http.Client
	connectGrace, progressEvery            time.Duration
	restartBackoff, fenceMargin, idleCheck time.Duration

	activity atomic.Int64 // unix nanoseconds of the last client frame or open, or the workload's word
	acks     *ackQueue
	wapi     *workloadAPI // what the agent serves the workload (workloadapi.go)
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
	s := &sandbox{
		agent: a, cfg: a.Config, store: a.Store, log: log, now: now,
		relay:          &relay.Relay{API: a.Management, Conns: a.Store, Log: log},
		hc:             a.HTTPClient,
		connectGrace:   orDefault(a.ConnectGrace, DefaultConnectGrace),
		progressEvery:  orDefault(a.ProgressEvery, DefaultProgressEvery),
		restartBackoff: orDefault(a.RestartBackoff, DefaultRestartBackoff),
		fenceMargin:    orDefault(a.FenceMargin, a.Config.LeaseTTL/6),
		idleCheck:      orDefault(a.IdleCheck, max(min(a.Config.SleepAfter/4, DefaultMaxIdleCheck), 10*time.Millisecond)),
	}
	if s.hc == nil {
		s.hc = &http.Client{Timeout: 5 * time.Second}
	}
	s.touch()
	return s, nil
}

func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

func (s *sandbox) touch() { s.activity.Store(s.now().UnixNano()) }

func (s *sandbox) lastActivity() time.Time { return time.Unix(0, s.activity.Load()) }

func (s *sandbox) run(ctx context.Context) error {
	start := s.now()
	s.log.Info("agent starting", logGeneration, s.cfg.Generation, logPrefix, s.cfg.Prefix)

	creds := s.agent.Credentials
	if creds != nil {
		// Nothing is read or written before the vendor, checking the record against
		// this task, has handed over the user's credentials.
		if err := creds.Fetch(ctx); err != nil {
			s.log.Error("no credentials; exiting without writing", logging.Error, err.Error())
			if errors.Is(err, vend.ErrRefused) {
				return fmt.Errorf("%w: %w", ErrNotHolder, err)
			}
			return fmt.Errorf("credentials: %w", err)
		}
		credsCtx, stopCreds := context.WithCancel(context.Background())
		defer stopCreds()
		go creds.Run(credsCtx)
	}

	lease, err := s.verify(ctx)
	if err != nil {
		return err
	}
	s.holder = newHolder(s.store, lease, s.cfg.Heartbeat(), s.fenceMargin, s.lastActivity, s.now, s.log)
	hbCtx, hbStop := context.WithCancel(context.Background())
	hbDone := make(chan struct{})
	go func() { defer close(hbDone); s.holder.run(hbCtx) }()
	stopHeartbeats := func() { hbStop(); <-hbDone }
	defer stopHeartbeats()
	if creds != nil {
		// Credentials that could not be renewed, or whose renewal the vendor refused,
		// end the sandbox as a lost lease does: nothing more is written.
		go func() {
			select {
			case <-creds.Lost():
				s.holder.stepDown(creds.Err())
			case <-hbCtx.Done():
			}
		}()
	}

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
	if err := s.startWorkloadAPI(); err != nil {
		return s.failStart(ctx, "workload api", err)
	}
	defer s.wapi.close()
	if err := s.listen(work); err != nil {
		return s.failStart(ctx, "listen", err)
	}
	defer s.closeServer()

	if err := s.restore(work); err != nil {
		return s.failStart(ctx, "restore", err)
	}
	if err := handOver(s.cfg); err != nil {
		return s.failStart(ctx, "workspace", err)
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

func (s *sandbox) healthy() bool {
	select {
	case <-s.holder.Lost():
		return false
	default:
		return true
	}
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

// Log keys of this package; the shared ones come from internal/logging.
const (
	logSeq        = "seq"
	logGeneration = "generation"
	logEndpoint   = "endpoint"
	logFiles      = "files"
	logBytes      = "bytes"
	logPort       = "port"
	logRestarts   = "restarts"
	logPrefix     = "prefix"
	logCommand    = "command"
	logUID        = "uid"
	logGID        = "gid"
	logOrphans    = "orphans"
	logFrames     = "frames"
	// logTaskGeneration is the generation RunTask gave the task, beside the record's.
	logTaskGeneration = "taskGeneration"
)
