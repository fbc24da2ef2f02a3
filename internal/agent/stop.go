package agent

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/sandgate/sandgate/internal/frames"
	"github.com/sandgate/sandgate/internal/logging"
	"github.com/sandgate/sandgate/internal/objsync"
)

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
	if err := s.store.Abort(wctx, s.holder.Lease(), reason); err != nil {
		s.log.Error("release failed", logging.Error, err.Error())
	}
	if interrupted {
		s.log.Info("stopped while starting")
		return nil
	}
	return fmt.Errorf("%w: %s: %w", ErrStart, step, cause)
}

// reserve is the time kept for the last write of a stop (Stop or Abort).
func (s *sandbox) reserve() time.Duration { return min(5*time.Second, s.cfg.StopTimeout/5) }

// shutdown is the stop sequence: MarkStopping, refuse new frames, tell the clients,
// deliver the accepted ones, stop the workload (SIGTERM, grace), final sync, STOPPED.
// Frames are refused before the clients hear `stopping`, so whatever a client sends
// once told goes to the inbox for the next sandbox, whoever handles it.
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
	s.router.stopTaking()
	s.broadcast(ctx, frames.Status(frames.Stopping))

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
	// The final sync's receipt (none when it failed or stored nothing new), before Stop
	// ends the lease it is recorded under: the clients hear, after their stopping,
	// what a clean stop kept.
	s.saved(ctx, stats.Marker)
	if s.holder.isLost() {
		return s.abandon()
	}
	wctx, wcancel := context.WithTimeout(context.Background(), s.reserve())
	defer wcancel()
	if syncErr != nil {
		s.log.Error("final sync failed; releasing the lease without marking the files saved", logging.Error, syncErr.Error())
		if err := s.store.Abort(wctx, s.holder.Lease(), "final sync failed"); err != nil {
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
