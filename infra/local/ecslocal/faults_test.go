package ecslocal_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ecs"
	"github.com/aws/aws-sdk-go-v2/service/ecs/types"
	"github.com/aws/smithy-go"

	"github.com/sandgate/sandgate/infra/local/ecslocal"
)

func TestServer_FailRunTask_APIErrors(t *testing.T) {
	t.Parallel()
	e := start(t)
	ctx := context.Background()

	e.srv.FailRunTask(ecslocal.ThrottlingException, 1)
	_, err := e.ecs.RunTask(ctx, runInput("throttled"))
	var ae smithy.APIError
	if !errors.As(err, &ae) || ae.ErrorCode() != "ThrottlingException" || ae.ErrorFault() == smithy.FaultServer {
		t.Fatalf("RunTask = %v, want a ThrottlingException client fault", err)
	}

	e.srv.FailRunTask(ecslocal.ServerException, 1)
	_, err = e.ecs.RunTask(ctx, runInput("server"))
	var se *types.ServerException
	if !errors.As(err, &se) || se.ErrorFault() != smithy.FaultServer {
		t.Fatalf("RunTask = %v, want *types.ServerException", err)
	}
	if n := len(e.srv.Tasks()); n != 0 {
		t.Fatalf("%d tasks started by failed calls", n)
	}
	// Each fault was used up by one call.
	if arn := aws.ToString(e.run(t, runInput("fine")).TaskArn); arn == "" {
		t.Fatal("RunTask after the faults returned no task")
	}
}

func TestServer_FailRunTask_RetriedBySDKWithOneToken(t *testing.T) {
	t.Parallel()
	e := start(t)
	client := newClient(t, e.srv.Endpoint(), 3)
	e.srv.FailRunTask(ecslocal.ServerException, 2)
	in := runInput("")
	in.ClientToken = nil // the SDK fills it in, once for all attempts
	out, err := client.RunTask(context.Background(), in)
	if err != nil || len(out.Tasks) != 1 {
		t.Fatalf("RunTask through two server errors = %v", err)
	}
	reqs := e.srv.RunTaskRequests()
	if len(reqs) != 3 {
		t.Fatalf("%d RunTask requests recorded, want 3 attempts", len(reqs))
	}
	token := aws.ToString(reqs[0].ClientToken)
	for _, r := range reqs {
		if aws.ToString(r.ClientToken) != token || token == "" {
			t.Fatalf("attempts carried tokens %q and %q", token, aws.ToString(r.ClientToken))
		}
	}
	if aws.ToString(reqs[2].StartedBy) != "sandgate" || reqs[2].NetworkConfiguration.AwsvpcConfiguration.Subnets[0] != "subnet-0abc" {
		t.Errorf("recorded input %+v lost what the client sent", reqs[2])
	}
}

func TestServer_RefuseCapacity_ReportsFailureWithoutTask(t *testing.T) {
	t.Parallel()
	e := start(t)
	e.srv.RefuseCapacity(1)
	out, err := e.ecs.RunTask(context.Background(), runInput("lease"))
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Tasks) != 0 || len(out.Failures) != 1 || aws.ToString(out.Failures[0].Reason) != ecslocal.CapacityUnavailableReason {
		t.Fatalf("RunTask = %d tasks, failures %+v; want one capacity failure", len(out.Tasks), out.Failures)
	}
	if n := len(e.srv.Tasks()); n != 0 {
		t.Fatalf("%d tasks started", n)
	}
	// The token was not spent on the failure: the retry starts the task.
	if arn := aws.ToString(e.run(t, runInput("lease")).TaskArn); arn == "" {
		t.Fatal("retry with the same token returned no task")
	}
}

