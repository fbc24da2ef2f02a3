package agent

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/sandgate/sandgate/internal/frames"
	"github.com/sandgate/sandgate/internal/logging"
	"github.com/sandgate/sandgate/internal/objsync"
	"github.com/sandgate/sandgate/internal/state"
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
			stats, err := s.syncer.Sync(ctx)
			if err != nil {
				if errors.Is(err, objsync.ErrFenced) {
					s.holder.stepDown(err)
					return
				}
				if ctx.Err() == nil {
					s.log.Warn("sync failed; retrying at the next interval", logging.Error, err.Error())
				}
				continue
			}
			s.saved(ctx, stats.Marker)
		}
	}()
	var once sync.Once
	return func() { once.Do(cancel) }, ch
}

// saved hands the receipt of a sync that wrote marker m (nil: the sync stored nothing
// and wrote none, and nothing is said) to the user: recorded on the user's record, for
// GET /status, then a sandgate.status frame of state saved to every connection.
// Neither is retried: the next completed sync sends the next receipt, and a record
// left behind understates what is stored, never overstates it.
func (s *sandbox) saved(ctx context.Context, m *objsync.Marker) {
	if m == nil {
		return
	}
	r := receipt(m)
	err := retryTransientFor(ctx, time.Second, func() error {
		if err := s.holder.Fence(ctx); err != nil {
			return err
		}
		return s.store.RecordSync(ctx, s.holder.Lease(), state.SyncReceipt{
			Time: r.Time, Generation: r.Generation, Files: r.Files, Bytes: r.Bytes, Digest: r.Digest,
		})
	})
	switch {
	case isLost(err):
		s.holder.stepDown(err)
		return
	case err != nil:
		s.log.Warn("recording the sync's receipt failed; telling the clients anyway", logging.Error, err.Error())
	}
	s.broadcast(ctx, frames.SavedFrame(r))
}

// receipt is the durability receipt of marker m. Its time is cut to the millisecond
// the record keeps, so the frame and GET /status tell the same receipt.
func receipt(m *objsync.Marker) frames.Receipt {
	return frames.Receipt{Time: m.Time.UTC().Truncate(time.Millisecond), Generation: m.Generation,
		Files: m.Files, Bytes: m.Bytes, Digest: m.Digest}
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
