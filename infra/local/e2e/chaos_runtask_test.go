package e2e_test

import (
	"context"
	"testing"

	"github.com/sandgate/sandgate/infra/local/ecslocal"
	"github.com/sandgate/sandgate/infra/local/testkit"
	"github.com/sandgate/sandgate/internal/frames"
	"github.com/sandgate/sandgate/internal/state"
)

// RunTask failing (throttled past the SDK's retries, or Fargate out of capacity): the
// client is told why in an error frame, the lease and its slot are released at once,
// and the user's next frame starts the sandbox.
func TestChaos_RunTaskFails_ClientToldThenNextAttemptStarts(t *testing.T) {
	t.Parallel()
	s := testkit.Start(t, nil)
	for i, tc := range []struct {
		user   string
		fault  func()
		reason string
	}{
		{"user_throttled", func() { s.ECS.FailRunTask(ecslocal.ThrottlingException, -1) }, frames.ReasonStartFailed},
		{"user_servererr", func() { s.ECS.FailRunTask(ecslocal.ServerException, -1) }, frames.ReasonStartFailed},
		{"user_nofargate", func() { s.ECS.RefuseCapacity(-1) }, frames.ReasonCapacity},
	} {
		tc.fault()
		c := s.Dial(t, tc.user)
		if r := c.ErrorFrame(reply); r != tc.reason {
			t.Fatalf("%s: reason %q, want %q", tc.user, r, tc.reason)
		}
		sb, err := s.Store.Get(context.Background(), tc.user)
		if err != nil || sb.State != state.Stopped {
			t.Fatalf("%s: record after the failed start: %+v, %v; want the lease released", tc.user, sb, err)
		}
		s.ExactCapacity(t, i) // the users before this one run
		if tasks := len(s.ECS.Tasks()); tasks != i {
			t.Fatalf("%s: %d tasks run after a failed start, want the %d of the users before", tc.user, tasks, i)
		}

		s.ECS.ClearFaults()
		c.Send("try again")
		c.Status(frames.Ready, coldStart)
		c.Next(reply, "echo", func(f string) bool { return f == "try again" })
		s.ExactCapacity(t, i+1)
		if tasks := len(s.ECS.Tasks()); tasks != i+1 {
			t.Fatalf("%s: %d tasks after the retry, want %d", tc.user, tasks, i+1)
		}
	}
}
