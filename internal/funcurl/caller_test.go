package funcurl_test

import (
	"testing"

	"github.com/aws/aws-lambda-go/events"

	"github.com/sandgate/sandgate/internal/funcurl"
)

func TestParseCaller(t *testing.T) {
	c, err := funcurl.ParseCaller("arn:aws:sts::123456789012:assumed-role/sandgate-TaskRole-1A/0123abcd")
	if err != nil || c.Account != "123456789012" || c.Role != "sandgate-TaskRole-1A" || c.Session != "0123abcd" || c.Partition != "aws" {
		t.Fatalf("%+v, %v", c, err)
	}
	if !c.Is("sandgate-TaskRole-1A", "123456789012") || c.Is("sandgate-TaskRole-1A", "999999999999") || c.Is("Other", "123456789012") {
		t.Error("Is")
	}
	for _, bad := range []string{
		"", "arn:aws:iam::123456789012:user/bob", "arn:aws:sts::123456789012:federated-user/bob",
		"arn:aws:sts::123456789012:assumed-role/Role", "arn:aws:sts::123456789012:assumed-role/Role/a/b",
		"arn:aws:sts:::assumed-role/Role/s", "not an arn",
	} {
		if _, err := funcurl.ParseCaller(bad); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
	if _, err := funcurl.CallerOf(events.LambdaFunctionURLRequest{}); err != funcurl.ErrNoCaller {
		t.Errorf("no authorizer: %v", err)
	}
}

// A caller runs a task when its session is the task's id, in the task's cluster and
// account: a prefix, a suffix or another cluster is another task.
func TestCaller_RunsTask(t *testing.T) {
	c, _ := funcurl.ParseCaller("arn:aws:sts::123456789012:assumed-role/R/abc123")
	for arn, want := range map[string]bool{
		"arn:aws:ecs:eu-west-1:123456789012:task/sandgate/abc123":    true,
		"arn:aws:ecs:eu-west-1:123456789012:task/sandgate/abc1234":   false,
		"arn:aws:ecs:eu-west-1:123456789012:task/sandgate/xabc123":   false,
		"arn:aws:ecs:eu-west-1:123456789012:task/other/abc123":       false,
		"arn:aws:ecs:eu-west-1:999999999999:task/sandgate/abc123":    false,
		"arn:aws-cn:ecs:eu-west-1:123456789012:task/sandgate/abc123": false,
		"arn:aws:ecs:eu-west-1:123456789012:task/abc123":             false,
		"": false,
	} {
		if got := c.RunsTask(arn, "sandgate"); got != want {
			t.Errorf("RunsTask(%q) = %v", arn, got)
		}
	}
	if name, acct, err := funcurl.RoleName("arn:aws:iam::123456789012:role/path/to/Role-1"); err != nil || name != "Role-1" || acct != "123456789012" {
		t.Errorf("RoleName: %s %s %v", name, acct, err)
	}
	if _, _, err := funcurl.RoleName("arn:aws:iam::123456789012:user/bob"); err == nil {
		t.Error("a user is not a role")
	}
}
