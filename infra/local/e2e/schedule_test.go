package e2e_test

import (
	"context"
	"testing"

	"github.com/sandgate/sandgate/infra/local/testkit"
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
