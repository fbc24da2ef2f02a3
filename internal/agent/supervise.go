package agent

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/sandgate/sandgate/internal/logging"
	"github.com/sandgate/sandgate/internal/workload"
)

// DefaultMaxRestarts is how often a crashed workload is restarted before the sandbox
// gives up and stops (with a final sync and an error frame).
const DefaultMaxRestarts = 3

// DefaultRestartBackoff is the delay before the first restart; it doubles each time.
const DefaultRestartBackoff = time.Second

// supervisor runs the workload and restarts it when it crashes, a bounded number of
// times.
type supervisor struct {
	cfg         workload.Config
	maxRestarts int
	backoff     time.Duration
	log         *slog.Logger
	// crashed is called (from the watcher) each time the workload exits on its own.
	crashed func(restarting bool)

	ctx    context.Context // cancelled by stop and kill
	cancel context.CancelFunc

	mu       sync.Mutex
	p        *workload.Process
	restarts int
	failed   chan error // receives once when the restarts are spent
	done     chan struct{}
}

// startWorkload starts the workload and waits until it listens.
func startWorkload(ctx context.Context, cfg workload.Config, maxRestarts int, backoff time.Duration, log *slog.Logger, crashed func(bool)) (*supervisor, error) {
	p, err := workload.Start(ctx, cfg)
	if err != nil {
		return nil, err
	}
	sctx, cancel := context.WithCancel(context.Background())
	s := &supervisor{cfg: cfg, maxRestarts: maxRestarts, backoff: backoff, log: log, crashed: crashed,
		ctx: sctx, cancel: cancel, p: p, failed: make(chan error, 1), done: make(chan struct{})}
	go s.watch()
	return s, nil
}

// Failed receives the reason once the workload has crashed more than maxRestarts times.
func (s *supervisor) Failed() <-chan error { return s.failed }

func (s *supervisor) watch() {
	defer close(s.done)
	for {
		s.mu.Lock()
		p := s.p
		s.mu.Unlock()
		select {
		case <-p.Done():
		case <-s.ctx.Done():
			return
		}
		if s.ctx.Err() != nil {
			return // stopped on purpose
		}
		s.mu.Lock()
		s.restarts++
		n := s.restarts
		s.mu.Unlock()
		err := p.Err()
		if n > s.maxRestarts {
			s.log.Error("workload crashed; no restarts left", logging.Error, errString(err), logRestarts, n-1)
			s.crashed(false)
			s.failed <- fmt.Errorf("%w: exited %d times, last: %v", ErrWorkload, n, err)
			return
		}
		s.log.Warn("workload crashed; restarting", logging.Error, errString(err), logRestarts, n)
		s.crashed(true)
		if !s.restart(n) {
			return
		}
	}
}

// restart starts the workload again after the nth crash's backoff; a start that fails
// counts as another crash. It returns false when stopped or out of restarts.
func (s *supervisor) restart(n int) bool {
	for {
		t := time.NewTimer(s.backoff << min(n-1, 10))
		select {
		case <-s.ctx.Done():
			t.Stop()
			return false
		case <-t.C:
		}
		p, err := workload.Start(s.ctx, s.cfg)
		if err == nil {
			s.mu.Lock()
			s.p = p
			s.mu.Unlock()
			if s.ctx.Err() != nil { // stopped while starting
				p.Stop(0)
				return false
			}
			s.log.Info("workload restarted", logRestarts, n)
			return true
		}
		if s.ctx.Err() != nil {
			return false
		}
		s.mu.Lock()
		s.restarts++
		n = s.restarts
		s.mu.Unlock()
		if n > s.maxRestarts {
			s.log.Error("workload restart failed; no restarts left", logging.Error, err.Error())
			s.failed <- fmt.Errorf("%w: restart failed: %w", ErrWorkload, err)
			return false
		}
		s.log.Warn("workload restart failed", logging.Error, err.Error(), logRestarts, n)
	}
}

// stop sends the workload SIGTERM, waits up to grace for it to flush and exit, then
// kills it; no restart follows.
func (s *supervisor) stop(grace time.Duration) {
	s.cancel()
	<-s.done
	s.mu.Lock()
	p := s.p
	s.mu.Unlock()
	start := time.Now()
	err := p.Stop(grace)
	s.log.Info("workload stopped", logging.Error, errString(err), logging.Duration, time.Since(start).Milliseconds())
	s.killOrphans()
}

// kill ends the workload at once.
func (s *supervisor) kill() { s.stop(0) }

// killOrphans ends what the workload left running outside its process group (a
// daemon that made a session of its own), once the workload has stopped. Only a
// process with a Reaper has them as children; on Fargate the end of the agent, PID 1,
// would end them too, but not on the local stack.
func (s *supervisor) killOrphans() {
	r := s.cfg.Reaper
	if r == nil {
		return
	}
	switch n, clean := r.KillOrphans(DefaultOrphanWait); {
	case !clean:
		s.log.Error("processes the workload left behind are still there after SIGKILL", logOrphans, n)
	case n > 0:
		s.log.Warn("killed processes the workload left behind", logOrphans, n)
	}
}

// DefaultOrphanWait bounds the wait for the orphans the agent killed to be reaped.
const DefaultOrphanWait = 5 * time.Second

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
