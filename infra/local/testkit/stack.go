package testkit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/ecs"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/sandgate/sandgate/infra/local/ecslocal"
	"github.com/sandgate/sandgate/infra/local/stack"
	"github.com/sandgate/sandgate/internal/frames"
	"github.com/sandgate/sandgate/internal/objsync"
	"github.com/sandgate/sandgate/internal/s3bucket"
	"github.com/sandgate/sandgate/internal/state"
	"github.com/sandgate/sandgate/internal/taskenv"
)

// Fast shortens the intervals the template bounds for production, so idle stops,
// lease expiry and syncs happen within a test. LEASE_TTL is the least the functions
// accept; a stall of half of it makes an agent give its lease up.
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
	s, err := start(Binaries(tb), mutate)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		s.report(tb)
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		if err := s.Close(ctx); err != nil {
			tb.Errorf("close stack: %v", err)
		}
	})
	return s
}

func start(b *Build, mutate func(*stack.Options)) (*Stack, error) {
	out := NewOutput()
	o := stack.Options{
		Template: b.Template(), BuildDir: b.Dir, Agent: b.Agent(),
		Functions: true, Overrides: maps.Clone(Fast), Output: out,
		Log: slog.New(slog.NewJSONHandler(out, &slog.HandlerOptions{Level: slog.LevelWarn})),
	}
	if mutate != nil {
		mutate(&o)
	}
	if o.Recorder == nil {
		o.Recorder = pkg.recorder
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
		return nil, err
	}
	return &Stack{Stack: s, Output: out}, nil
}

// report logs the tail of the processes' output when tb failed, and writes it whole to
// EnvOutput's file when set.
func (s *Stack) report(tb testing.TB) {
	if !tb.Failed() {
		return
	}
	tb.Logf("process output (tail):\n%s", s.Output.Tail(8000))
	if path := os.Getenv(EnvOutput); path != "" {
		_ = os.WriteFile(path, []byte(s.Output.Tail(DefaultTailBytes)), 0o644)
	}
}

// Shared is a stack the tests of a package share, each on users of its own: started by
// the first test that asks for it, closed by Main once every test has run. Declare it
// as a package variable.
type Shared struct {
	// Options adjusts the stack's options, as Start's mutate does.
	Options func(*stack.Options)

	once  sync.Once
	stack *Stack
	err   error
}

// Get returns the shared stack, starting it on the first call. If the test fails, the
// tail of the output is logged.
func (sh *Shared) Get(tb testing.TB) *Stack {
	tb.Helper()
	b := Binaries(tb)
	sh.once.Do(func() {
		sh.stack, sh.err = start(b, sh.Options)
		if sh.err == nil {
			pkg.mu.Lock()
			pkg.stacks = append(pkg.stacks, sh.stack)
			pkg.mu.Unlock()
		}
	})
	if sh.err != nil {
		tb.Fatalf("shared stack: %v", sh.err)
	}
	tb.Cleanup(func() { sh.stack.report(tb) })
	return sh.stack
}

// closeShared closes the shared stacks Get started.
func closeShared() error {
	pkg.mu.Lock()
	defer pkg.mu.Unlock()
	var errs []error
	for _, s := range pkg.stacks {
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		if err := s.Close(ctx); err != nil {
			errs = append(errs, fmt.Errorf("close shared stack: %w", err))
		}
		cancel()
	}
	pkg.stacks = nil
	return errors.Join(errs...)
}

// Dial connects as user through the gateway, failing the test on error.
func (s *Stack) Dial(tb testing.TB, user string) *Client {
	tb.Helper()
	c, err := s.TryDial(tb, user)
	return mustDial(tb, user, c, err)
}

// TryDial connects as user through the gateway; it never fails tb.
func (s *Stack) TryDial(tb testing.TB, user string) (*Client, error) {
	url, err := s.SignURL(user)
	if err != nil {
		return nil, err
	}
	return DialAs(tb, url, user)
}

// DialReady connects as user and waits until the sandbox is ready.
func (s *Stack) DialReady(tb testing.TB, user string, timeout time.Duration) *Client {
	tb.Helper()
	c := s.Dial(tb, user)
	c.Status(frames.Ready, timeout)
	return c
}

// SignedQuery returns the query string of a URL signed for user: what the HTTP API
// routes verify too.
func (s *Stack) SignedQuery(tb testing.TB, user string) string {
	tb.Helper()
	u, err := s.SignURL(user)
	if err != nil {
		tb.Fatal(err)
	}
	_, q, _ := strings.Cut(u, "?")
	return q
}

