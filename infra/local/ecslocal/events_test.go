package ecslocal_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ecs"
	"github.com/aws/aws-sdk-go-v2/service/ecs/types"

	"github.com/sandgate/sandgate/infra/local/ecslocal"
)

// sink collects the events a server emits.
type sink chan []byte

func (s sink) take(event []byte) { s <- event }

// eventDetail is what the tests read of an event's detail.
type eventDetail struct {
	ClusterArn, TaskArn, TaskDefinitionArn, LastStatus, DesiredStatus string
	StopCode, StoppedReason, StartedBy, Group                         string
	CreatedAt, StartedAt, StoppingAt, StoppedAt, UpdatedAt            string
	Version                                                           int64
	Containers                                                        []struct {
		Name, LastStatus, Reason string
		ExitCode                 *int
	}
	Overrides struct {
		ContainerOverrides []struct {
			Name        string
			Environment []struct{ Name, Value string }
		}
	}
	Tags []any
}

// next returns the next event of task arn, failing after a generous wait.
func (s sink) next(t *testing.T, arn string) (events.CloudWatchEvent, eventDetail) {
	t.Helper()
	timeout := time.After(15 * time.Second)
	for {
		select {
		case b := <-s:
			var ev events.CloudWatchEvent
			if err := json.Unmarshal(b, &ev); err != nil {
				t.Fatalf("event %s: %v", b, err)
			}
			var d eventDetail
			if err := json.Unmarshal(ev.Detail, &d); err != nil {
				t.Fatalf("detail %s: %v", ev.Detail, err)
			}
			if d.TaskArn == arn {
				return ev, d
			}
		case <-timeout:
			t.Fatalf("no more events of %s", arn)
		}
	}
}

// until returns the events of arn up to and including the first whose lastStatus is
// status.
func (s sink) until(t *testing.T, arn, status string) []eventDetail {
	t.Helper()
	var out []eventDetail
	for {
		_, d := s.next(t, arn)
		out = append(out, d)
		if d.LastStatus == status {
			return out
		}
	}
}

func statuses(ds []eventDetail) string {
	var s []string
	for _, d := range ds {
		s = append(s, d.LastStatus+"/"+d.DesiredStatus)
	}
	return strings.Join(s, " ")
}

