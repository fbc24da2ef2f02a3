package state_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sandgate/sandgate/internal/state"
)

// model is the reference the randomized test checks the Store against: what each
// user's record must be, derived only from the lease rules.
type model struct {
	max     int
	records map[string]*modelRecord
}

type modelRecord struct {
	state    state.State
	token    string
	gen      int64
	deadline time.Time
	started  bool  // a purge lock whose deletion began (BeginPurge)
	slot     int64 // the generation whose task holds the record's slot, 0 for none
}

// live is what the capacity counter must be: the records that hold a slot.
func (m *model) live() int {
	n := 0
	for _, r := range m.records {
		if r.state.Counted() || r.slot != 0 {
			n++
		}
	}
	return n
}

func (r *modelRecord) expired(now time.Time) bool { return !now.Before(r.deadline) }

// outcome classes a call's error.
func outcome(err error) string {
	for _, c := range []struct {
		target error
		name   string
	}{
		{state.ErrPurgeStarted, "started"},
		{state.ErrHeld, "held"}, {state.ErrPurging, "purging"}, {state.ErrCapacity, "capacity"},
		{state.ErrLeaseLost, "lost"}, {state.ErrState, "state"},
	} {
		if errors.Is(err, c.target) {
			return c.name
		}
	}
	if err != nil {
		return "error: " + err.Error()
	}
	return "ok"
}

// A randomized sequence of start / ready / heartbeat / stop / abort / release / crash
// (time passing without heartbeats) / takeover / reap / purge (lock, begin, release,
// finish, resume) / task events (exited, stopped, for the current generation or an
// old one, repeated) / cleanup's slot repair / capacity check across users, per seed.
// Each step's outcome must be the one the lease and slot rules predict, in particular
// no write with a stale token succeeds and no slot is given back twice; after each
// step the capacity counter equals the records that hold a slot, and at the end every
// record matches the model.
func TestStore_RandomizedSequences(t *testing.T) {
	const seeds, steps = 24, 70
	for seed := range seeds {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			t.Parallel()
			runSequence(t, uint64(seed), steps)
		})
	}
}

