package e2e_test

import (
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/sandgate/sandgate/infra/local/testkit"
	"github.com/sandgate/sandgate/internal/frames"
	"github.com/sandgate/sandgate/internal/state"
)

// An agent paused (SIGSTOP) past its lease is replaced: the user's next frame after the
// lease expired is delivered by a new sandbox that restored every synced note. Resumed
// (SIGCONT), the paused agent writes nothing (the record, the marker and the slot stay
// the replacement's) and exits. Then the replacement is killed (SIGKILL): its task's
// end ends its lease, the next sandbox starts and still nothing synced is lost.
func TestChaos_AgentPausedThenKilled_ReplacedNothingLost(t *testing.T) {
	t.Parallel()
	// LEASE_TTL stays at Fast's 15 s, the least the functions accept.
	s := testkit.Start(t, noIdleStop)
	const user = "user_paused"
	c, old := withSyncedNote(t, s, user, "before the pause")
	pid := s.TaskPid(t, old.TaskARN)

	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Kill(pid, syscall.SIGCONT) }) // a stopped process would outlive the stack's SIGTERM
	s.WaitState(t, user, coldStart, "expired", func(sb *state.Sandbox) bool { return sb.Expired(time.Now()) })
	c.Send("after the lease expired")
	c.Status(frames.Ready, coldStart)
	c.Next(reply, "echo from the replacement", func(f string) bool { return f == "after the lease expired" })
	repl := replaced(t, s, user, old)
	wantNotes(t, c, "before the pause")
	c.Note("on the replacement", reply)
	s.NotesSynced(t, user, 2, reply)
	s.ExactCapacity(t, 1)

	if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	s.WaitTaskGone(t, old.TaskARN, reply)
	if lost := s.Output.Lines(func(l testkit.Line) bool {
		return l.Task(old.TaskARN) && isLeaseLost(l)
	}); len(lost) == 0 {
		t.Fatal("the resumed agent did not report stepping down")
	}
	if rec := s.Running(t, user, reply); rec.TaskARN != repl.TaskARN || rec.Generation != repl.Generation {
		t.Fatalf("after the resume the record is %s generation %d, want the replacement's", rec.TaskARN, rec.Generation)
	}
	if m := s.Marker(t, user); m == nil || m.Generation != repl.Generation {
		t.Fatalf("marker after the resume: %+v, want generation %d", m, repl.Generation)
	}
	s.ExactCapacity(t, 1)

	// kill -9: no final sync, no release; the task's end (its container exited) ends
	// the lease, and the next frame starts the next sandbox.
	if err := syscall.Kill(s.TaskPid(t, repl.TaskARN), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	s.WaitState(t, user, coldStart, "ended", func(sb *state.Sandbox) bool { return !sb.Live(time.Now()) })
	c.Send(`{"type":"notes"}`)
	c.Status(frames.Ready, coldStart)
	if n := testkit.NotesOf(c.JSONFrame("notes", reply)); !slices.Equal(n, []string{"before the pause", "on the replacement"}) {
		t.Fatalf("after the kill the notes are %q, want both synced ones", n)
	}
	replaced(t, s, user, repl)
	s.ExactCapacity(t, 1)
}
