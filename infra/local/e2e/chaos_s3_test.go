package e2e_test

import (
	"net/http"
	"testing"

	"github.com/sandgate/sandgate/infra/local/s3local"
	"github.com/sandgate/sandgate/infra/local/stack"
	"github.com/sandgate/sandgate/infra/local/testkit"
	"github.com/sandgate/sandgate/internal/frames"
	"github.com/sandgate/sandgate/internal/state"
)

// Only the final sync uploads (the periodic one waits an hour), so every fault meets it.
func finalSyncOnly(o *stack.Options) {
	o.Overrides["SYNC_INTERVAL"] = "1h"
	o.Overrides["SLEEP_AFTER"] = "10m"
}

// A burst of S3 500s during the final sync (a deploy stops the task): the uploads are
// retried, the files and the marker are saved, the sandbox stops cleanly, and the next
// sandbox restores every note.
func TestChaos_S3Errors_FinalSyncRetriesAndSaves(t *testing.T) {
	t.Parallel()
	s := testkit.Start(t, finalSyncOnly)
	const user = "user_s3burst"
	c := s.DialReady(t, user, coldStart)
	want := []string{"first", "second"}
	for _, n := range want {
		c.Note(n, reply)
	}
	sb := s.Running(t, user, reply)

	const burst = 4
	if err := s.S3.Faults.Inject(s3local.Fault{Method: http.MethodPut, Status: http.StatusInternalServerError, Count: burst}); err != nil {
		t.Fatal(err)
	}
	s.StopTask(t, sb.TaskARN)
	c.Status(frames.Stopping, reply)
	if rec := s.Stopped(t, user, reply); rec.Reason == "final sync failed" {
		t.Fatal("the final sync failed under a burst its retries should absorb")
	}
	if got := s.S3.Faults.Injected(); got != burst {
		t.Fatalf("%d faults met the final sync, want all %d", got, burst)
	}
	if m := s.Marker(t, user); m == nil || m.Generation != sb.Generation {
		t.Fatalf("marker after the final sync: %+v, want generation %d", m, sb.Generation)
	}
	s.ExactCapacity(t, 0)

	wake(t, c, "wake up") // starts the next sandbox, which restores
	wantNotes(t, c, want...)
	s.ExactCapacity(t, 1)
}

// S3 failing for good during the final sync: the agent gives up after its retries,
// releases the lease (the slot comes back) and writes no marker, so nothing claims a
// sync that did not happen; what an earlier sync saved is restored once S3 is back.
func TestChaos_S3Down_FinalSyncFailsReleasesKeepsSaved(t *testing.T) {
	t.Parallel()
	s := testkit.Start(t, finalSyncOnly)
	const user = "user_s3down"
	c := s.DialReady(t, user, coldStart)
	c.Note("saved", reply)
	first := s.Running(t, user, reply)
	s.StopTask(t, first.TaskARN)
	s.Stopped(t, user, reply)
	saved := s.Marker(t, user)
	if saved == nil || saved.Generation != first.Generation {
		t.Fatalf("marker after a clean stop: %+v", saved)
	}

	wake(t, c, "wake up")
	wantNotes(t, c, "saved")
	c.Note("never synced", reply)
	second := s.Running(t, user, reply)
	if err := s.S3.Faults.Inject(s3local.Fault{Method: http.MethodPut, Status: http.StatusInternalServerError}); err != nil {
		t.Fatal(err)
	}
	s.StopTask(t, second.TaskARN)
	c.Status(frames.Stopping, reply)
	rec := s.WaitState(t, user, coldStart, "released", func(sb *state.Sandbox) bool {
		return sb.State == state.Stopped && sb.Generation == second.Generation
	})
	if rec.Reason != "final sync failed" {
		t.Fatalf("record after a failed final sync: reason %q, want the release's", rec.Reason)
	}
	if s.S3.Faults.Injected() == 0 {
		t.Fatal("no fault met the final sync")
	}
	if m := s.Marker(t, user); m == nil || *m != *saved {
		t.Fatalf("marker changed by a failed sync: %+v, was %+v", m, saved)
	}
	s.ExactCapacity(t, 0)

	s.S3.Faults.Clear()
	wake(t, c, "wake up")
	wantNotes(t, c, "saved")
	s.ExactCapacity(t, 1)
}

// wake sends a frame to a stopped sandbox, which starts a new one, and waits for it to
// be ready and to echo the frame. A Message process that read the old sandbox's RUNNING
// record within its 5 s cache sends the frame to the old agent; when that agent's
// connection closes under the frame as the task exits, the frame cannot be known
// undelivered and the client is told no_answer — and sends it again, as a client of
// no_answer does.
func wake(t *testing.T, c *testkit.Client, frame string) {
	t.Helper()
	c.Send(frame)
	first := c.Next(coldStart, "ready or no_answer", func(f string) bool {
		p, ok := testkit.Platform(f)
		return ok && ((p.Type == frames.TypeStatus && p.State == frames.Ready) || (p.Type == frames.TypeError && p.Reason == frames.ReasonNoAnswer))
	})
	if p, _ := testkit.Platform(first); p.Type == frames.TypeError {
		t.Logf("%s: no_answer from the stopped sandbox's agent; sending again", c.User)
		c.Send(frame)
		c.Status(frames.Ready, coldStart)
	}
	c.Next(reply, "echo", func(f string) bool { return f == frame })
}
