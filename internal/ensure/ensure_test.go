package ensure_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/service/ecs"

	"github.com/sandgate/sandgate/infra/local/dynamodblocal"
	"github.com/sandgate/sandgate/infra/local/ecslocal"
	"github.com/sandgate/sandgate/infra/local/testkit"
	"github.com/sandgate/sandgate/internal/config"
	"github.com/sandgate/sandgate/internal/ensure"
	"github.com/sandgate/sandgate/internal/frames"
	"github.com/sandgate/sandgate/internal/launcher"
	"github.com/sandgate/sandgate/internal/logging"
	"github.com/sandgate/sandgate/internal/metrics"
	"github.com/sandgate/sandgate/internal/state"
	"github.com/sandgate/sandgate/internal/taskenv"
)

func TestMain(m *testing.M) { os.Exit(dynamodblocal.RunTests(m)) }

type env struct {
	db    *testkit.DB
	store *state.Store
	ecs   *testkit.ECS
	ens   *ensure.Ensurer
	logs  *testkit.Logs
}

func newEnv(t *testing.T, configure ...func(*ecslocal.Server)) *env {
	t.Helper()
	logs := &testkit.Logs{}
	db := testkit.NewDB(t)
	store := db.Store()
	e := testkit.StartECS(t, logs.Logger(), configure...)
	return &env{
		db: db, store: store, ecs: e, logs: logs,
		ens: &ensure.Ensurer{Store: store, Launcher: e.Launcher(logs.Logger(), db.Table, "http://127.0.0.1:1/test"), Log: logs.Logger()},
	}
}

func (e *env) get(t *testing.T, user string) *state.Sandbox {
	t.Helper()
	sb, err := e.store.Get(context.Background(), user)
	if err != nil {
		t.Fatal(err)
	}
	return sb
}

func (e *env) capacity(t *testing.T) int {
	t.Helper()
	n, err := e.store.Capacity(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestEnsurer_Ensure_StartsSandbox(t *testing.T) {
	e := newEnv(t)
	res, err := e.ens.Ensure(context.Background(), "user_a")
	if err != nil {
		t.Fatal(err)
	}
	if !res.Started || res.State() != state.Starting || res.Sandbox.TaskARN == "" || res.Sandbox.Generation != 1 {
		t.Fatalf("result = %+v, sandbox %+v", res, res.Sandbox)
	}
	sb := e.get(t, "user_a")
	if sb.State != state.Starting || sb.TaskARN != res.Sandbox.TaskARN {
		t.Fatalf("record = %+v", sb)
	}
	runs := e.ecs.RunTasks()
	if len(runs) != 1 {
		t.Fatalf("%d RunTask calls", len(runs))
	}
	// The lease token is the idempotency token, and the task learns whose it is.
	env := testkit.TaskEnv(runs[0])
	if *runs[0].ClientToken != sb.LeaseToken || env[taskenv.LeaseToken] != sb.LeaseToken ||
		env[taskenv.UserID] != "user_a" || env[taskenv.Prefix] != "users/user_a/" || env[taskenv.Generation] != "1" {
		t.Fatalf("RunTask env = %v", env)
	}
	if e.capacity(t) != 1 {
		t.Fatalf("capacity = %d", e.capacity(t))
	}
	// The start is logged once, with the user, the task and the generation; no line
	// carries the lease token.
	if starts := e.logs.With(t, "generation", 1.0); strings.Contains(e.logs.String(), sb.LeaseToken) || len(starts) != 1 ||
		starts[0][logging.UserID] != "user_a" || starts[0][logging.TaskARN] != sb.TaskARN {
		t.Fatalf("logs: %s", e.logs.String())
	}
}

// Fifty concurrent ensures of one user start exactly one task; the losers see the
// winner's start under way.
func TestEnsurer_Ensure_ConcurrentStartsOneTask(t *testing.T) {
	e := newEnv(t)
	const n = 50
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		started int
		errs    []error
	)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := e.ens.Ensure(context.Background(), "user_a")
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
				return
			}
			if res.Started {
				started++
			} else if res.State() != state.Starting {
				errs = append(errs, fmt.Errorf("loser saw %s", res.State()))
			}
		}()
	}
	wg.Wait()
	if len(errs) > 0 {
		t.Fatal(errors.Join(errs...))
	}
	if started != 1 || len(e.ecs.RunTasks()) != 1 || e.capacity(t) != 1 {
		t.Fatalf("started %d, RunTask %d, capacity %d", started, len(e.ecs.RunTasks()), e.capacity(t))
	}
}

