package e2e_test

import (
	"context"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ecs"
	ecstypes "github.com/aws/aws-sdk-go-v2/service/ecs/types"

	"github.com/sandgate/sandgate/infra/local/iampolicy"
	"github.com/sandgate/sandgate/infra/local/identity"
	"github.com/sandgate/sandgate/infra/local/stack"
	"github.com/sandgate/sandgate/infra/local/testkit"
	"github.com/sandgate/sandgate/internal/frames"
	"github.com/sandgate/sandgate/internal/state"
)

// A frame to a stopped sandbox starts the next one through the Connect function (the
// Message function's ensure notice), and the client sees what it always saw:
// "starting", then "ready", then the frame's echo.
func TestStack_Message_StoppedSandboxStartsThroughConnect(t *testing.T) {
	s := apps.Get(t)
	const user = "user_msgwake"
	ctx := context.Background()
	c := s.DialReady(t, user, coldStart)
	first := s.Running(t, user, reply)
	s.StopTask(t, first.TaskARN)
	c.Status(frames.Stopping, reply)
	s.Stopped(t, user, coldStart)

	c.Send("wake up")
	if f := c.NextFrame(); f.Type != frames.TypeStatus || f.State != frames.Starting {
		t.Fatalf("first frame after the send %+v, want starting", f)
	}
	c.Status(frames.Ready, coldStart)
	c.Next(reply, "echo", testkit.Is("wake up"))
	now, err := s.Store.Get(ctx, user)
	if err != nil || now.State != state.Running || now.Generation != first.Generation+1 || len(s.RunTasks(user)) != 2 {
		t.Fatalf("record %+v, %v, %d RunTask calls", now, err, len(s.RunTasks(user)))
	}
	// The Connect function ran the ensure, for the Message function's frame.
	ensured := s.Output.Lines(func(l testkit.Line) bool {
		return l.Source == s.Name("ConnectFunction") && l.Msg == "sandbox ensured" && l.Str("userId") == user && l.Fields["started"] == true
	})
	asked := s.Output.Lines(func(l testkit.Line) bool {
		return l.Source == s.Name("MessageFunction") && l.Msg == "sandbox starting for a frame" && l.Str("userId") == user
	})
	if len(ensured) != 1 || ensured[0].Str("notice") != "ensure" || len(asked) != 1 {
		t.Fatalf("Connect's ensure lines %+v, Message's %+v", ensured, asked)
	}
}

// The Message function's role may not start a task: RunTask with a session of it is
// refused as ECS refuses it, and it may pass neither sandbox role to ECS — which the
// Connect function's role may (the control that the question can say yes).
func TestIAM_MessageRole_CannotRunTaskOrPassRole(t *testing.T) {
	s := apps.Get(t)
	ctx := context.Background()
	cl := ecs.NewFromConfig(as(t, s, "MessageRole"), func(o *ecs.Options) { o.BaseEndpoint = aws.String(s.Endpoints["AWS_ENDPOINT_URL_ECS"]) })
	_, err := cl.RunTask(ctx, &ecs.RunTaskInput{
		Cluster: aws.String(s.Cluster), TaskDefinition: aws.String(s.TaskDefinition), LaunchType: ecstypes.LaunchTypeFargate,
		NetworkConfiguration: &ecstypes.NetworkConfiguration{AwsvpcConfiguration: &ecstypes.AwsVpcConfiguration{Subnets: []string{"subnet-local"}}},
	})
	if code := testkit.ErrorCode(err); code != "AccessDeniedException" {
		t.Fatalf("RunTask as the Message function's role: err = %v, want AccessDeniedException", err)
	}

	// iam:PassRole is checked only once ecs:RunTask is allowed, so ask the evaluator
	// about it directly (Decide records nothing toward the statement check).
	ev := iampolicy.StartForTest(t, iampolicy.Options{})
	env := iampolicy.Env{Region: stack.Region, Account: stack.AccountID}
	roles := []string{s.Authority().RoleARN(stack.RoleName("TaskRole")), s.Authority().RoleARN(stack.RoleName("TaskExecutionRole"))}
	for role, allowed := range map[string]bool{"MessageRole": false, "ConnectRole": true} {
		_, p, err := s.Authority().Issue(identity.SessionSpec{RoleARN: s.Authority().RoleARN(stack.RoleName(role)), SessionName: "probe"})
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range iampolicy.PassRole(env, false, iampolicy.ECSTasksService, roles...) {
			r.Principal = p
			d, err := ev.Decide(ctx, r)
			if err != nil {
				t.Fatal(err)
			}
			if d.Allowed() != allowed {
				t.Errorf("%s %s %s: %s, want allowed=%v", role, r.Action, r.Resource, d.Result, allowed)
			}
		}
	}
}
