package ecslocal_test

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ecs"
	"github.com/aws/aws-sdk-go-v2/service/ecs/types"

	"github.com/sandgate/sandgate/infra/local/ecslocal"
)

func TestServer_StopTask_Graceful(t *testing.T) {
	t.Parallel()
	e := start(t)
	ctx := context.Background()
	in := runInput("graceful")
	in.Tags = []types.Tag{{Key: aws.String("sandgate:userId"), Value: aws.String("user_abc")}}
	arn := aws.ToString(e.run(t, in).TaskArn)
	ip := privateIP(e.waitStatus(t, arn, "RUNNING"))
	w := e.whoami(t, ip)
	dataDir := e.srv.Tasks()[0].DataDir

	out, err := e.ecs.StopTask(ctx, &ecs.StopTaskInput{Cluster: aws.String("sandboxes"), Task: aws.String(arn), Reason: aws.String("user went idle")})
	if err != nil {
		t.Fatal(err)
	}
	if st := out.Task; aws.ToString(st.DesiredStatus) != "STOPPED" || st.StopCode != types.TaskStopCodeUserInitiated ||
		aws.ToString(st.StoppedReason) != "user went idle" {
		t.Fatalf("StopTask returned desired %s, stopCode %s, reason %q",
			aws.ToString(st.DesiredStatus), st.StopCode, aws.ToString(st.StoppedReason))
	}

	stopped := e.waitStatus(t, arn, "STOPPED")
	c := stopped.Containers[0]
	if c.ExitCode == nil || *c.ExitCode != 0 || aws.ToString(c.LastStatus) != "STOPPED" {
		t.Errorf("container exit code %s, status %s; want 0 after a graceful exit", code(c.ExitCode), aws.ToString(c.LastStatus))
	}
	if stopped.StopCode != types.TaskStopCodeUserInitiated || aws.ToString(stopped.StoppedReason) != "user went idle" {
		t.Errorf("stopped task: stopCode %s, reason %q", stopped.StopCode, aws.ToString(stopped.StoppedReason))
	}
	if stopped.StoppingAt == nil || stopped.StoppedAt == nil || stopped.ExecutionStoppedAt == nil ||
		aws.ToString(stopped.Attachments[0].Status) != "DELETED" {
		t.Errorf("stopped task lacks stoppingAt/stoppedAt/executionStoppedAt or its ENI is %s", aws.ToString(stopped.Attachments[0].Status))
	}
	if got := e.out.of(taskID(arn)); !strings.Contains(got, "sigterm\n") || !strings.Contains(got, "graceful exit") {
		t.Errorf("the process's output %q shows no graceful SIGTERM handling", got)
	}
	waitGone(t, w.Pid)
	if _, err := os.Stat(dataDir); !os.IsNotExist(err) {
		t.Errorf("data directory %s outlived the task: %v", dataDir, err)
	}
	// StopTask deletes the task's tags.
	if tags := e.describe(t, arn, types.TaskFieldTags).Tags; len(tags) != 0 {
		t.Errorf("tags %v survived StopTask", tagMap(tags))
	}
	// Stopped tasks stay describable and out of the default listing.
	running, _ := e.ecs.ListTasks(ctx, &ecs.ListTasksInput{Cluster: aws.String("sandboxes")})
	gone, _ := e.ecs.ListTasks(ctx, &ecs.ListTasksInput{Cluster: aws.String("sandboxes"), DesiredStatus: types.DesiredStatusStopped})
	if len(running.TaskArns) != 0 || len(gone.TaskArns) != 1 || gone.TaskArns[0] != arn {
		t.Errorf("ListTasks: running %v, stopped %v", running.TaskArns, gone.TaskArns)
	}

	// Stopping it again changes nothing and is no error.
	again, err := e.ecs.StopTask(ctx, &ecs.StopTaskInput{Cluster: aws.String("sandboxes"), Task: aws.String(arn), Reason: aws.String("second")})
	if err != nil || aws.ToString(again.Task.StoppedReason) != "user went idle" || aws.ToString(again.Task.LastStatus) != "STOPPED" {
		t.Errorf("second StopTask = %v; reason %q", err, aws.ToString(again.Task.StoppedReason))
	}

	// The address is free again: the next task gets it.
	next := e.waitStatus(t, aws.ToString(e.run(t, runInput("after")).TaskArn), "RUNNING")
	if privateIP(next) != ip {
		t.Errorf("next task got %s, want the freed %s", privateIP(next), ip)
	}
}