// Two users get two sandboxes, each with its own prefix.
func TestEnsurer_Ensure_TwoUsersSeparatePrefixes(t *testing.T) {
	e := newEnv(t)
	var wg sync.WaitGroup
	for _, u := range []string{"user_a", "user_b"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if res, err := e.ens.Ensure(context.Background(), u); err != nil || !res.Started {
				t.Errorf("%s: %+v, %v", u, res, err)
			}
		}()
	}
	wg.Wait()
	prefixes := map[string]string{}
	for _, r := range e.ecs.RunTasks() {
		env := testkit.TaskEnv(r)
		prefixes[env[taskenv.UserID]] = env[taskenv.Prefix]
	}
	if len(prefixes) != 2 || prefixes["user_a"] != "users/user_a/" || prefixes["user_b"] != "users/user_b/" {
		t.Fatalf("prefixes = %v", prefixes)
	}
	if e.get(t, "user_a").TaskARN == e.get(t, "user_b").TaskARN {
		t.Fatal("two users share a task")
	}
}

// A live sandbox is reused whatever its state, with one read and no launch.
func TestEnsurer_Ensure_ReusesLiveSandbox(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	l, err := e.store.Acquire(ctx, "user_a")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.store.MarkReady(ctx, l, "http://127.0.0.1:9", "gw"); err != nil {
		t.Fatal(err)
	}
	e.db.Calls.Reset()
	res, err := e.ens.Ensure(ctx, "user_a")
	if err != nil || res.Started || res.State() != state.Running || res.Sandbox.Endpoint != "http://127.0.0.1:9" {
		t.Fatalf("RUNNING: %+v, %v", res, err)
	}
	if e.db.Calls.Calls("DynamoDB", "") != 1 || e.db.Writes() != 0 {
		t.Fatalf("DynamoDB calls %v", e.db.Calls.Snapshot())
	}
	if err := e.store.MarkStopping(ctx, l); err != nil {
		t.Fatal(err)
	}
	if res, err := e.ens.Ensure(ctx, "user_a"); err != nil || res.Started || res.State() != state.Stopping {
		t.Fatalf("STOPPING: %+v, %v", res, err)
	}
	if len(e.ecs.RunTasks()) != 0 {
		t.Fatalf("%d RunTask calls for a live sandbox", len(e.ecs.RunTasks()))
	}
}

// A sandbox whose lease expired is taken over: a new generation and a new task, and
// the dead one's slot is reused, not doubled.
func TestEnsurer_Ensure_TakesOverDeadSandbox(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	first, err := e.ens.Ensure(ctx, "user_a")
	if err != nil {
		t.Fatal(err)
	}
	e.db.Clock.Advance(state.DefaultStartTTL)
	res, err := e.ens.Ensure(ctx, "user_a")
	if err != nil || !res.Started || res.Sandbox.Generation != first.Sandbox.Generation+1 || res.Sandbox.TaskARN == first.Sandbox.TaskARN {
		t.Fatalf("takeover: %+v, %v", res.Sandbox, err)
	}
	if len(e.ecs.RunTasks()) != 2 || e.capacity(t) != 1 {
		t.Fatalf("RunTask %d, capacity %d", len(e.ecs.RunTasks()), e.capacity(t))
	}
}

// stopSpy records the launcher's StopTask calls, and can fail them.
type stopSpy struct {
	*launcher.Launcher
	mu    sync.Mutex
	stops []string // "arn reason"
	fail  error
}

func (s *stopSpy) Stop(ctx context.Context, arn, reason string) error {
	s.mu.Lock()
	s.stops = append(s.stops, arn+" "+reason)
	fail := s.fail
	s.mu.Unlock()
	if fail != nil {
		return fail
	}
	return s.Launcher.Stop(ctx, arn, reason)
}

func (s *stopSpy) calls() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.stops...)
}

func (e *env) spyStops() *stopSpy {
	spy := &stopSpy{Launcher: e.ens.Launcher.(*launcher.Launcher)}
	e.ens.Launcher = spy
	return spy
}

