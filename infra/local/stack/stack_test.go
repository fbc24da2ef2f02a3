package stack_test

import (
	"context"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ecs"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/sandgate/sandgate/infra/local/stack"
	"github.com/sandgate/sandgate/internal/launcher"
)

func TestStart_EmulatorsFromTemplate(t *testing.T) {
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Fatal(err)
	}
	// A stand-in agent: a script that records its environment and waits.
	dir := t.TempDir()
	agent := filepath.Join(dir, "agent")
	if err := os.WriteFile(agent, []byte("#!/bin/sh\nenv > env.txt\n"+standIn(sleep)), 0o755); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	s, err := stack.Start(ctx, stack.Options{Template: "../../../template.yaml", Agent: agent,
		Log: slog.New(slog.NewJSONHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	defer func() {
		if !closed {
			s.Close(ctx)
		}
	}()

	// The table exists and the store works.
	if _, err := s.Store.Capacity(ctx); err != nil {
		t.Fatalf("capacity: %v", err)
	}
	// The bucket exists.
	s3c := s3.NewFromConfig(s.AWS, func(o *s3.Options) {
		o.BaseEndpoint = aws.String(s.Endpoints["AWS_ENDPOINT_URL_S3"])
		o.UsePathStyle = true
	})
	if _, err := s3c.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: aws.String(s.Bucket)}); err != nil {
		t.Fatalf("bucket %s: %v", s.Bucket, err)
	}
	// A task started the way the Lambdas start one runs the agent with the template's
	// environment, its volume mapped into the task's own directory.
	ecsc := ecs.NewFromConfig(s.AWS, func(o *ecs.Options) { o.BaseEndpoint = aws.String(s.Endpoints["AWS_ENDPOINT_URL_ECS"]) })
	l := launcher.New(ecsc, launcher.Config{
		Cluster: s.Cluster, TaskDefinition: s.TaskDefinition, Container: "agent",
		Subnets: []string{"subnet-0local"}, Table: s.Table, Bucket: s.Bucket,
		ManagementEndpoint: s.Gateway.ManagementEndpoint(),
	}, slog.New(slog.NewJSONHandler(io.Discard, nil)))
	if _, err := l.Launch(ctx, launcher.Spec{UserID: "user_a", LeaseToken: "0123456789abcdef0123456789abcdef", Generation: 1}); err != nil {
		t.Fatal(err)
	}
	var env string
	var pid int
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline) && env == ""; time.Sleep(20 * time.Millisecond) {
		for _, task := range s.ECS.Tasks() {
			if b, err := os.ReadFile(filepath.Join(task.DataDir, "env.txt")); err == nil && len(b) > 0 {
				env, pid = string(b), task.Pid
			}
		}
	}
	for _, want := range []string{
		"AGENT_PORT=8080", "DATA_DIR=mnt/data", "SANDGATE_USER_ID=user_a",
		"AWS_ENDPOINT_URL_DYNAMODB=" + s.Endpoints["AWS_ENDPOINT_URL_DYNAMODB"],
		"AWS_ENDPOINT_URL_S3=" + s.Endpoints["AWS_ENDPOINT_URL_S3"],
		"STORAGE_PATH_STYLE=true", "SANDGATE_MANAGEMENT_ENDPOINT=" + s.Gateway.ManagementEndpoint(),
		"ECS_CONTAINER_METADATA_URI_V4=",
	} {
		if !strings.Contains(env, want) {
			t.Errorf("task environment lacks %s:\n%s", want, env)
		}
	}
	// Close stops the task.
	closed = true
	if err := s.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if pid != 0 && syscall.Kill(pid, 0) == nil {
		t.Fatalf("task process %d survived Close", pid)
	}
}

func TestStart_MissingFunctions(t *testing.T) {
	_, err := stack.Start(context.Background(), stack.Options{Template: "../../../template.yaml",
		Functions: true, BuildDir: t.TempDir(), Log: slog.New(slog.NewJSONHandler(io.Discard, nil))})
	if err == nil || !strings.Contains(err.Error(), "make build-local") {
		t.Fatalf("Start without bootstraps = %v", err)
	}
}

// Tasks take their addresses from the stack's pool, never from the addresses another
// stack on the machine hands out by default (127.0.0.0/24), and an explicit pool is kept.
func TestStart_TaskAddressPool(t *testing.T) {
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Fatal(err)
	}
	agent := filepath.Join(t.TempDir(), "agent")
	if err := os.WriteFile(agent, []byte("#!/bin/sh\n"+standIn(sleep)), 0o755); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	pool := netip.MustParsePrefix("127.77.66.0/24")
	for _, want := range []netip.Prefix{{}, pool} {
		s, err := stack.Start(ctx, stack.Options{Template: "../../../template.yaml", Agent: agent, AddressPool: want,
			Log: slog.New(slog.NewJSONHandler(io.Discard, nil))})
		if err != nil {
			t.Fatal(err)
		}
		ecsc := ecs.NewFromConfig(s.AWS, func(o *ecs.Options) { o.BaseEndpoint = aws.String(s.Endpoints["AWS_ENDPOINT_URL_ECS"]) })
		l := launcher.New(ecsc, launcher.Config{Cluster: s.Cluster, TaskDefinition: s.TaskDefinition, Container: "agent",
			Subnets: []string{"subnet-0local"}, Table: s.Table, Bucket: s.Bucket, ManagementEndpoint: s.Gateway.ManagementEndpoint()},
			slog.New(slog.NewJSONHandler(io.Discard, nil)))
		if _, err := l.Launch(ctx, launcher.Spec{UserID: "user_a", LeaseToken: "0123456789abcdef0123456789abcdef", Generation: 1}); err != nil {
			s.Close(ctx)
			t.Fatal(err)
		}
		tasks := s.ECS.Tasks()
		s.Close(ctx)
		if len(tasks) != 1 {
			t.Fatalf("%d tasks", len(tasks))
		}
		ip := tasks[0].IP
		if want.IsValid() && !want.Contains(ip) || !want.IsValid() && netip.MustParsePrefix("127.0.0.0/24").Contains(ip) {
			t.Fatalf("task address %s (pool %v)", ip, want)
		}
	}
}

// standIn is the body of a stand-in agent's script that waits until its task is
// stopped: the task's PID 1 in its namespace, it must handle SIGTERM itself (the
// kernel ignores unhandled signals to a namespace's init), or every Close waits for the
// stop timeout.
func standIn(sleep string) string {
	return "trap 'exit 0' TERM\n" + sleep + " 60 &\nwait\n"
}
