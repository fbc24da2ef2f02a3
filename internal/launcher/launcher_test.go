package launcher_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/netip"
	"os/exec"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/service/ecs"

	"github.com/sandgate/sandgate/infra/local/ecslocal"
	"github.com/sandgate/sandgate/internal/awsconf"
	"github.com/sandgate/sandgate/internal/launcher"
	"github.com/sandgate/sandgate/internal/taskenv"
)

type env struct {
	srv *ecslocal.Server
	l   *launcher.Launcher
}

func setup(t *testing.T, mutate func(*launcher.Config)) env {
	t.Helper()
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Fatal(err)
	}
	srv := ecslocal.NewServer(t.TempDir())
	srv.Clusters = []string{"sandgate"}
	srv.AddressPool = netip.MustParsePrefix("127.42.0.0/16")
	srv.Logger = slog.New(slog.NewJSONHandler(io.Discard, nil))
	if _, err := srv.RegisterTaskDefinition(ecslocal.TaskDefinition{
		Family: "sandbox", ContainerName: "agent", Command: []string{sleep, "60"},
		StopTimeout: 2 * time.Second,
	}); err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		srv.Close(ctx)
	})
	cfg, err := awsconf.Load(context.Background(), awsconf.Loopback(srv.Endpoint())...)
	if err != nil {
		t.Fatal(err)
	}
	lc := launcher.Config{
		Cluster: "sandgate", TaskDefinition: "sandbox", Container: "agent",
		Subnets: []string{"subnet-0a1b2c3d"}, SecurityGroups: []string{"sg-0a1b2c3d"},
		Table: "sandgate-table", Bucket: "sandgate-bucket", ManagementEndpoint: "http://127.0.0.1:8700/local",
	}
	if mutate != nil {
		mutate(&lc)
	}
	// The SDK's retryer backs off throttling; keep its delays short here.
	client := ecs.NewFromConfig(cfg, func(o *ecs.Options) {
		o.Retryer = retry.NewStandard(func(so *retry.StandardOptions) {
			so.MaxAttempts = 3
			so.Backoff = retry.BackoffDelayerFunc(func(int, error) (time.Duration, error) { return time.Millisecond, nil })
		})
	})
	return env{srv: srv, l: launcher.New(client, lc, slog.New(slog.NewJSONHandler(io.Discard, nil)))}
}

var spec = launcher.Spec{UserID: "user_abc", LeaseToken: "4f9c2a7e1b3d5f60718293a4b5c6d7e8", Generation: 7}