// A takeover of a dead holder's lease asks ECS to stop the task its record named,
// with the reason, once the new lease is won and the new task launched; a start that
// replaces no live holder stops nothing.
func TestEnsurer_Ensure_TakeoverStopsTheReplacedTask(t *testing.T) {
	e := newEnv(t)
	spy := e.spyStops()
	ctx := context.Background()
	first, err := e.ens.Ensure(ctx, "user_a")
	if err != nil {
		t.Fatal(err)
	}
	if len(spy.calls()) != 0 {
		t.Fatalf("a fresh start stopped %v", spy.calls())
	}
	e.db.Clock.Advance(state.DefaultStartTTL)
	res, err := e.ens.Ensure(ctx, "user_a")
	if err != nil || !res.Started || res.Sandbox.Generation != 2 {
		t.Fatalf("takeover: %+v, %v", res, err)
	}
	want := first.Sandbox.TaskARN + " sandgate: lease taken over by generation 2"
	if got := spy.calls(); len(got) != 1 || got[0] != want {
		t.Fatalf("StopTask calls %q, want [%q]", got, want)
	}
	out, err := e.ecs.Client.DescribeTasks(ctx, &ecs.DescribeTasksInput{Cluster: aws.String(testkit.Cluster), Tasks: []string{first.Sandbox.TaskARN, res.Sandbox.TaskARN}})
	if err != nil || len(out.Tasks) != 2 {
		t.Fatalf("DescribeTasks: %+v, %v", out, err)
	}
	for _, task := range out.Tasks {
		switch aws.ToString(task.TaskArn) {
		case first.Sandbox.TaskARN:
			if aws.ToString(task.DesiredStatus) != "STOPPED" || aws.ToString(task.StoppedReason) != "sandgate: lease taken over by generation 2" {
				t.Errorf("replaced task: desired %s, reason %q", aws.ToString(task.DesiredStatus), aws.ToString(task.StoppedReason))
			}
		default:
			if aws.ToString(task.DesiredStatus) != "RUNNING" {
				t.Errorf("new task: desired %s", aws.ToString(task.DesiredStatus))
			}
		}
	}
	if lines := e.logs.With(t, "msg", "stopped the replaced sandbox's task"); len(lines) != 1 ||
		lines[0][logging.TaskARN] != first.Sandbox.TaskARN || lines[0]["generation"] != 1.0 || lines[0][logging.UserID] != "user_a" {
		t.Fatalf("log of the stop: %v", lines)
	}

	// A start after a stop replaces no holder.
	if err := e.store.Stop(ctx, state.Lease{UserID: "user_a", Token: e.get(t, "user_a").LeaseToken, Generation: 2}); err != nil {
		t.Fatal(err)
	}
	if res, err := e.ens.Ensure(ctx, "user_a"); err != nil || !res.Started {
		t.Fatalf("start after the stop: %+v, %v", res, err)
	}
	if got := spy.calls(); len(got) != 1 {
		t.Fatalf("a start after a stop stopped %q", got[1:])
	}
}

// The stop is best effort: ECS refusing it (the role without ecs:StopTask, an outage)
// is logged and the start stands; a launch that fails still stops the replaced task,
// whose lease is gone either way.
func TestEnsurer_Ensure_ReplacedTaskStopIsBestEffort(t *testing.T) {
	e := newEnv(t)
	spy := e.spyStops()
	ctx := context.Background()
	first, err := e.ens.Ensure(ctx, "user_a")
	if err != nil {
		t.Fatal(err)
	}
	e.db.Clock.Advance(state.DefaultStartTTL)
	spy.fail = errors.New("AccessDeniedException: not authorized to perform ecs:StopTask")
	res, err := e.ens.Ensure(ctx, "user_a")
	if err != nil || !res.Started {
		t.Fatalf("takeover with a refused stop: %+v, %v", res, err)
	}
	if lines := e.logs.With(t, "msg", "stop the replaced sandbox's task failed"); len(lines) != 1 ||
		lines[0]["level"] != "WARN" || lines[0][logging.TaskARN] != first.Sandbox.TaskARN {
		t.Fatalf("refused stop not logged as a warning: %v", lines)
	}

	spy.fail = nil
	e.db.Clock.Advance(state.DefaultStartTTL)
	e.ecs.Server.FailRunTask(ecslocal.ServerException, 1)
	if _, err := e.ens.Ensure(ctx, "user_a"); !errors.Is(err, ensure.ErrStartFailed) {
		t.Fatalf("failed launch: %v", err)
	}
	if got := spy.calls(); len(got) != 2 || !strings.HasPrefix(got[1], res.Sandbox.TaskARN+" ") {
		t.Fatalf("StopTask calls %q, want the second generation's task stopped after the failed launch", got)
	}
}