func TestServer_SetMaxTasks_RefusesPastTheBound(t *testing.T) {
	t.Parallel()
	e := start(t)
	ctx := context.Background()
	e.srv.SetMaxTasks(2)

	var mu sync.Mutex
	var started []string
	failures := 0
	var wg sync.WaitGroup
	for i := range 5 {
		wg.Go(func() {
			out, err := e.ecs.RunTask(ctx, runInput(fmt.Sprintf("bounded-%d", i)))
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			defer mu.Unlock()
			for _, task := range out.Tasks {
				started = append(started, aws.ToString(task.TaskArn))
			}
			failures += len(out.Failures)
		})
	}
	wg.Wait()
	if len(started) != 2 || failures != 3 {
		t.Fatalf("%d started, %d failures; want 2 and 3", len(started), failures)
	}

	if _, err := e.ecs.StopTask(ctx, &ecs.StopTaskInput{Cluster: aws.String("sandboxes"), Task: aws.String(started[0])}); err != nil {
		t.Fatal(err)
	}
	e.waitStatus(t, started[0], "STOPPED")
	if arn := aws.ToString(e.run(t, runInput("after-stop")).TaskArn); arn == "" {
		t.Fatal("no room after a task stopped")
	}
}

func TestServer_CrashTasks_DieRightAfterStart(t *testing.T) {
	t.Parallel()
	e := start(t)
	e.srv.CrashTasks(1)
	crashed := aws.ToString(e.run(t, runInput("crash")).TaskArn)
	healthy := aws.ToString(e.run(t, runInput("healthy")).TaskArn)

	stopped := e.waitStatus(t, crashed, "STOPPED")
	if c := stopped.Containers[0]; c.ExitCode == nil || *c.ExitCode != 1 {
		t.Errorf("crashed task exit code %s, want 1", code(c.ExitCode))
	}
	if stopped.StopCode != types.TaskStopCodeEssentialContainerExited || stopped.StartedAt == nil {
		t.Errorf("crashed task: stopCode %s, startedAt %v", stopped.StopCode, stopped.StartedAt)
	}
	e.whoami(t, privateIP(e.waitStatus(t, healthy, "RUNNING")))
	if live := e.srv.Tasks(); len(live) != 1 || live[0].ARN != healthy {
		t.Errorf("live tasks %+v, want only the healthy one", live)
	}
}

func TestServer_ClearFaults_SwitchesEveryFaultOff(t *testing.T) {
	t.Parallel()
	e := start(t)
	e.srv.FailRunTask(ecslocal.ThrottlingException, -1)
	e.srv.RefuseCapacity(-1)
	e.srv.CrashTasks(-1)
	for i := range 2 {
		if _, err := e.ecs.RunTask(context.Background(), runInput(fmt.Sprintf("t%d", i))); err == nil {
			t.Fatal("a permanent fault let RunTask through")
		}
	}
	e.srv.ClearFaults()
	e.whoami(t, privateIP(e.waitStatus(t, aws.ToString(e.run(t, runInput("cleared")).TaskArn), "RUNNING")))
}

// A held launch starts no process: stopped while held, the task never ran; released,
// the next one runs.
func TestServer_HoldLaunches_StartNothingUntilReleased(t *testing.T) {
	t.Parallel()
	e := start(t)
	release := e.srv.HoldLaunches()
	defer release()
	held := aws.ToString(e.run(t, runInput("held")).TaskArn)
	e.waitStatus(t, held, "PENDING")
	if _, err := e.ecs.StopTask(context.Background(), &ecs.StopTaskInput{Cluster: aws.String("sandboxes"), Task: aws.String(held)}); err != nil {
		t.Fatal(err)
	}
	if stopped := e.waitStatus(t, held, "STOPPED"); stopped.StartedAt != nil || stopped.Containers[0].ExitCode != nil {
		t.Errorf("a task stopped while held ran: startedAt %v, exit code %s", stopped.StartedAt, code(stopped.Containers[0].ExitCode))
	}

	next := aws.ToString(e.run(t, runInput("released")).TaskArn)
	e.waitStatus(t, next, "PENDING")
	release()
	e.whoami(t, privateIP(e.waitStatus(t, next, "RUNNING")))
}
