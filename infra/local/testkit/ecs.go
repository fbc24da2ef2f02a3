package testkit

import (
	"context"
	"log/slog"
	"os/exec"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/service/ecs"

	"github.com/sandgate/sandgate/infra/local/ecslocal"
	"github.com/sandgate/sandgate/internal/awsconf"
	"github.com/sandgate/sandgate/internal/launcher"
)

// Names of the ECS resources StartECS sets up.
const (
	Cluster   = "sandboxes"
	Family    = "sandbox"
	Container = "agent"
	Bucket    = "sandgate-test"
)

// ECS is the local ECS endpoint with a stand-in sandbox task (sleep) registered.
type ECS struct {
	Server *ecslocal.Server
	// Client makes one attempt per call, so a test's fault reaches the caller.
	Client *ecs.Client
}

// StartECS starts ecslocal on a random /24 of 127/8 (so concurrent test binaries
// never hand out the same address) with the stand-in task registered; configure runs
// before Start. The server is closed, its tasks killed, when the test ends.
func StartECS(tb testing.TB, log *slog.Logger, configure ...func(*ecslocal.Server)) *ECS {
	tb.Helper()
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		tb.Fatalf("stand-in task: %v", err)
	}
	s := ecslocal.NewServer(tb.TempDir())
	s.Logger = log
	s.AddressPool = ecslocal.RandomAddressPool()
	s.Clusters = []string{Cluster}
	for _, c := range configure {
		c(s)
	}
	if err := s.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.Close(ctx); err != nil {
			tb.Errorf("close ecslocal: %v", err)
		}
	})
	if _, err := s.RegisterTaskDefinition(ecslocal.TaskDefinition{
		Family: Family, ContainerName: Container, Command: []string{sleep, "3600"}, StopTimeout: 200 * time.Millisecond,
	}); err != nil {
		tb.Fatal(err)
	}
	cfg, err := awsconf.Load(context.Background(), awsconf.Loopback(s.Endpoint())...)
	if err != nil {
		tb.Fatal(err)
	}
	client := ecs.NewFromConfig(cfg, func(o *ecs.Options) {
		o.Retryer = retry.AddWithMaxAttempts(o.Retryer, 1)
	})
	return &ECS{Server: s, Client: client}
}

// LauncherConfig returns the launcher configuration of the stand-in task.
func (e *ECS) LauncherConfig(table, managementEndpoint string) launcher.Config {
	return launcher.Config{
		Cluster: Cluster, TaskDefinition: Family, Container: Container,
		Subnets: []string{"subnet-local"}, SecurityGroups: []string{"sg-local"},
		Table: table, Bucket: Bucket, ManagementEndpoint: managementEndpoint,
	}
}

// Launcher returns a launcher of the stand-in task.
func (e *ECS) Launcher(log *slog.Logger, table, managementEndpoint string) *launcher.Launcher {
	return launcher.New(e.Client, e.LauncherConfig(table, managementEndpoint), log)
}

// RunTasks returns the RunTask calls the endpoint received.
func (e *ECS) RunTasks() []*ecslocal.RunTaskRequest { return e.Server.RunTaskRequests() }

// TaskEnv returns the container override environment of a RunTask call.
func TaskEnv(in *ecslocal.RunTaskRequest) map[string]string {
	env := map[string]string{}
	if in.Overrides == nil {
		return env
	}
	for _, o := range in.Overrides.ContainerOverrides {
		for _, kv := range o.Environment {
			env[aws.ToString(kv.Name)] = aws.ToString(kv.Value)
		}
	}
	return env
}