func TestServer_StopTask_KillsAfterStopTimeout(t *testing.T) {
	t.Parallel()
	e := start(t)
	const timeout = 300 * time.Millisecond
	e.register(t, ecslocal.TaskDefinition{Family: "stubborn", Command: []string{fixture, "-mode", "ignore-term", "-child"}, StopTimeout: timeout})
	in := runInput("stubborn")
	in.TaskDefinition = aws.String("stubborn")
	arn := aws.ToString(e.run(t, in).TaskArn)
	w := e.whoami(t, privateIP(e.waitStatus(t, arn, "RUNNING")))
	if !alive(w.ChildPid) {
		t.Fatal("the fixture's child is not running")
	}

	if _, err := e.ecs.StopTask(context.Background(), &ecs.StopTaskInput{Cluster: aws.String("sandboxes"), Task: aws.String(arn)}); err != nil {
		t.Fatal(err)
	}
	stopping := e.waitStatus(t, arn, "STOPPING")
	if aws.ToString(stopping.StoppedReason) != "Task stopped by user" {
		t.Errorf("stoppedReason without a reason = %q", aws.ToString(stopping.StoppedReason))
	}
	stopped := e.waitStatus(t, arn, "STOPPED")
	if c := stopped.Containers[0]; c.ExitCode == nil || *c.ExitCode != 137 {
		t.Errorf("exit code %s, want 137 (SIGKILL)", code(c.ExitCode))
	}
	if waited := aws.ToTime(stopped.ExecutionStoppedAt).Sub(aws.ToTime(stopped.StoppingAt)); waited < timeout-time.Millisecond {
		t.Errorf("killed %v after the stop began, before the %v stop timeout", waited, timeout)
	}
	if got := e.out.of(taskID(arn)); !strings.Contains(got, "sigterm ignored") {
		t.Errorf("output %q: SIGTERM never reached the process", got)
	}
	waitGone(t, w.Pid)
	waitGone(t, w.ChildPid)
}

func TestServer_Task_ExitsByItself(t *testing.T) {
	t.Parallel()
	e := start(t)
	e.register(t, ecslocal.TaskDefinition{Family: "quitter", Command: []string{fixture, "-mode", "exit", "-code", "3"}})
	in := runInput("quitter")
	in.TaskDefinition = aws.String("quitter:1")
	arn := aws.ToString(e.run(t, in).TaskArn)
	stopped := e.waitStatus(t, arn, "STOPPED")
	if stopped.StopCode != types.TaskStopCodeEssentialContainerExited ||
		aws.ToString(stopped.StoppedReason) != "Essential container in task exited" ||
		aws.ToString(stopped.DesiredStatus) != "STOPPED" {
		t.Errorf("stopCode %s, reason %q, desired %s", stopped.StopCode, aws.ToString(stopped.StoppedReason), aws.ToString(stopped.DesiredStatus))
	}
	if c := stopped.Containers[0]; c.ExitCode == nil || *c.ExitCode != 3 {
		t.Errorf("exit code %s, want 3", code(c.ExitCode))
	}
	if !strings.Contains(e.out.of(taskID(arn)), "exiting 3") {
		t.Errorf("output %q", e.out.of(taskID(arn)))
	}
}

func TestServer_StopTask_BeforeTheProcessStarts(t *testing.T) {
	t.Parallel()
	e := start(t, func(s *ecslocal.Server) { s.LaunchDelay = time.Minute })
	arn := aws.ToString(e.run(t, runInput("early")).TaskArn)
	if _, err := e.ecs.StopTask(context.Background(), &ecs.StopTaskInput{Cluster: aws.String("sandboxes"), Task: aws.String(arn), Reason: aws.String("changed my mind")}); err != nil {
		t.Fatal(err)
	}
	stopped := e.waitStatus(t, arn, "STOPPED")
	if stopped.StartedAt != nil || stopped.Containers[0].ExitCode != nil || stopped.StopCode != types.TaskStopCodeUserInitiated {
		t.Errorf("a task stopped while provisioning: startedAt %v, exit code %s, stopCode %s",
			stopped.StartedAt, code(stopped.Containers[0].ExitCode), stopped.StopCode)
	}
	if got := e.out.of(taskID(arn)); got != "" {
		t.Errorf("a process ran: %q", got)
	}
}

