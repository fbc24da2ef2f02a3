package ecslocal_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ecs"
)

// BenchmarkServer_DescribeTasks measures one DescribeTasks round trip through the real SDK
// client: the cost a launcher's status poll pays against the local stack.
func BenchmarkServer_DescribeTasks(b *testing.B) {
	e := start(b)
	arn := aws.ToString(e.run(b, runInput("bench")).TaskArn)
	e.waitStatus(b, arn, "RUNNING")
	in := &ecs.DescribeTasksInput{Cluster: aws.String("sandboxes"), Tasks: []string{arn}}
	b.ResetTimer()
	for b.Loop() {
		if _, err := e.ecs.DescribeTasks(context.Background(), in); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkServer_RunTaskToServing measures a cold start without launch delay: RunTask,
// until the task's process answers on its own address, then StopTask until STOPPED.
func BenchmarkServer_RunTaskToServing(b *testing.B) {
	e := start(b)
	i := 0
	for b.Loop() {
		i++
		arn := aws.ToString(e.run(b, runInput(fmt.Sprintf("bench-%d", i))).TaskArn)
		e.whoami(b, privateIP(e.waitStatus(b, arn, "RUNNING")))
		if _, err := e.ecs.StopTask(context.Background(), &ecs.StopTaskInput{Cluster: aws.String("sandboxes"), Task: aws.String(arn)}); err != nil {
			b.Fatal(err)
		}
		e.waitStatus(b, arn, "STOPPED")
	}
}