func TestLauncher_Launch_SendsTheContract(t *testing.T) {
	e := setup(t, nil)
	arn, err := e.l.Launch(context.Background(), spec)
	if err != nil {
		t.Fatal(err)
	}
	reqs := e.srv.RunTaskRequests()
	if len(reqs) != 1 {
		t.Fatalf("%d RunTask requests", len(reqs))
	}
	r := reqs[0]
	if aws.ToString(r.ClientToken) != spec.LeaseToken || aws.ToString(r.StartedBy) != launcher.DefaultStartedBy ||
		r.LaunchType != "FARGATE" || aws.ToString(r.Cluster) != "sandgate" || aws.ToString(r.TaskDefinition) != "sandbox" {
		t.Fatalf("request: token %v startedBy %v launchType %v", aws.ToString(r.ClientToken), aws.ToString(r.StartedBy), r.LaunchType)
	}
	vpc := r.NetworkConfiguration.AwsvpcConfiguration
	if vpc.Subnets[0] != "subnet-0a1b2c3d" || vpc.SecurityGroups[0] != "sg-0a1b2c3d" || vpc.AssignPublicIP != "DISABLED" {
		t.Fatalf("network: %+v", vpc)
	}
	co := r.Overrides.ContainerOverrides
	if len(co) != 1 || aws.ToString(co[0].Name) != "agent" {
		t.Fatalf("overrides: %+v", co)
	}
	got := map[string]string{}
	for _, kv := range co[0].Environment {
		got[aws.ToString(kv.Name)] = aws.ToString(kv.Value)
	}
	want := map[string]string{
		taskenv.UserID: "user_abc", taskenv.LeaseToken: spec.LeaseToken, taskenv.Generation: "7",
		taskenv.Table: "sandgate-table", taskenv.Bucket: "sandgate-bucket", taskenv.Prefix: "users/user_abc/",
		taskenv.ManagementEndpoint: "http://127.0.0.1:8700/local",
	}
	if len(got) != len(want) {
		t.Fatalf("environment %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
	tags := map[string]string{}
	for _, tg := range r.Tags {
		tags[aws.ToString(tg.Key)] = aws.ToString(tg.Value)
	}
	if tags[taskenv.TagUserID] != "user_abc" {
		t.Fatalf("tags %v", tags)
	}

	// The task is found by Describe and List, with its user and address.
	var task launcher.Task
	deadline := time.Now().Add(10 * time.Second)
	for task.PrivateIP == "" && time.Now().Before(deadline) {
		if task, err = e.l.Describe(context.Background(), arn); err != nil {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if task.UserID != "user_abc" || task.Generation != spec.Generation || task.PrivateIP == "" || task.ARN != arn {
		t.Fatalf("described %+v", task)
	}
	all, err := e.l.List(context.Background())
	if err != nil || len(all) != 1 || all[0].ARN != arn || all[0].UserID != "user_abc" || all[0].Generation != spec.Generation {
		t.Fatalf("List = %+v, %v", all, err)
	}
}

func TestLauncher_Launch_IdempotentOnLeaseToken(t *testing.T) {
	e := setup(t, nil)
	a, err := e.l.Launch(context.Background(), spec)
	if err != nil {
		t.Fatal(err)
	}
	b, err := e.l.Launch(context.Background(), spec)
	if err != nil || a != b {
		t.Fatalf("second launch %q, %v; want the same task %q", b, err, a)
	}
	if n := len(e.srv.Tasks()); n != 1 {
		t.Fatalf("%d tasks live, want 1", n)
	}
}

func TestLauncher_Launch_CapacityProvider(t *testing.T) {
	e := setup(t, func(c *launcher.Config) { c.CapacityProvider = "FARGATE_SPOT"; c.AssignPublicIP = true })
	if _, err := e.l.Launch(context.Background(), spec); err != nil {
		t.Fatal(err)
	}
	r := e.srv.RunTaskRequests()[0]
	if r.LaunchType != "" || len(r.CapacityProviderStrategy) != 1 ||
		aws.ToString(r.CapacityProviderStrategy[0].CapacityProvider) != "FARGATE_SPOT" ||
		r.NetworkConfiguration.AwsvpcConfiguration.AssignPublicIP != "ENABLED" {
		t.Fatalf("request %+v", r)
	}
}

func TestLauncher_Launch_Failures(t *testing.T) {
	e := setup(t, nil)
	e.srv.RefuseCapacity(1)
	_, err := e.l.Launch(context.Background(), spec)
	var le *launcher.LaunchError
	if !errors.Is(err, launcher.ErrCapacity) || !errors.As(err, &le) || le.Reason == "" {
		t.Fatalf("capacity refusal: %v", err)
	}

	// Throttling is retried with the same token; one task starts.
	e.srv.FailRunTask(ecslocal.ThrottlingException, 2)
	if _, err := e.l.Launch(context.Background(), spec); err != nil {
		t.Fatalf("throttled twice then fine: %v", err)
	}
	if n := len(e.srv.Tasks()); n != 1 {
		t.Fatalf("%d tasks", n)
	}

	// Past the SDK's attempts a user's launch is tried again with the same token,
	// until it starts: one task.
	e.srv.FailRunTask(ecslocal.ThrottlingException, 7)
	other := launcher.Spec{UserID: "user_b", LeaseToken: "0000000000000000000000000000000b", Generation: 1}
	if _, err := e.l.Launch(context.Background(), other); err != nil {
		t.Fatalf("throttled past the SDK's attempts, then fine: %v", err)
	}
	if n := len(e.srv.Tasks()); n != 2 {
		t.Fatalf("%d tasks", n)
	}

	// Throttled until the caller's deadline: the throttling error, wrapped.
	e.srv.FailRunTask(ecslocal.ThrottlingException, -1)
	defer e.srv.ClearFaults()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	third := launcher.Spec{UserID: "user_c", LeaseToken: "0000000000000000000000000000000c", Generation: 1}
	if _, err := e.l.Launch(ctx, third); !errors.Is(err, launcher.ErrThrottled) || errors.Is(err, launcher.ErrCapacity) {
		t.Fatalf("persistent throttling: %v", err)
	}
	// A pool launch is not tried again: the refill gives way.
	before := len(e.srv.RunTaskRequests())
	if _, err := e.l.LaunchPool(context.Background(), "pool0000000000000000000001"); !errors.Is(err, launcher.ErrThrottled) {
		t.Fatalf("throttled pool launch: %v", err)
	}
	if n := len(e.srv.RunTaskRequests()) - before; n != 3 {
		t.Fatalf("a throttled pool launch made %d requests, want the SDK's 3 attempts", n)
	}
}

// A pool task's RunTask: its pool id as clientToken, in its overrides and its tag, and
// nothing of any user.
func TestLauncher_LaunchPool_SendsNoUser(t *testing.T) {
	e := setup(t, nil)
	const id = "poolABCDEFGHIJKLMNOPQRSTU"
	arn, err := e.l.LaunchPool(context.Background(), id)
	if err != nil || arn == "" {
		t.Fatalf("launch pool: %q, %v", arn, err)
	}
	reqs := e.srv.RunTaskRequests()
	in := reqs[len(reqs)-1]
	if aws.ToString(in.ClientToken) != id {
		t.Fatalf("clientToken %q", aws.ToString(in.ClientToken))
	}
	env := map[string]string{}
	for _, kv := range in.Overrides.ContainerOverrides[0].Environment {
		env[aws.ToString(kv.Name)] = aws.ToString(kv.Value)
	}
	want := map[string]string{taskenv.PoolID: id, taskenv.Table: "sandgate-table", taskenv.Bucket: "sandgate-bucket",
		taskenv.ManagementEndpoint: "http://127.0.0.1:8700/local"}
	if len(env) != len(want) {
		t.Fatalf("overrides %v, want %v", env, want)
	}
	for k, v := range want {
		if env[k] != v {
			t.Fatalf("overrides %v, want %v", env, want)
		}
	}
	tasks, err := e.l.List(context.Background())
	if err != nil || len(tasks) != 1 || tasks[0].PoolID != id || tasks[0].UserID != "" || tasks[0].Generation != 0 {
		t.Fatalf("listed %+v, %v", tasks, err)
	}
}

func TestLauncher_Launch_ClientErrorNotRetried(t *testing.T) {
	e := setup(t, func(c *launcher.Config) { c.TaskDefinition = "no-such-family" })
	_, err := e.l.Launch(context.Background(), spec)
	if err == nil {
		t.Fatal("launch of an unknown task definition succeeded")
	}
	if n := len(e.srv.RunTaskRequests()); n != 1 {
		t.Fatalf("client error retried: %d requests", n)
	}
}

func TestLauncher_Stop(t *testing.T) {
	e := setup(t, nil)
	arn, err := e.l.Launch(context.Background(), spec)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.l.Stop(context.Background(), arn, "lease expired"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		task, err := e.l.Describe(context.Background(), arn)
		if err != nil {
			t.Fatal(err)
		}
		if task.LastStatus == "STOPPED" {
			if task.StoppedReason != "lease expired" || !task.Stopped() {
				t.Fatalf("stopped %+v", task)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("task still %s", task.LastStatus)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Stopping again, or stopping a task ECS never knew, is not an error.
	if err := e.l.Stop(context.Background(), arn, "again"); err != nil {
		t.Fatalf("second stop: %v", err)
	}
	unknown := "arn:aws:ecs:us-east-1:000000000000:task/sandgate/0123456789abcdef0123456789abcdef"
	if err := e.l.Stop(context.Background(), unknown, "x"); err != nil {
		t.Fatalf("stop unknown: %v", err)
	}
	if _, err := e.l.Describe(context.Background(), unknown); !errors.Is(err, launcher.ErrNotFound) {
		t.Fatalf("describe unknown: %v", err)
	}
}

func TestConfig_Validate(t *testing.T) {
	if err := (launcher.Config{}).Validate(); err == nil {
		t.Fatal("empty config valid")
	}
	good := launcher.Config{Cluster: "c", TaskDefinition: "t", Container: "agent", Subnets: []string{"subnet-1"},
		Table: "t", Bucket: "b", ManagementEndpoint: "https://x"}
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
	good.CapacityProvider = "EC2"
	if err := good.Validate(); err == nil {
		t.Fatal("EC2 capacity provider accepted")
	}
}
