package e2e_test

import (
	"context"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sandgate/sandgate/infra/local/stack"
	"github.com/sandgate/sandgate/infra/local/testkit"
	"github.com/sandgate/sandgate/internal/frames"
	"github.com/sandgate/sandgate/internal/state"
)

// The capacity slot and ECS's task state changes, end to end: ecslocal emits each
// change as ECS does, the stack routes it through template.yaml's TaskEventsRule to
// TaskEventsFunction as events.amazonaws.com (its Lambda permission), and the function,
// as its own role, ends dead sandboxes' leases, gives slots back and tells clients.

// taskEvent waits for TaskEventsFunction's line about task arn in lastStatus.
func taskEvent(t *testing.T, s *testkit.Stack, arn, lastStatus string) testkit.Line {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), reply)
	defer cancel()
	l, err := s.Output.Await(ctx, func(l testkit.Line) bool {
		return l.Source == s.Name("TaskEventsFunction") && l.Msg == "task event" &&
			l.Str("taskArn") == arn && l.Str("lastStatus") == lastStatus
	})
	if err != nil {
		t.Fatalf("no task event of %s in %s handled: %v", arn, lastStatus, err)
	}
	return l
}

// A sandbox whose image cannot be pulled (Fargate's TaskFailedToStart) is a start
// failure the user hears of at once — start_failed, while the start lease still had
// minutes to run — and its slot comes back when the task has stopped; the next
// connection tries again at once.
func TestTaskEvents_ImagePullFails_StartFailedAtOnce(t *testing.T) {
	t.Parallel()
	s := testkit.Start(t, func(o *stack.Options) { o.Agent = "" }) // no image to pull
	const user = "user_nopull"
	begin := time.Now()
	c := s.Dial(t, user)
	c.Status(frames.Starting, reply)
	if reason := c.ErrorFrame(reply); reason != frames.ReasonStartFailed {
		t.Fatalf("error frame %q, want start_failed", reason)
	}
	rec := s.Stopped(t, user, reply)
	if !strings.Contains(rec.Reason, "TaskFailedToStart") || !strings.Contains(rec.Reason, "CannotPullContainerError") {
		t.Fatalf("record's reason %q, want the task's stop code and reason", rec.Reason)
	}
	if waited := time.Since(begin); waited >= state.DefaultStartTTL {
		t.Fatalf("told after %s: no sooner than the start lease would have run out", waited)
	}
	taskEvent(t, s, rec.TaskARN, "STOPPED")
	s.ExactCapacity(t, 0)

	// The user is not held up: the next connection starts (and fails) again.
	c2 := s.Dial(t, user)
	c2.Status(frames.Starting, reply)
	if reason := c2.ErrorFrame(reply); reason != frames.ReasonStartFailed {
		t.Fatalf("second attempt: error frame %q", reason)
	}
	// (Connect's notice may have tried once more in between: a start that failed before
	// the notice ran is ensured again while the client is there.)
	if rec2 := s.Stopped(t, user, reply); rec2.Generation <= rec.Generation {
		t.Fatalf("second attempt's generation %d after %d", rec2.Generation, rec.Generation)
	}
	s.ExactCapacity(t, 0)
}

