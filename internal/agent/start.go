package agent

import (
	"context"
	crand "crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"github.com/sandgate/sandgate/internal/agentapi"
	"github.com/sandgate/sandgate/internal/frames"
	"github.com/sandgate/sandgate/internal/logging"
	"github.com/sandgate/sandgate/internal/objsync"
	"github.com/sandgate/sandgate/internal/state"
	"github.com/sandgate/sandgate/internal/upstream"
	"github.com/sandgate/sandgate/internal/workload"
)

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
			logGeneration, sb.Generation, logTaskGeneration, s.cfg.Generation)
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
// DATA_DIR is the agent's and searchable, so the workload can reach its workspace
// through it; the workspace is private (root's until the restore is done, then the
// workload's); the state directory (the sync manifest) is the agent's alone.
func (s *sandbox) prepare() error {
	if err := prepareDirs(s.cfg); err != nil {
		return err
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

// prepareDirs makes DATA_DIR (the agent's, searchable), the workspace (the agent's
// and private until handOver) and the state directory (the agent's and private), and
// checks that the workload's uid can reach the workspace: before a long restore, and
// naming the directory in the way.
func prepareDirs(cfg Config) error {
	if !cfg.sameUID() && os.Geteuid() != 0 {
		return fmt.Errorf("the agent runs as uid %d, not root, so it cannot start the workload under %s %d: set %s and %s to %d and %d to run it as the agent's own uid, which isolates nothing",
			os.Geteuid(), EnvWorkloadUID, cfg.WorkloadUID, EnvWorkloadUID, EnvWorkloadGID, os.Geteuid(), os.Getegid())
	}
	if err := ownDir(cfg.DataDir, 0o711); err != nil {
		return err
	}
	for _, d := range []string{cfg.Workspace(), cfg.StatePath()} {
		if err := ownDir(d, 0o700); err != nil {
			return err
		}
	}
	if !cfg.sameUID() {
		if err := workload.CheckAccess(cfg.DataDir, cfg.WorkloadUID, cfg.WorkloadGID); err != nil {
			return fmt.Errorf("the workload could not reach its workspace: %w", err)
		}
	}
	return nil
}

// sameUID reports whether the workload runs as the agent's own uid and gid (a local
// stack that does not run as root): then nothing is chowned and nothing isolates it.
func (c Config) sameUID() bool {
	return c.WorkloadUID == uint32(os.Geteuid()) && c.WorkloadGID == uint32(os.Getegid())
}

// ownDir makes dir, or takes it over, as the agent's with mode: CAP_CHOWN makes it
// ours first (whoever had it), so the chmod needs no CAP_FOWNER.
func ownDir(dir string, mode os.FileMode) error {
	if err := os.MkdirAll(dir, mode); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	if err := os.Lchown(dir, os.Geteuid(), os.Getegid()); err != nil {
		return fmt.Errorf("own %s: %w", dir, err)
	}
	if err := os.Chmod(dir, mode); err != nil {
		return fmt.Errorf("chmod %s: %w", dir, err)
	}
	return nil
}

// handOver gives the restored workspace to the workload's uid and gid: every file
// and directory, symlinks themselves (never followed), each directory after its
// contents (so walking the tree never needs to read a directory already given away).
// The workload has not started, so nothing in the tree moves meanwhile.
func handOver(cfg Config) error {
	if cfg.sameUID() {
		return nil
	}
	var paths []string
	err := filepath.WalkDir(cfg.Workspace(), func(path string, d fs.DirEntry, err error) error {
		paths = append(paths, path)
		return err
	})
	for i := len(paths) - 1; i >= 0 && err == nil; i-- {
		err = os.Lchown(paths[i], int(cfg.WorkloadUID), int(cfg.WorkloadGID))
	}
	if err != nil {
		return fmt.Errorf("hand the workspace to the workload: %w", err)
	}
	return nil
}

// listen learns the task's address and serves the API on it. The token is published
// only by MarkReady, so nothing but the health check can be served before ready.
func (s *sandbox) listen(ctx context.Context) error {
	addr, err := Address(ctx, s.hc, s.cfg.MetadataURI, 0)
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

// restore brings the user's files down, telling the user's connections how far it is.
func (s *sandbox) restore(ctx context.Context) error {
	s.broadcast(ctx, restoringFrame(nil))
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(s.progressEvery)
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
	// The workload often runs the user's code: its own uid, its limits, and an
	// environment of the allowlist only.
	wc := workload.Config{
		Command: cmd, Dir: s.cfg.Workspace(), Host: "127.0.0.1", Port: s.port, UserID: s.cfg.UserID,
		UID: s.cfg.WorkloadUID, GID: s.cfg.WorkloadGID, Limits: s.cfg.WorkloadLimits,
		// Where the agent serves it first, so no declared variable can shadow them.
		Env:    append(slices.Clone(s.wapi.env), s.cfg.WorkloadEnv...),
		Reaper: s.agent.Reaper, Stdout: out, Stderr: out,
	}
	restarts := s.agent.MaxRestarts
	if restarts < 0 {
		restarts = 0
	}
	sup, err := startWorkload(ctx, wc, restarts, s.restartBackoff, s.log, s.workloadCrashed)
	if err != nil {
		return err
	}
	s.sup = sup
	s.log.Info("workload started", logPort, s.port, logCommand, cmd[0],
		logUID, s.cfg.WorkloadUID, logGID, s.cfg.WorkloadGID)
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
		s.log.Info("inbox queued", logFrames, len(items))
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
