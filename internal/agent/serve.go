package agent

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/sandgate/sandgate/internal/logging"
	"github.com/sandgate/sandgate/internal/objsync"
)

// serve runs until a reason to stop, then stops.
func (s *sandbox) serve(ctx, work context.Context, start time.Time, stopHeartbeats func()) error {
	syncStop, syncDone := s.syncLoop(work)
	defer func() { syncStop(); <-syncDone }()

	idle := time.NewTicker(s.idleCheck)
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

// idle reports whether nothing happened for SLEEP_AFTER (no client frame, no word
// from the workload that it is busy, no upstream call in flight) and no connection is
// open. Records whose $disconnect was lost are checked with the management API; those
// of gone connections are removed.
func (s *sandbox) idle(ctx context.Context) bool {
	if s.now().Sub(s.lastActivity()) < s.cfg.SleepAfter || s.wapi.busy() {
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