// A task's life as events: one per change of its last or desired status, from
// PROVISIONING to STOPPED, in EventBridge's envelope with ECS's detail (ISO times, no
// tags, the task's version rising), the overrides included.
func TestServer_Events_Lifecycle(t *testing.T) {
	t.Parallel()
	evs := make(sink, 64)
	e := start(t, func(s *ecslocal.Server) { s.Events = evs.take })
	in := runInput("events")
	in.Tags = []types.Tag{{Key: aws.String("sandgate:userId"), Value: aws.String("user_abc")}}
	in.Overrides = &types.TaskOverride{ContainerOverrides: []types.ContainerOverride{{
		Name: aws.String("agent"), Environment: []types.KeyValuePair{{Name: aws.String("SANDGATE_USER_ID"), Value: aws.String("user_abc")}},
	}}}
	arn := aws.ToString(e.run(t, in).TaskArn)

	ev, first := evs.next(t, arn)
	if ev.Version != "0" || ev.Source != "aws.ecs" || ev.DetailType != "ECS Task State Change" || ev.AccountID != "000000000000" ||
		ev.Region != "us-east-1" || len(ev.Resources) != 1 || ev.Resources[0] != arn || ev.ID == "" || ev.Time.IsZero() ||
		ev.Time.Nanosecond() != 0 {
		t.Fatalf("envelope %+v", ev)
	}
	if first.LastStatus != "PROVISIONING" || first.DesiredStatus != "RUNNING" || first.ClusterArn != "arn:aws:ecs:us-east-1:000000000000:cluster/sandboxes" ||
		first.StartedBy != "sandgate" || first.TaskDefinitionArn != e.defARN || first.Tags != nil {
		t.Fatalf("first event %+v", first)
	}
	if _, err := time.Parse(time.RFC3339Nano, first.CreatedAt); err != nil || !strings.HasSuffix(first.CreatedAt, "Z") {
		t.Fatalf("createdAt %q is not an ISO timestamp: %v", first.CreatedAt, err)
	}
	if o := first.Overrides.ContainerOverrides; len(o) != 1 || len(o[0].Environment) != 1 || o[0].Environment[0].Value != "user_abc" {
		t.Fatalf("overrides %+v", first.Overrides)
	}
	up := evs.until(t, arn, "RUNNING")
	if got := statuses(up); got != "PENDING/RUNNING RUNNING/RUNNING" {
		t.Fatalf("events to RUNNING: %s", got)
	}
	if up[1].StartedAt == "" || up[1].UpdatedAt == "" {
		t.Fatalf("running event %+v", up[1])
	}
	if _, err := e.ecs.StopTask(context.Background(), &ecs.StopTaskInput{Cluster: aws.String("sandboxes"), Task: aws.String(arn), Reason: aws.String("idle")}); err != nil {
		t.Fatal(err)
	}
	down := evs.until(t, arn, "STOPPED")
	if got := statuses(down); got != "RUNNING/STOPPED STOPPING/STOPPED DEPROVISIONING/STOPPED STOPPED/STOPPED" {
		t.Fatalf("events to STOPPED: %s", got)
	}
	last := down[len(down)-1]
	if last.StopCode != "UserInitiated" || last.StoppedReason != "idle" || last.StoppedAt == "" || last.StoppingAt == "" ||
		len(last.Containers) != 1 || last.Containers[0].ExitCode == nil || last.Tags != nil {
		t.Fatalf("stopped event %+v", last)
	}
	all := append(append([]eventDetail{first}, up...), down...)
	for i := 1; i < len(all); i++ {
		if all[i].Version <= all[i-1].Version {
			t.Fatalf("versions do not rise: %d then %d", all[i-1].Version, all[i].Version)
		}
	}
	if d := e.describe(t, arn); d.Version != last.Version {
		t.Fatalf("DescribeTasks version %d, the last event's %d", d.Version, last.Version)
	}
}

// A task that fails to start and one whose container exits say so in their events, as
// Fargate does: TaskFailedToStart with the pull error, EssentialContainerExited with
// the exit code, from the first event of their way down.
func TestServer_Events_Failures(t *testing.T) {
	t.Parallel()
	evs := make(sink, 64)
	e := start(t, func(s *ecslocal.Server) { s.Events = evs.take })
	e.register(t, ecslocal.TaskDefinition{Family: "broken", Command: []string{"/nonexistent/agent"}})
	in := runInput("broken")
	in.TaskDefinition = aws.String("broken")
	broken := aws.ToString(e.run(t, in).TaskArn)
	down := evs.until(t, broken, "STOPPED")
	if got := statuses(down); got != "PROVISIONING/RUNNING PENDING/RUNNING PENDING/STOPPED DEPROVISIONING/STOPPED STOPPED/STOPPED" {
		t.Fatalf("events of a failed start: %s", got)
	}
	for _, d := range down[2:] {
		if d.StopCode != "TaskFailedToStart" || !strings.HasPrefix(d.StoppedReason, "CannotPullContainerError") {
			t.Fatalf("failed start's event %+v", d)
		}
	}
	if last := down[len(down)-1]; last.Containers[0].Reason == "" || last.Containers[0].ExitCode != nil {
		t.Fatalf("failed start's container %+v", last.Containers[0])
	}

	e.srv.CrashTasks(1)
	crashed := aws.ToString(e.run(t, runInput("crash")).TaskArn)
	down = evs.until(t, crashed, "STOPPED")
	var exited *eventDetail
	for i, d := range down {
		if d.DesiredStatus == "STOPPED" {
			exited = &down[i]
			break
		}
	}
	if exited == nil || exited.StopCode != "EssentialContainerExited" || exited.Containers[0].ExitCode == nil || *exited.Containers[0].ExitCode != 1 {
		t.Fatalf("crash events %+v", down)
	}
}
