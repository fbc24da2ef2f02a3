package bench_test

import (
	"context"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ecs"

	"github.com/sandgate/sandgate/infra/local/testkit"
)

// stopTask stops the task through the ECS API (SIGTERM to the agent, which syncs and
// stops) and waits until it has exited.
func stopTask(b *testing.B, s *testkit.Stack, arn string) {
	b.Helper()
	s.StopTask(b, arn)
	s.WaitTaskGone(b, arn, coldStart)
}

// launch returns the emulated launch of task arn as ECS reports it: RunTask's
// acceptance (createdAt) to the container's start (startedAt).
func launch(b *testing.B, s *testkit.Stack, arn string) time.Duration {
	b.Helper()
	out, err := s.ECSClient().DescribeTasks(context.Background(), &ecs.DescribeTasksInput{Cluster: aws.String(s.Cluster), Tasks: []string{arn}})
	if err != nil || len(out.Tasks) != 1 || out.Tasks[0].CreatedAt == nil || out.Tasks[0].StartedAt == nil {
		b.Fatalf("describe %s: %+v, %v", arn, out, err)
	}
	return out.Tasks[0].StartedAt.Sub(*out.Tasks[0].CreatedAt)
}