// A task whose container exits before its agent is ready (here: it crashes right
// after starting) is a start failure too; a sandbox whose agent is killed while it
// runs is marked stopped at once, not after its lease, and its clients hear stopping;
// either way the slot comes back once the task has stopped, and the user's next frame
// starts the next sandbox.
func TestTaskEvents_TaskDies_LeaseEndsAtOnce(t *testing.T) {
	t.Parallel()
	s := testkit.Start(t, noIdleStop)

	s.ECS.CrashTasks(1)
	c := s.Dial(t, "user_crashstart")
	if reason := c.ErrorFrame(reply); reason != frames.ReasonStartFailed {
		t.Fatalf("error frame %q, want start_failed", reason)
	}
	// The crashed task's end ended the STARTING lease. (Connect's notice, finding the
	// start gone while the client is there, may already be starting the next one.)
	ctx, cancel := context.WithTimeout(context.Background(), reply)
	defer cancel()
	if _, err := s.Output.Await(ctx, func(l testkit.Line) bool {
		return l.Source == s.Name("TaskEventsFunction") && l.Msg == "task event" && l.Str("userId") == "user_crashstart" &&
			l.Str("ended") == string(state.Starting) && l.Str("stopCode") == "EssentialContainerExited"
	}); err != nil {
		t.Fatalf("no task event ended the crashed start: %v", err)
	}
	c.Send("again")
	c.Status(frames.Ready, coldStart)
	s.ExactCapacity(t, 1) // the crashed task's slot is back; the next start holds one

	const user = "user_killed"
	c = s.DialReady(t, user, coldStart)
	sb := s.Running(t, user, reply)
	s.ExactCapacity(t, 2)
	if err := syscall.Kill(s.TaskPid(t, sb.TaskARN), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	c.Status(frames.Stopping, reply)
	rec := s.Stopped(t, user, reply)
	if rec.Generation != sb.Generation || !strings.Contains(rec.Reason, "EssentialContainerExited") || !rec.LeaseDeadline.After(rec.StateSince) {
		t.Fatalf("record %+v: want the lease ended by the task's end, before its deadline", rec)
	}
	taskEvent(t, s, sb.TaskARN, "STOPPED")
	s.ExactCapacity(t, 1)
	c.Send("wake up")
	c.Status(frames.Ready, coldStart)
	c.Next(reply, "echo", func(f string) bool { return f == "wake up" })
	replaced(t, s, user, sb)
	s.ExactCapacity(t, 2)
}

// A takeover keeps the dead sandbox's slot for the new generation: the old task's
// STOPPED event, handled after the replacement runs, gives nothing back.
func TestTaskEvents_TakeoverKeepsTheSlot(t *testing.T) {
	t.Parallel()
	s := testkit.Start(t, noIdleStop)
	const user = "user_takeover"
	c := s.DialReady(t, user, coldStart)
	old := s.Running(t, user, reply)
	pid := s.TaskPid(t, old.TaskARN)
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGCONT) })
	s.WaitState(t, user, coldStart, "expired", func(sb *state.Sandbox) bool { return sb.Expired(time.Now()) })
	c.Send("after the lease expired")
	c.Status(frames.Ready, coldStart)
	repl := replaced(t, s, user, old)
	if repl.Slot != repl.Generation {
		t.Fatalf("replacement holds slot %d, want its generation %d", repl.Slot, repl.Generation)
	}
	s.ExactCapacity(t, 1)

	// The takeover stopped the old task; resumed, it ends. Its events change nothing.
	if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	ev := taskEvent(t, s, old.TaskARN, "STOPPED")
	if ev.Fields["slotReturned"] != false || ev.Str("ended") != "" {
		t.Fatalf("the old task's event %v changed the record", ev.Fields)
	}
	if rec := s.Running(t, user, reply); rec.Generation != repl.Generation || rec.Slot != repl.Generation {
		t.Fatalf("record after the old task's event %+v", rec)
	}
	if n := s.Capacity(t); n != 1 {
		t.Fatalf("capacity %d after the old task stopped, want the replacement's 1", n)
	}
}

// The sample event runs through the function's bootstrap: a task of another cluster,
// which it leaves alone.
func TestTaskEvents_SampleEvent(t *testing.T) {
	s := apps.Get(t)
	before := s.TableKeys(t)
	if _, err := s.Runtime.Invoke(context.Background(), s.Name("TaskEventsFunction"), event(t, "taskevents.json")); err != nil {
		t.Fatal(err)
	}
	for k := range s.TableKeys(t) {
		if !before[k] && strings.Contains(k, "user_abc") { // the sample's user
			t.Fatalf("an event of another cluster wrote %s", k)
		}
	}
}
