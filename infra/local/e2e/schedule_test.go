package e2e_test

import (
	"context"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/sandgate/sandgate/infra/local/ecslocal"
	"github.com/sandgate/sandgate/infra/local/testkit"
	"github.com/sandgate/sandgate/internal/frames"
	"github.com/sandgate/sandgate/internal/state"
)

// The cleanup schedule invokes the Cleanup function as EventBridge Scheduler does:
// asynchronously, through the Lambda Invoke API, as the schedule's role — which the
// scheduler may assume and which may invoke exactly that function.
func TestStack_Schedule_InvokesCleanupAsItsRole(t *testing.T) {
	s := apps.Get(t)
	ctx, cancel := context.WithTimeout(context.Background(), reply)
	defer cancel()
	before := len(s.Output.Lines(cleanupDone))
	if err := s.RunSchedule(ctx, "CleanupFunction"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Output.Await(ctx, func(l testkit.Line) bool {
		return cleanupDone(l) && len(s.Output.Lines(cleanupDone)) > before
	}); err != nil {
		t.Fatalf("the scheduled cleanup never finished: %v", err)
	}
}

// cleanupDone matches the cleanup pass's summary line (it carries the live count).
func cleanupDone(l testkit.Line) bool {
	_, live := l.Fields["liveSandboxes"]
	return l.Source == "CleanupFunction" && live
}

// A reaped sandbox's clients are told it is stopping, by the Cleanup function posting
// to their connections as its own role.
func TestStack_Cleanup_ReapTellsTheUsersClients(t *testing.T) {
	t.Parallel()
	s := testkit.Start(t, nil)
	// A client whose sandbox failed to start keeps its connection; a holder that died
	// since holds the user's lease, already expired.
	s.ECS.FailRunTask(ecslocal.ServerException, -1)
	c := s.Dial(t, "user_reaped")
	if r := c.ErrorFrame(reply); r != frames.ReasonStartFailed {
		t.Fatalf("reason %q, want %s", r, frames.ReasonStartFailed)
	}
	s.ECS.ClearFaults()
	dying := state.New(dynamodb.NewFromConfig(s.AWS), s.Table)
	dying.StartTTL = time.Millisecond
	if _, err := dying.Acquire(context.Background(), "user_reaped"); err != nil {
		t.Fatal(err)
	}
	if sum := invokeCleanup(t, s, "CleanupFunction"); sum.Reaped != 1 {
		t.Fatalf("cleanup %+v, want one reaped", sum)
	}
	c.Status(frames.Stopping, reply)
}