// HTTP calls the stack's HTTP API with rawQuery and returns the status and the JSON
// body, failing the test on a body that is not a JSON object.
func (s *Stack) HTTP(tb testing.TB, method, path, rawQuery string) (int, map[string]any) {
	tb.Helper()
	req, err := http.NewRequest(method, s.Gateway.HTTPURL()+path+"?"+rawQuery, nil)
	if err != nil {
		tb.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		tb.Fatalf("%s %s: %d %q is not JSON", method, path, resp.StatusCode, b)
	}
	return resp.StatusCode, m
}

// Eventually polls cond until it holds, failing the test with msg() after within: for
// state held in other processes (DynamoDB, the bucket, ECS) that announce no event a
// test could await. within is a failure guard, never part of what is asserted.
func Eventually(tb testing.TB, within time.Duration, cond func() bool, msg func() string) {
	tb.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatal(msg())
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// WaitState polls the user's sandbox record until pred holds, failing after timeout.
func (s *Stack) WaitState(tb testing.TB, user string, timeout time.Duration, what string, pred func(*state.Sandbox) bool) *state.Sandbox {
	tb.Helper()
	var sb *state.Sandbox
	var err error
	Eventually(tb, timeout, func() bool {
		sb, err = s.Store.Get(context.Background(), user)
		return err == nil && pred(sb)
	}, func() string { return fmt.Sprintf("%s: sandbox never %s (last: %+v, %v)", user, what, sb, err) })
	return sb
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

// Queued waits until the user's inbox holds n frames.
func (s *Stack) Queued(tb testing.TB, user string, n int, timeout time.Duration) {
	tb.Helper()
	var q int
	var err error
	Eventually(tb, timeout, func() bool {
		q, err = s.Store.Queued(context.Background(), user)
		return err == nil && q == n
	}, func() string { return fmt.Sprintf("%s: %d frames queued, want %d (%v)", user, q, n, err) })
}

// Task returns the live task named arn.
func (s *Stack) Task(tb testing.TB, arn string) ecslocal.TaskInfo {
	tb.Helper()
	for _, task := range s.ECS.Tasks() {
		if task.ARN == arn {
			return task
		}
	}
	tb.Fatalf("no live task %s", arn)
	return ecslocal.TaskInfo{}
}

// TaskPid returns the process id of the live task arn.
func (s *Stack) TaskPid(tb testing.TB, arn string) int {
	tb.Helper()
	if task := s.Task(tb, arn); task.Pid > 0 {
		return task.Pid
	}
	tb.Fatalf("task %s has no process", arn)
	return 0
}

// Workspace returns the user's directory inside the live task arn, where the workload
// works and from which the agent syncs.
func (s *Stack) Workspace(tb testing.TB, arn string) string {
	tb.Helper()
	task := s.Task(tb, arn)
	if task.DataDir == "" {
		tb.Fatalf("task %s has no data directory", arn)
	}
	// The stack maps the template's data volume to mnt/data in the task's directory.
	return filepath.Join(task.DataDir, "mnt", "data", "workspace")
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

// WaitTaskGone waits until task arn has stopped.
func (s *Stack) WaitTaskGone(tb testing.TB, arn string, timeout time.Duration) {
	tb.Helper()
	Eventually(tb, timeout, func() bool { return s.TaskGone(arn) }, func() string { return "task " + arn + " still runs" })
}

// StopTask asks ECS to stop task arn: SIGTERM to the agent, as a deploy or a Spot
// interruption does.
func (s *Stack) StopTask(tb testing.TB, arn string) {
	tb.Helper()
	_, err := s.ECSClient().StopTask(context.Background(), &ecs.StopTaskInput{
		Cluster: aws.String(s.Cluster), Task: aws.String(arn), Reason: aws.String("test"),
	})
	if err != nil {
		tb.Fatal(err)
	}
}

// ExitCode waits until task arn has stopped and returns its container's exit code, as
// ECS reports it.
func (s *Stack) ExitCode(tb testing.TB, arn string, timeout time.Duration) int {
	tb.Helper()
	var code *int32
	last := "unknown"
	Eventually(tb, timeout, func() bool {
		out, err := s.ECSClient().DescribeTasks(context.Background(), &ecs.DescribeTasksInput{
			Cluster: aws.String(s.Cluster), Tasks: []string{arn},
		})
		if err != nil || len(out.Tasks) == 0 {
			return false
		}
		t := out.Tasks[0]
		last = aws.ToString(t.LastStatus)
		if last != "STOPPED" || len(t.Containers) == 0 {
			return false
		}
		code = t.Containers[0].ExitCode
		return true
	}, func() string { return "task " + arn + " still " + last })
	if code == nil {
		tb.Fatalf("stopped task %s has no exit code", arn)
	}
	return int(*code)
}

// RunTasks returns the RunTask calls made for user.
func (s *Stack) RunTasks(user string) []*ecslocal.RunTaskRequest {
	var out []*ecslocal.RunTaskRequest
	for _, r := range s.ECS.RunTaskRequests() {
		if TaskEnv(r)[taskenv.UserID] == user {
			out = append(out, r)
		}
	}
	return out
}

// Objects returns the stack's bucket as the agent sees it.
func (s *Stack) Objects() *s3bucket.Bucket { return s3bucket.New(s.S3Client(), s.Bucket) }

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

// Object returns the bytes stored for path rel of the user's files, or nil when
// there are none.
func (s *Stack) Object(tb testing.TB, user, rel string) []byte {
	tb.Helper()
	_, body, err := s.Objects().Get(context.Background(), taskenv.UserPrefix(user)+objsync.FilesDir+rel)
	if errors.Is(err, objsync.ErrNotFound) {
		return nil
	}
	if err != nil {
		tb.Fatal(err)
	}
	defer body.Close()
	b, err := io.ReadAll(body)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// Marker returns the user's .last-sync marker, or nil when there is none.
func (s *Stack) Marker(tb testing.TB, user string) *objsync.Marker {
	tb.Helper()
	_, body, err := s.Objects().Get(context.Background(), objsync.MarkerKey(taskenv.UserPrefix(user)))
	if errors.Is(err, objsync.ErrNotFound) {
		return nil
	}
	if err != nil {
		tb.Fatal(err)
	}
	defer body.Close()
	var m objsync.Marker
	if err := json.NewDecoder(body).Decode(&m); err != nil {
		tb.Fatalf("marker of %s: %v", user, err)
	}
	return &m
}

// NotesSynced waits until the user's prefix holds n notes of the demo workload.
func (s *Stack) NotesSynced(tb testing.TB, user string, n int, timeout time.Duration) {
	tb.Helper()
	prefix := taskenv.UserPrefix(user) + objsync.FilesDir + "notes/"
	var keys []string
	Eventually(tb, timeout, func() bool {
		keys = s.Keys(tb, prefix)
		return len(keys) == n
	}, func() string { return fmt.Sprintf("%s: %d notes in the bucket, want %d", user, len(keys), n) })
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

// ExactCapacity waits until the capacity counter and what holds a slot (state.Store.
// CountSlots: the records that hold one — a lease, or a STOPPED record whose task's
// stop event has not come yet — and the warm pool's items) both equal want, and fails
// the test if they do not within CapacityWait: a stopped task's slot comes back when
// its stop event has been handled.
func (s *Stack) ExactCapacity(tb testing.TB, want int) {
	tb.Helper()
	var c, held int
	Eventually(tb, CapacityWait, func() bool {
		var err error
		if held, err = s.Store.CountSlots(context.Background()); err != nil {
			tb.Fatal(err)
		}
		c = s.Capacity(tb)
		return c == want && held == want
	}, func() string {
		return fmt.Sprintf("capacity counter %d, records and pool items holding a slot %d; want %d", c, held, want)
	})
}

// Pool returns the warm pool's items.
func (s *Stack) Pool(tb testing.TB) []state.PoolTask {
	tb.Helper()
	p, err := s.Store.PoolTasks(context.Background())
	if err != nil {
		tb.Fatal(err)
	}
	return p
}

// WaitPool waits until the warm pool has n tasks waiting to be claimed (and none
// launching), and returns them.
func (s *Stack) WaitPool(tb testing.TB, n int, timeout time.Duration) []state.PoolTask {
	tb.Helper()
	var waiting, launching []state.PoolTask
	Eventually(tb, timeout, func() bool {
		waiting, launching = nil, nil
		for _, p := range s.Pool(tb) {
			switch p.State {
			case state.PoolWaiting:
				waiting = append(waiting, p)
			case state.PoolLaunching:
				launching = append(launching, p)
			}
		}
		return len(waiting) == n && len(launching) == 0
	}, func() string {
		return fmt.Sprintf("pool: %d waiting, %d launching; want %d waiting", len(waiting), len(launching), n)
	})
	return waiting
}

// CapacityWait bounds ExactCapacity's wait for the task events in flight.
const CapacityWait = 30 * time.Second

// TableKeys returns the key ("pk/sk") of every item in the table.
func (s *Stack) TableKeys(tb testing.TB) map[string]bool {
	tb.Helper()
	keys := map[string]bool{}
	for _, it := range scan(tb, dynamodb.NewFromConfig(s.AWS), s.Table) {
		pk, _ := it[state.AttrPK].(*types.AttributeValueMemberS)
		sk, _ := it[state.AttrSK].(*types.AttributeValueMemberS)
		if pk != nil && sk != nil {
			keys[pk.Value+"/"+sk.Value] = true
		}
	}
	return keys
}
