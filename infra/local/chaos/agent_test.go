package chaos_test

import (
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/sandgate/sandgate/infra/local/stack"
	"github.com/sandgate/sandgate/infra/local/stacktest"
	"github.com/sandgate/sandgate/internal/frames"
	"github.com/sandgate/sandgate/internal/state"
)

// An agent paused (SIGSTOP) past its lease is replaced: the user's next frame after the
// lease expired is delivered by a new sandbox that restored every synced note. Resumed
// (SIGCONT), the paused agent writes nothing (the record, the marker and the slot stay
// the replacement's) and exits. Then the replacement is killed (SIGKILL): the same
// takeover happens again and still nothing synced is lost.
func TestChaos_AgentPausedThenKilled_ReplacedNothingLost(t *testing.T) {
	t.Parallel()
	// LEASE_TTL stays at Fast's 15 s, the least the functions accept.
	s := stacktest.Start(t, func(o *stack.Options) { o.Overrides["SLEEP_AFTER"] = "10m" })
	const user = "user_paused"
	c := s.Dial(t, user)
	c.Status(frames.Ready, coldStart)
	c.Note("before the pause", reply)
	notesSynced(t, s, user, 1)
	old := s.Running(t, user, reply)
	pid := s.TaskPid(t, old.TaskARN)

	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Kill(pid, syscall.SIGCONT) }) // a stopped process would outlive the stack's SIGTERM
	s.WaitState(t, user, coldStart, "expired", func(sb *state.Sandbox) bool { return sb.Expired(time.Now()) })
	c.Send("after the lease expired")
	c.Status(frames.Ready, coldStart)
	c.Next(reply, "echo from the replacement", func(f string) bool { return f == "after the lease expired" })
	repl := s.Running(t, user, reply)
	if repl.TaskARN == old.TaskARN || repl.Generation <= old.Generation {
		t.Fatalf("not replaced: %s generation %d after %s generation %d", repl.TaskARN, repl.Generation, old.TaskARN, old.Generation)
	}
	if n := c.Notes(reply); !slices.Equal(n, []string{"before the pause"}) {
		t.Fatalf("the replacement restored %q", n)
	}
	c.Note("on the replacement", reply)
	notesSynced(t, s, user, 2)
	exactCapacity(t, s, 1)

	if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	taskGone(t, s, old.TaskARN)
	if lost := s.Output.Lines(func(l stacktest.Line) bool {
		return l.Task(old.TaskARN) && l.Msg == "lease lost; stopping without writing"
	}); len(lost) == 0 {
		t.Fatal("the resumed agent did not report stepping down")
	}
	if rec := s.Running(t, user, reply); rec.TaskARN != repl.TaskARN || rec.Generation != repl.Generation {
		t.Fatalf("after the resume the record is %s generation %d, want the replacement's", rec.TaskARN, rec.Generation)
	}
	if m := marker(t, s, user); m == nil || m.Generation != repl.Generation {
		t.Fatalf("marker after the resume: %+v, want generation %d", m, repl.Generation)
	}
	exactCapacity(t, s, 1)

	// kill -9: no final sync, no release; the lease runs out and the next frame takes over.
	if err := syscall.Kill(s.TaskPid(t, repl.TaskARN), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	s.WaitState(t, user, coldStart, "expired", func(sb *state.Sandbox) bool { return sb.Expired(time.Now()) })
	c.Send(`{"type":"notes"}`)
	c.Status(frames.Ready, coldStart)
	if n := c.JSONFrame("notes", reply)["notes"]; len(n.([]any)) != 2 {
		t.Fatalf("after the kill the notes are %v, want both synced ones", n)
	}
	third := s.Running(t, user, reply)
	if third.Generation <= repl.Generation {
		t.Fatalf("not replaced after the kill: generation %d", third.Generation)
	}
	exactCapacity(t, s, 1)
}
