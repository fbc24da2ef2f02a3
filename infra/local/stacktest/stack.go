package stacktest

import (
	"context"
	"log/slog"
	"maps"
	"os"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ecs"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/sandgate/sandgate/infra/local/stack"
	"github.com/sandgate/sandgate/internal/state"
)

// Fast shortens the intervals the template bounds for production, so idle stops,
// lease expiry and syncs happen within a test.
var Fast = map[string]string{
	"SLEEP_AFTER":   "3s",
	"LEASE_TTL":     "15s",
	"SYNC_INTERVAL": "1s",
}

// Environment variables that help debug a failing test.
const (
	// EnvDebug set to anything runs every function and agent at LOG_LEVEL=DEBUG.
	EnvDebug = "SANDGATE_STACK_DEBUG"
	// EnvOutput names a file that receives a failed test's whole process output.
	EnvOutput = "SANDGATE_STACK_OUTPUT"
)

// Stack is a running local application and its processes' output.
type Stack struct {
	*stack.Stack
	Output *Output
}

// Start runs the application from template.yaml with the test binary's build,
// Fast intervals and the output collected; mutate adjusts the options. If the test
// fails, the tail of the output is logged. The stack is closed when the test ends.
func Start(tb testing.TB, mutate func(*stack.Options)) *Stack {
	tb.Helper()
	b := Binaries(tb)
	out := NewOutput()
	o := stack.Options{
		Template: b.Template(), BuildDir: b.Dir, Agent: b.Agent(),
		Functions: true, Overrides: maps.Clone(Fast), Output: out,
		Log: slog.New(slog.NewJSONHandler(out, &slog.HandlerOptions{Level: slog.LevelWarn})),
	}
	if mutate != nil {
		mutate(&o)
	}
	if os.Getenv(EnvDebug) != "" {
		o.Overrides = maps.Clone(o.Overrides)
		if o.Overrides == nil {
			o.Overrides = map[string]string{}
		}
		o.Overrides["LOG_LEVEL"] = "DEBUG"
	}
	s, err := stack.Start(context.Background(), o)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if tb.Failed() {
			tb.Logf("process output (tail):\n%s", out.Tail(8000))
			if path := os.Getenv(EnvOutput); path != "" {
				_ = os.WriteFile(path, []byte(out.Tail(DefaultTailBytes)), 0o644)
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		if err := s.Close(ctx); err != nil {
			tb.Errorf("close stack: %v", err)
		}
	})
	return &Stack{Stack: s, Output: out}
}

// Dial connects as user through the gateway, failing the test on error.
func (s *Stack) Dial(tb testing.TB, user string) *Client {
	tb.Helper()
	c, err := s.TryDial(tb, user)
	if err != nil {
		tb.Fatalf("dial as %s: %v", user, err)
	}
	return c
}

// TryDial connects as user through the gateway; it never fails tb.
func (s *Stack) TryDial(tb testing.TB, user string) (*Client, error) {
	url, err := s.SignURL(user)
	if err != nil {
		return nil, err
	}
	c, err := DialURL(tb, url, DefaultDialTimeout)
	if err != nil {
		return nil, err
	}
	c.User = user
	return c, nil
}

// WaitState polls the user's sandbox record until pred holds, failing after timeout.
func (s *Stack) WaitState(tb testing.TB, user string, timeout time.Duration, what string, pred func(*state.Sandbox) bool) *state.Sandbox {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for {
		sb, err := s.Store.Get(context.Background(), user)
		if err == nil && pred(sb) {
			return sb
		}
		if time.Now().After(deadline) {
			tb.Fatalf("%s: sandbox never %s (last: %+v, %v)", user, what, sb, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Running waits until the user's sandbox is RUNNING and returns its record.
func (s *Stack) Running(tb testing.TB, user string, timeout time.Duration) *state.Sandbox {
	tb.Helper()
	return s.WaitState(tb, user, timeout, "running", func(sb *state.Sandbox) bool { return sb.State == state.Running })
}

// Stopped waits until the user's sandbox is STOPPED and returns its record.
func (s *Stack) Stopped(tb testing.TB, user string, timeout time.Duration) *state.Sandbox {
	tb.Helper()
	return s.WaitState(tb, user, timeout, "stopped", func(sb *state.Sandbox) bool { return sb.State == state.Stopped })
}

// TaskPid returns the process id of the live task arn.
func (s *Stack) TaskPid(tb testing.TB, arn string) int {
	tb.Helper()
	for _, task := range s.ECS.Tasks() {
		if task.ARN == arn && task.Pid > 0 {
			return task.Pid
		}
	}
	tb.Fatalf("no live task %s", arn)
	return 0
}

// TaskGone reports whether task arn has stopped (or never existed).
func (s *Stack) TaskGone(arn string) bool {
	for _, task := range s.ECS.Tasks() {
		if task.ARN == arn {
			return false
		}
	}
	return true
}

// S3Client returns a client of the stack's bucket endpoint.
func (s *Stack) S3Client() *s3.Client {
	return s3.NewFromConfig(s.AWS, func(o *s3.Options) {
		o.BaseEndpoint = aws.String(s.Endpoints["AWS_ENDPOINT_URL_S3"])
		o.UsePathStyle = true
	})
}

// ECSClient returns a client of the stack's ECS endpoint.
func (s *Stack) ECSClient() *ecs.Client {
	return ecs.NewFromConfig(s.AWS, func(o *ecs.Options) { o.BaseEndpoint = aws.String(s.Endpoints["AWS_ENDPOINT_URL_ECS"]) })
}

// Keys lists the bucket's keys under prefix.
func (s *Stack) Keys(tb testing.TB, prefix string) []string {
	tb.Helper()
	var keys []string
	p := s3.NewListObjectsV2Paginator(s.S3Client(), &s3.ListObjectsV2Input{Bucket: aws.String(s.Bucket), Prefix: aws.String(prefix)})
	for p.HasMorePages() {
		out, err := p.NextPage(context.Background())
		if err != nil {
			tb.Fatal(err)
		}
		for _, o := range out.Contents {
			keys = append(keys, aws.ToString(o.Key))
		}
	}
	return keys
}

// Capacity returns the capacity counter (the live sandboxes DynamoDB accounts for).
func (s *Stack) Capacity(tb testing.TB) int {
	tb.Helper()
	n, err := s.Store.Capacity(context.Background())
	if err != nil {
		tb.Fatal(err)
	}
	return n
}