func runSequence(t *testing.T, seed uint64, steps int) {
	e := newEnv(t)
	e.store.MaxSandboxes = 2
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(seed, 0x5a11d))
	users := []string{"user_a", "user_b", "user_c", "user_d"}
	m := &model{max: e.store.MaxSandboxes, records: map[string]*modelRecord{}}
	leases := map[string][]state.Lease{} // every lease ever handed out, stale ones included
	pick := func(u string) (state.Lease, bool) {
		ls := leases[u]
		if len(ls) == 0 {
			return state.Lease{}, false
		}
		if rng.IntN(3) > 0 {
			return ls[len(ls)-1], true // usually the newest, often still current
		}
		return ls[rng.IntN(len(ls))], true
	}
	// fenced predicts a holder write: allowed only with the record's token, in allowed.
	fenced := func(u string, l state.Lease, allowed ...state.State) string {
		r := m.records[u]
		if r == nil || r.token != l.Token {
			return "lost"
		}
		if !slices.Contains(allowed, r.state) {
			return "state"
		}
		return "ok"
	}
	counted := []state.State{state.Starting, state.Running, state.Stopping}

	for step := range steps {
		u := users[rng.IntN(len(users))]
		now := e.clock.Now()
		r := m.records[u]
		var op, want, got string
		var apply func()
		switch k := rng.IntN(17); k {
		case 0, 1: // start, or take over a dead sandbox
			op = "acquire"
			switch {
			case r == nil || r.state == state.Stopped && r.slot == 0:
				want = "ok"
				if m.live() >= m.max {
					want = "capacity"
				}
			case r.state == state.Stopped: // takes the stopping task's slot over
				want = "ok"
			case r.state == state.Purging: // expired or not
				want = "purging"
			case !r.expired(now):
				want = "held"
			default:
				want = "ok" // takeover
			}
			l, err := e.store.Acquire(ctx, u)
			got = outcome(err)
			var held *state.HeldError
			if errors.As(err, &held) && held.Sandbox.LeaseToken != r.token {
				t.Fatalf("seed %d step %d: HeldError carries another token", seed, step)
			}
			apply = func() {
				gen := int64(1)
				if r != nil {
					gen = r.gen + 1
				}
				if l.Generation != gen {
					t.Fatalf("seed %d step %d: generation %d, want %d", seed, step, l.Generation, gen)
				}
				m.records[u] = &modelRecord{state.Starting, l.Token, gen, now.Add(e.store.StartTTL), false, gen}
				leases[u] = append(leases[u], l)
			}
		case 2: // the agent becomes ready
			l, ok := pick(u)
			if !ok {
				continue
			}
			op, want = "ready", fenced(u, l, state.Starting, state.Running)
			_, err := e.store.MarkReady(ctx, l, "http://10.0.0.1:8080", "gw")
			got = outcome(err)
			apply = func() { r.state, r.deadline = state.Running, now.Add(e.store.LeaseTTL) }
		case 3, 4:
			l, ok := pick(u)
			if !ok {
				continue
			}
			op, want = "heartbeat", fenced(u, l, counted...)
			_, err := e.store.Heartbeat(ctx, l, now)
			got = outcome(err)
			apply = func() { r.deadline = now.Add(e.store.LeaseTTL) }
		case 5:
			l, ok := pick(u)
			if !ok {
				continue
			}
			op, want = "stopping", fenced(u, l, counted...)
			got = outcome(e.store.MarkStopping(ctx, l))
			apply = func() { r.state = state.Stopping }
		case 6: // the holder stops or gives up; or the launcher releases a failed start
			l, ok := pick(u)
			if !ok {
				continue
			}
			want = fenced(u, l, counted...)
			switch rng.IntN(3) {
			case 0:
				op = "stop"
				got = outcome(e.store.Stop(ctx, l))
			case 1:
				op = "abort"
				got = outcome(e.store.Abort(ctx, l, "start failed"))
			default:
				op = "release"
				got = outcome(e.store.Release(ctx, l, "run task failed"))
			}
			if r != nil && r.token == l.Token && r.state == state.Stopped {
				want = "ok" // idempotent
				if op == "release" && r.slot != 0 {
					want = "state" // the holder stopped: its task gives the slot back
				}
			}
			apply = func() {
				if r.state == state.Stopped {
					return
				}
				r.state = state.Stopped // Stop and Abort leave the slot to the task
				if op == "release" {
					r.slot = 0
				}
			}
		case 7: // crash: time passes without heartbeats
			e.clock.Advance([]time.Duration{time.Second, 30 * time.Second, e.store.LeaseTTL, e.store.StartTTL, e.store.PurgeTTL}[rng.IntN(5)])
			continue
		case 8: // cleanup: reap what it sees expired
			sb, err := e.store.Get(ctx, u)
			if errors.Is(err, state.ErrNotFound) {
				continue
			}
			if err != nil {
				t.Fatal(err)
			}
			op = "reap"
			switch {
			case r.state == state.Stopped:
				want = "ok"
			case r.state == state.Purging: // expired or not
				want = "purging"
			case !r.expired(now):
				want = "held"
			default:
				want = "ok"
			}
			got = outcome(e.store.Reap(ctx, sb))
			apply = func() {
				if r.state.Counted() {
					r.state, r.slot = state.Stopped, 0
				}
			}
		case 9: // cleanup: lock for purge
			op = "purge"
			switch {
			case r == nil || r.state == state.Stopped && r.slot == 0 || r.state == state.Purging && r.expired(now):
				want = "ok"
			case r.state == state.Purging:
				want = "purging"
			default:
				want = "held"
			}
			l, err := e.store.AcquirePurge(ctx, u)
			got = outcome(err)
			apply = func() {
				gen := int64(1)
				if r != nil {
					gen = r.gen + 1
				}
				// Resuming an expired purge keeps its mark.
				started := r != nil && r.state == state.Purging && r.started
				m.records[u] = &modelRecord{state.Purging, l.Token, gen, now.Add(e.store.PurgeTTL), started, 0}
				leases[u] = append(leases[u], l)
			}
		case 10: // cleanup: finish a purge
			l, ok := pick(u)
			if !ok {
				continue
			}
			op = "finish purge"
			want = fenced(u, l, state.Purging)
			if r == nil {
				want = "ok"
			}
			got = outcome(e.store.FinishPurge(ctx, l))
			apply = func() { delete(m.records, u) }
		case 11: // cleanup: about to delete the first key
			l, ok := pick(u)
			if !ok {
				continue
			}
			op, want = "begin purge", fenced(u, l, state.Purging)
			got = outcome(e.store.BeginPurge(ctx, l))
			apply = func() { r.started = true }
		case 12: // cleanup: the user came back before anything was deleted
			l, ok := pick(u)
			if !ok {
				continue
			}
			op, want = "release purge", fenced(u, l, state.Purging)
			switch {
			case r != nil && r.token == l.Token && r.state == state.Stopped:
				want = "ok" // idempotent
			case want == "ok" && r.started:
				want = "started"
			}
			got = outcome(e.store.ReleasePurge(ctx, l))
			apply = func() { r.state = state.Stopped }
		case 13, 14: // a task's event: it exited, or it stopped (maybe an old generation's, maybe again)
			if r == nil {
				continue
			}
			gen := r.gen - int64(rng.IntN(2))
			if gen < 1 {
				continue
			}
			ref := state.TaskRef{UserID: u, Generation: gen}
			var wantEnd state.TaskEnd
			if k == 13 {
				op = "task exited"
				if r.gen == gen && r.state.Counted() {
					wantEnd.Ended = r.state
				}
				end, err := e.store.TaskExited(ctx, ref, "exited")
				got = outcome(err) + fmt.Sprintf(" %+v", end)
				apply = func() {
					if wantEnd.Ended != "" {
						r.state = state.Stopped
					}
				}
			} else {
				op = "task stopped"
				switch {
				case r.gen == gen && r.state.Counted():
					wantEnd = state.TaskEnd{Ended: r.state, SlotReturned: true}
				case r.gen == gen && r.state == state.Stopped && r.slot == gen:
					wantEnd.SlotReturned = true
				}
				end, err := e.store.TaskStopped(ctx, ref, "stopped")
				got = outcome(err) + fmt.Sprintf(" %+v", end)
				apply = func() {
					if wantEnd.SlotReturned {
						r.state, r.slot = state.Stopped, 0
					}
				}
			}
			want = "ok" + fmt.Sprintf(" %+v", wantEnd)
		case 15: // cleanup: ECS runs no task for the generation; its stop event was lost
			if r == nil {
				continue
			}
			op = "return slot"
			wantBack := r.state == state.Stopped && r.slot != 0
			back, err := e.store.ReturnSlot(ctx, u, r.gen)
			got, want = outcome(err)+fmt.Sprint(" ", back), "ok"+fmt.Sprint(" ", wantBack)
			apply = func() {
				if wantBack {
					r.slot = 0
				}
			}
		case 16: // cleanup: the counter is checked against the records, never corrected
			op = "reconcile"
			c, err := e.store.ReconcileCapacity(ctx)
			got, want = outcome(err)+fmt.Sprint(" ", c.Corrected, c.Moved, c.Held), "ok false false "+fmt.Sprint(m.live())
		}
		if got != want {
			t.Fatalf("seed %d step %d: %s(%s) = %s, want %s; model %+v", seed, step, op, u, got, want, r)
		}
		if (got == "ok" || strings.HasPrefix(got, "ok ")) && apply != nil {
			apply()
		}
		if c, err := e.store.Capacity(ctx); err != nil || c != m.live() {
			t.Fatalf("seed %d step %d after %s: capacity %d (%v), model %d", seed, step, op, c, err, m.live())
		}
	}

	// The whole table against the model.
	e.checkInvariants(t)
	for _, u := range users {
		sb, err := e.store.Get(ctx, u)
		r := m.records[u]
		if r == nil {
			if !errors.Is(err, state.ErrNotFound) {
				t.Fatalf("seed %d: %s has a record the model does not: %v", seed, u, err)
			}
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if sb.State != r.state || sb.LeaseToken != r.token || sb.Generation != r.gen || !sb.LeaseDeadline.Equal(r.deadline) ||
			sb.PurgeStarted.IsZero() == r.started || sb.Slot != r.slot {
			t.Fatalf("seed %d: %s is %s gen %d slot %d until %v purge started %v, model %s gen %d slot %d until %v started %v", seed, u,
				sb.State, sb.Generation, sb.Slot, sb.LeaseDeadline, sb.PurgeStarted, r.state, r.gen, r.slot, r.deadline, r.started)
		}
	}
}