// A launch ECS refuses releases the lease and the slot at once, so the next attempt
// starts without waiting for the start lease to expire.
func TestEnsurer_Ensure_LaunchFailureReleases(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.ecs.Server.FailRunTask(ecslocal.ServerException, 1)
	_, err := e.ens.Ensure(ctx, "user_a")
	if !errors.Is(err, ensure.ErrStartFailed) || ensure.Reason(err) != frames.ReasonStartFailed || ensure.Metric(err) != metrics.StartFailures {
		t.Fatalf("Ensure = %v", err)
	}
	sb := e.get(t, "user_a")
	if sb.State != state.Stopped || !strings.HasPrefix(sb.Reason, "start failed") || e.capacity(t) != 0 {
		t.Fatalf("after failure: %+v, capacity %d", sb, e.capacity(t))
	}
	if res, err := e.ens.Ensure(ctx, "user_a"); err != nil || !res.Started || res.Sandbox.Generation != 2 {
		t.Fatalf("retry: %+v, %v", res, err)
	}
}

// A launch that runs out of the caller's time (RunTask throttled on every retry)
// still gives the lease and the slot back: the launch keeps a reserve of the deadline
// for the release.
func TestEnsurer_Ensure_LaunchOutOfTimeReleases(t *testing.T) {
	e := newEnv(t)
	e.ecs.Server.FailRunTask(ecslocal.ThrottlingException, -1)
	defer e.ecs.Server.ClearFaults()
	// A client that keeps retrying the throttled RunTask until the context ends, as the
	// SDK's retryer does under sustained throttling.
	patient := e.ecs.Client.Options()
	patient.Retryer = retry.NewStandard(func(o *retry.StandardOptions) {
		o.MaxAttempts = 1000
		o.Backoff = retry.BackoffDelayerFunc(func(int, error) (time.Duration, error) { return 20 * time.Millisecond, nil })
		o.RateLimiter = ratelimit.None
	})
	e.ens.Launcher = launcher.New(ecs.New(patient), e.ecs.LauncherConfig(e.db.Table, "http://127.0.0.1:1/test"), e.logs.Logger())
	// A reserve no stall of a loaded machine uses up, so the release always lands; the
	// launch gets the second before it, then runs out of time.
	e.ens.ReleaseReserve = 30 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), e.ens.ReleaseReserve+time.Second)
	defer cancel()
	if _, err := e.ens.Ensure(ctx, "user_a"); !errors.Is(err, ensure.ErrStartFailed) {
		t.Fatalf("Ensure = %v", err)
	}
	if sb := e.get(t, "user_a"); sb.State != state.Stopped || e.capacity(t) != 0 {
		t.Fatalf("after running out of time: %+v, capacity %d", sb, e.capacity(t))
	}
}

// Fargate without capacity is a capacity refusal, not a start failure; the lease goes back.
func TestEnsurer_Ensure_FargateCapacity(t *testing.T) {
	e := newEnv(t)
	e.ecs.Server.RefuseCapacity(1)
	_, err := e.ens.Ensure(context.Background(), "user_a")
	if !errors.Is(err, ensure.ErrCapacity) || ensure.Reason(err) != frames.ReasonCapacity || ensure.Metric(err) != metrics.CapacityRefusals {
		t.Fatalf("Ensure = %v", err)
	}
	if sb := e.get(t, "user_a"); sb.State != state.Stopped || e.capacity(t) != 0 {
		t.Fatalf("after refusal: %+v, capacity %d", sb, e.capacity(t))
	}
}

// MaxSandboxes live: the next user is refused before any launch; a user already
// holding a sandbox still reuses it.
func TestEnsurer_Ensure_MaxSandboxes(t *testing.T) {
	e := newEnv(t)
	e.store.MaxSandboxes = 1
	ctx := context.Background()
	if _, err := e.ens.Ensure(ctx, "user_a"); err != nil {
		t.Fatal(err)
	}
	_, err := e.ens.Ensure(ctx, "user_b")
	var ce *state.CapacityError
	if !errors.Is(err, ensure.ErrCapacity) || !errors.As(err, &ce) || ce.Live != 1 || ce.Max != 1 {
		t.Fatalf("second user: %v", err)
	}
	if _, err := e.store.Get(ctx, "user_b"); !errors.Is(err, state.ErrNotFound) {
		t.Fatalf("refused user has a record: %v", err)
	}
	if res, err := e.ens.Ensure(ctx, "user_a"); err != nil || res.State() != state.Starting {
		t.Fatalf("holder: %+v, %v", res, err)
	}
	if len(e.ecs.RunTasks()) != 1 {
		t.Fatalf("%d RunTask calls", len(e.ecs.RunTasks()))
	}
}

