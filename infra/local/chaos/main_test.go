package chaos_test

import (
	"context"
	"encoding/json"
	"io"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ecs"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/sandgate/sandgate/infra/local/stacktest"
	"github.com/sandgate/sandgate/internal/objsync"
	"github.com/sandgate/sandgate/internal/state"
	"github.com/sandgate/sandgate/internal/taskenv"
)

func TestMain(m *testing.M) { os.Exit(stacktest.Main(m)) }

const (
	coldStart = 60 * time.Second // generous: CI machines are small and shared
	reply     = 30 * time.Second
)

// accounted returns how many sandbox records hold a capacity slot (STARTING, RUNNING
// or STOPPING): what the capacity counter must equal.
func accounted(t *testing.T, s *stacktest.Stack) int {
	t.Helper()
	n := 0
	err := s.Store.ListSandboxes(context.Background(), func(sb *state.Sandbox) error {
		if slices.Contains([]state.State{state.Starting, state.Running, state.Stopping}, sb.State) {
			n++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// exactCapacity fails unless the capacity counter equals want and the records that
// hold a slot.
func exactCapacity(t *testing.T, s *stacktest.Stack, want int) {
	t.Helper()
	if c, a := s.Capacity(t), accounted(t, s); c != want || a != want {
		t.Fatalf("capacity counter %d, records holding a slot %d; want %d", c, a, want)
	}
}

// marker returns the user's .last-sync marker, or nil when there is none.
func marker(t *testing.T, s *stacktest.Stack, user string) *objsync.Marker {
	t.Helper()
	out, err := s.S3Client().GetObject(context.Background(), &s3.GetObjectInput{
		Bucket: aws.String(s.Bucket), Key: aws.String(objsync.MarkerKey(taskenv.UserPrefix(user))),
	})
	if err != nil {
		return nil
	}
	defer out.Body.Close()
	b, _ := io.ReadAll(out.Body)
	var m objsync.Marker
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("marker %q: %v", b, err)
	}
	return &m
}

// notesSynced waits until the user's prefix holds n notes.
func notesSynced(t *testing.T, s *stacktest.Stack, user string, n int) {
	t.Helper()
	prefix := taskenv.UserPrefix(user) + objsync.FilesDir + "notes/"
	for deadline := time.Now().Add(reply); ; time.Sleep(100 * time.Millisecond) {
		if len(s.Keys(t, prefix)) == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d notes in the bucket, want %d", user, len(s.Keys(t, prefix)), n)
		}
	}
}

// stopTask asks ECS to stop the task (SIGTERM to the agent, as a deploy or a Spot
// interruption does).
func stopTask(t *testing.T, s *stacktest.Stack, arn string) {
	t.Helper()
	_, err := s.ECSClient().StopTask(context.Background(), &ecs.StopTaskInput{
		Cluster: aws.String(s.Cluster), Task: aws.String(arn), Reason: aws.String("chaos"),
	})
	if err != nil {
		t.Fatal(err)
	}
}

// taskGone waits until the task arn has stopped.
func taskGone(t *testing.T, s *stacktest.Stack, arn string) {
	t.Helper()
	for deadline := time.Now().Add(reply); !s.TaskGone(arn); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("task %s still runs", arn)
		}
	}
}
