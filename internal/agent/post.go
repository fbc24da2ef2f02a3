package agent

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/sandgate/sandgate/internal/frames"
	"github.com/sandgate/sandgate/internal/logging"
	"github.com/sandgate/sandgate/internal/relay"
	"github.com/sandgate/sandgate/internal/state"
	"github.com/sandgate/sandgate/internal/upstream"
)

// DefaultConnectGrace is how long after its record was written a connection's 410 is
// taken for "still in its $connect" (API Gateway refuses posts until the $connect
// integration returns, at most 29 s) rather than "gone".
const DefaultConnectGrace = 30 * time.Second

// DefaultPostTimeout bounds one post or broadcast to the clients.
const DefaultPostTimeout = 15 * time.Second

// poster returns the Poster of connection id's upstream: every post is fenced, a 410
// of a connection still in its $connect is retried, and a gone connection's record is
// removed.
func (s *sandbox) poster(id string) upstream.Poster {
	return func(ctx context.Context, data []byte) error {
		delay := 100 * time.Millisecond
		for {
			if err := s.holder.Fence(ctx); err != nil {
				return err
			}
			err := s.relay.Send(ctx, id, data)
			if !errors.Is(err, relay.ErrGone) {
				return err
			}
			young, rerr := s.young(ctx, id)
			if rerr != nil {
				return fmt.Errorf("post to %s: %w", id, rerr)
			}
			if !young {
				s.removeRecord(ctx, id)
				return upstream.ErrGone
			}
			t := time.NewTimer(delay)
			select {
			case <-ctx.Done():
				t.Stop()
				return ctx.Err()
			case <-t.C:
			}
			delay = min(2*delay, 2*time.Second)
		}
	}
}

// young reports whether connection id has a record younger than ConnectGrace.
func (s *sandbox) young(ctx context.Context, id string) (bool, error) {
	conns, err := s.store.Connections(ctx, s.cfg.UserID)
	if err != nil {
		return false, err
	}
	for _, c := range conns {
		if c.ConnectionID == id {
			return s.isYoung(c), nil
		}
	}
	return false, nil
}

func (s *sandbox) isYoung(c state.Connection) bool {
	return s.now().Sub(c.ConnectedAt) < s.connectGrace
}

// removeRecord deletes a gone connection's record, if the lease still allows writes.
func (s *sandbox) removeRecord(ctx context.Context, id string) {
	if s.holder.Fence(ctx) != nil {
		return
	}
	if err := s.store.RemoveConnection(ctx, s.cfg.UserID, id); err != nil {
		s.log.Warn("remove gone connection failed", logging.ConnectionID, id, logging.Error, err.Error())
		return
	}
	s.log.Info("gone connection removed", logging.ConnectionID, id)
}

// broadcast posts f to every connection of the user and returns how many got it.
// Gone connections past their $connect are removed; young ones are skipped.
func (s *sandbox) broadcast(ctx context.Context, f frames.Frame) int {
	// A stop that begins mid-broadcast must not cut the frames already on their way.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), DefaultPostTimeout)
	defer cancel()
	if s.holder.Fence(ctx) != nil {
		return 0
	}
	conns, err := s.store.Connections(ctx, s.cfg.UserID)
	if err != nil {
		s.log.Warn("broadcast: list connections failed", logging.State, f.State, logging.Reason, f.Reason, logging.Error, err.Error())
		return 0
	}
	data := f.Bytes()
	var (
		mu   sync.Mutex
		sent int
		wg   sync.WaitGroup
	)
	for _, c := range conns {
		wg.Go(func() {
			if s.holder.Fence(ctx) != nil {
				return
			}
			err := s.relay.Send(ctx, c.ConnectionID, data)
			switch {
			case err == nil:
				mu.Lock()
				sent++
				mu.Unlock()
			case errors.Is(err, relay.ErrGone) && !s.isYoung(c):
				s.removeRecord(ctx, c.ConnectionID)
				s.router.forget(c.ConnectionID)
			case errors.Is(err, relay.ErrGone):
			default:
				s.log.Warn("broadcast failed", logging.ConnectionID, c.ConnectionID, logging.Error, err.Error())
			}
		})
	}
	wg.Wait()
	return sent
}

// closeClient closes a client connection whose upstream ended on the workload's side.
func (s *sandbox) closeClient(id string, cause error) {
	ctx, cancel := context.WithTimeout(context.Background(), DefaultPostTimeout)
	defer cancel()
	if s.holder.Fence(ctx) != nil {
		return
	}
	if errors.Is(cause, upstream.ErrUnavailable) {
		_ = s.relay.Send(ctx, id, frames.Error(frames.ReasonUnavailable, "the workload could not be reached").Bytes())
	}
	if err := s.relay.Close(ctx, id); err != nil {
		s.log.Warn("close client failed", logging.ConnectionID, id, logging.Error, err.Error())
	}
}