// While cleanup holds the purge lock, nothing starts.
func TestEnsurer_Ensure_Purging(t *testing.T) {
	e := newEnv(t)
	if _, err := e.store.AcquirePurge(context.Background(), "user_a"); err != nil {
		t.Fatal(err)
	}
	_, err := e.ens.Ensure(context.Background(), "user_a")
	if !errors.Is(err, ensure.ErrPurging) || ensure.Reason(err) != frames.ReasonPurging || ensure.Metric(err) != "" {
		t.Fatalf("Ensure = %v", err)
	}
	if len(e.ecs.RunTasks()) != 0 {
		t.Fatal("a task was launched during a purge")
	}
}

func TestEnsurer_Ensure_BadInput(t *testing.T) {
	e := newEnv(t)
	_, err := e.ens.Ensure(context.Background(), "")
	if !errors.Is(err, state.ErrInvalid) || ensure.Reason(err) != frames.ReasonUnavailable {
		t.Fatalf("Ensure(\"\") = %v", err)
	}
	if items := e.db.Items(t); len(items) != 0 || len(e.ecs.RunTasks()) != 0 {
		t.Fatalf("bad input wrote %d items, ran %d tasks", len(items), len(e.ecs.RunTasks()))
	}
}

// templateEnv is the ensure set as template.yaml sets it.
func templateEnv() map[string]string {
	return map[string]string{
		"TABLE_NAME": "sandgate-Table", "ECS_CLUSTER": "sandgate-Cluster", "TASK_DEFINITION": "arn:aws:ecs:eu-west-1:1:task-definition/s:3",
		"SANDBOX_CONTAINER": "agent", "SUBNET_IDS": "subnet-0a,subnet-0b", "SECURITY_GROUP_IDS": "sg-0a",
		"CAPACITY_PROVIDER": "FARGATE_SPOT", "MAX_SANDBOXES": "50", "LEASE_TTL": "60", "BUCKET": "b",
		"MANAGEMENT_ENDPOINT": "https://abc.execute-api.eu-west-1.amazonaws.com/prod",
	}
}

func TestLoadConfig_TemplateEnvironment(t *testing.T) {
	env := config.New(config.Map(templateEnv()))
	c := ensure.LoadConfig(env)
	if err := env.Err(); err != nil {
		t.Fatal(err)
	}
	l := c.Launcher
	if c.Table != "sandgate-Table" || l.Table != c.Table || l.Cluster != "sandgate-Cluster" || l.Container != "agent" ||
		fmt.Sprint(l.Subnets) != "[subnet-0a subnet-0b]" || fmt.Sprint(l.SecurityGroups) != "[sg-0a]" ||
		l.CapacityProvider != "FARGATE_SPOT" || l.Bucket != "b" || l.ManagementEndpoint == "" ||
		c.MaxSandboxes != 50 || c.LeaseTTL.Seconds() != 60 {
		t.Fatalf("config = %+v", c)
	}
	if err := l.Validate(); err != nil {
		t.Fatal(err)
	}
	s := c.NewStore(nil)
	if s.MaxSandboxes != 50 || s.LeaseTTL != c.LeaseTTL || s.Table() != "sandgate-Table" {
		t.Fatalf("store = %+v", s)
	}
	// Every optional variable has a default: leaving them all out is fine.
	m := templateEnv()
	for _, k := range ensure.Optional {
		delete(m, k)
	}
	env = config.New(config.Map(m))
	c = ensure.LoadConfig(env)
	if err := env.Err(); err != nil || c.MaxSandboxes != state.DefaultMaxSandboxes || c.LeaseTTL != state.DefaultLeaseTTL {
		t.Fatalf("defaults: %+v, %v", c, err)
	}
}

// Every mistake is reported at once, each naming its variable.
func TestLoadConfig_BadEnvironment(t *testing.T) {
	m := templateEnv()
	for _, k := range []string{"TABLE_NAME", "ECS_CLUSTER", "TASK_DEFINITION", "SANDBOX_CONTAINER", "SUBNET_IDS", "BUCKET", "MANAGEMENT_ENDPOINT"} {
		delete(m, k)
	}
	m["MAX_SANDBOXES"] = "0"
	m["LEASE_TTL"] = "5"
	m["CAPACITY_PROVIDER"] = "EC2"
	env := config.New(config.Map(m))
	ensure.LoadConfig(env)
	err := env.Err()
	if err == nil {
		t.Fatal("accepted")
	}
	for _, k := range []string{"TABLE_NAME", "ECS_CLUSTER", "TASK_DEFINITION", "SANDBOX_CONTAINER", "SUBNET_IDS", "BUCKET",
		"MANAGEMENT_ENDPOINT", "MAX_SANDBOXES", "LEASE_TTL", "CAPACITY_PROVIDER"} {
		if !strings.Contains(err.Error(), k) {
			t.Errorf("error does not name %s: %v", k, err)
		}
	}
}