func TestServer_RunTask_MissingBinaryFailsToStart(t *testing.T) {
	t.Parallel()
	e := start(t)
	e.register(t, ecslocal.TaskDefinition{Family: "broken", Command: []string{"/nonexistent/agent"}})
	in := runInput("broken")
	in.TaskDefinition = aws.String("broken")
	stopped := e.waitStatus(t, aws.ToString(e.run(t, in).TaskArn), "STOPPED")
	if stopped.StopCode != types.TaskStopCodeTaskFailedToStart || !strings.HasPrefix(aws.ToString(stopped.StoppedReason), "CannotPullContainerError") {
		t.Errorf("stopCode %s, reason %q; want TaskFailedToStart, CannotPullContainerError", stopped.StopCode, aws.ToString(stopped.StoppedReason))
	}
}

func TestServer_Close_LeavesNoProcess(t *testing.T) {
	t.Parallel()
	e := start(t)
	// One task exits on SIGTERM; one ignores it with a stop timeout longer than Close
	// waits; both have a child in their process group.
	e.register(t, ecslocal.TaskDefinition{Family: "polite", Command: []string{fixture, "-mode", "serve", "-child"}})
	e.register(t, ecslocal.TaskDefinition{Family: "stubborn", Command: []string{fixture, "-mode", "ignore-term", "-child"}, StopTimeout: time.Minute})
	var pids []int
	for _, family := range []string{"polite", "stubborn"} {
		in := runInput(family)
		in.TaskDefinition = aws.String(family)
		w := e.whoami(t, privateIP(e.waitStatus(t, aws.ToString(e.run(t, in).TaskArn), "RUNNING")))
		if !alive(w.Pid) || !alive(w.ChildPid) {
			t.Fatalf("%s: process %d or its child %d is not running", family, w.Pid, w.ChildPid)
		}
		pids = append(pids, w.Pid, w.ChildPid)
	}
	for _, info := range e.srv.Tasks() {
		if info.Pid == 0 {
			t.Fatalf("task %s has no pid", info.ID)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	err := e.srv.Close(ctx)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Close = %v, want the deadline it had to cut short", err)
	}
	// The task processes are reaped before Close returns; their children were sent SIGKILL
	// with the group and die as soon as the kernel delivers it.
	for i, pid := range pids {
		if i%2 == 0 && alive(pid) {
			t.Errorf("task process %d survived Close", pid)
		}
	}
	for _, pid := range pids {
		waitGone(t, pid)
	}
	if n := len(e.srv.Tasks()); n != 0 {
		t.Errorf("%d tasks still live after Close", n)
	}
	if _, err := e.ecs.ListTasks(context.Background(), &ecs.ListTasksInput{}); err == nil {
		t.Error("the ECS endpoint still answers after Close")
	}
	if _, err := e.srv.RegisterTaskDefinition(ecslocal.TaskDefinition{Family: "late", ContainerName: "c", Command: []string{fixture}}); !errors.Is(err, ecslocal.ErrClosed) {
		t.Errorf("RegisterTaskDefinition after Close = %v, want ErrClosed", err)
	}
}

func TestServer_DescribeTasks_ForgetsStoppedTasksAfterRetention(t *testing.T) {
	t.Parallel()
	e := start(t, func(s *ecslocal.Server) { s.StoppedRetention = 50 * time.Millisecond })
	ctx := context.Background()
	arn := aws.ToString(e.run(t, runInput("short-lived")).TaskArn)
	if _, err := e.ecs.StopTask(ctx, &ecs.StopTaskInput{Cluster: aws.String("sandboxes"), Task: aws.String(arn)}); err != nil {
		t.Fatal(err)
	}
	e.waitStatus(t, arn, "STOPPED")
	time.Sleep(100 * time.Millisecond)
	out, err := e.ecs.DescribeTasks(ctx, &ecs.DescribeTasksInput{Cluster: aws.String("sandboxes"), Tasks: []string{arn}})
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Tasks) != 0 || len(out.Failures) != 1 || aws.ToString(out.Failures[0].Reason) != "MISSING" {
		t.Fatalf("a task stopped past the retention: %d tasks, failures %+v; want MISSING", len(out.Tasks), out.Failures)
	}
	// Its clientToken went with it: the same token starts a new task.
	if again := aws.ToString(e.run(t, runInput("short-lived")).TaskArn); again == arn {
		t.Fatal("a forgotten task's token returned it again")
	}
}
