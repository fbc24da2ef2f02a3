package launcher

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ecs"
	"github.com/aws/aws-sdk-go-v2/service/ecs/types"
	"github.com/aws/smithy-go"

	"github.com/sandgate/sandgate/internal/logging"
	"github.com/sandgate/sandgate/internal/taskenv"
)

// DefaultStartedBy marks the tasks a Launcher starts.
const DefaultStartedBy = "sandgate"

// Errors. A *LaunchError carries ECS's own reason and matches one of these.
var (
	// ErrCapacity means Fargate had no capacity for the task; try again later.
	ErrCapacity = errors.New("no fargate capacity")
	// ErrLaunch means ECS refused the task for another reason.
	ErrLaunch = errors.New("task launch failed")
	// ErrNotFound means ECS knows no such task (stopped long ago, or never ran).
	ErrNotFound = errors.New("task not found")
)

// LaunchError is a RunTask failure as ECS reported it.
type LaunchError struct {
	Reason string // ECS's reason, e.g. "Capacity is unavailable at this time"
	Detail string
	ARN    string
	kind   error
}

func (e *LaunchError) Error() string {
	msg := "run task: " + e.Reason
	if e.Detail != "" {
		msg += " (" + e.Detail + ")"
	}
	return msg
}

// Unwrap lets errors.Is match ErrCapacity or ErrLaunch.
func (e *LaunchError) Unwrap() error { return e.kind }

// API is the part of the ECS client a Launcher uses.
type API interface {
	RunTask(ctx context.Context, in *ecs.RunTaskInput, optFns ...func(*ecs.Options)) (*ecs.RunTaskOutput, error)
	DescribeTasks(ctx context.Context, in *ecs.DescribeTasksInput, optFns ...func(*ecs.Options)) (*ecs.DescribeTasksOutput, error)
	StopTask(ctx context.Context, in *ecs.StopTaskInput, optFns ...func(*ecs.Options)) (*ecs.StopTaskOutput, error)
	ListTasks(ctx context.Context, in *ecs.ListTasksInput, optFns ...func(*ecs.Options)) (*ecs.ListTasksOutput, error)
}

// Config says where and how sandbox tasks run.
type Config struct {
	Cluster        string
	TaskDefinition string // family, family:revision or ARN
	Container      string // the agent's container name in the task definition
	Subnets        []string
	SecurityGroups []string
	AssignPublicIP bool
	// CapacityProvider is FARGATE or FARGATE_SPOT; empty means launch type FARGATE.
	CapacityProvider string
	// Environment every task receives in its overrides (table, bucket, management endpoint).
	Table, Bucket, ManagementEndpoint string
}

// Validate reports what is missing from c.
func (c Config) Validate() error {
	var errs []error
	for _, f := range []struct{ name, v string }{
		{"cluster", c.Cluster}, {"task definition", c.TaskDefinition}, {"container", c.Container},
		{"table", c.Table}, {"bucket", c.Bucket}, {"management endpoint", c.ManagementEndpoint},
	} {
		if f.v == "" {
			errs = append(errs, fmt.Errorf("launcher: %s is not configured", f.name))
		}
	}
	if len(c.Subnets) == 0 {
		errs = append(errs, errors.New("launcher: no subnets configured (awsvpc needs at least one)"))
	}
	switch c.CapacityProvider {
	case "", "FARGATE", "FARGATE_SPOT":
	default:
		errs = append(errs, fmt.Errorf("launcher: capacity provider %q is not FARGATE or FARGATE_SPOT", c.CapacityProvider))
	}
	return errors.Join(errs...)
}

// Launcher starts, finds and stops sandbox tasks. Throttled and server-side ECS errors
// are retried with jittered backoff by the SDK client's retryer (configure its attempts
// on the client); RunTask retries are safe because the lease token is the clientToken.
type Launcher struct {
	API    API
	Config Config
	Log    *slog.Logger

	// StartedBy marks every task this launcher starts (DefaultStartedBy).
	StartedBy string
}

// New returns a Launcher with the defaults.
func New(api API, cfg Config, log *slog.Logger) *Launcher {
	return &Launcher{API: api, Config: cfg, Log: log, StartedBy: DefaultStartedBy}
}

// Spec is one sandbox to launch.
type Spec struct {
	UserID     string
	LeaseToken string // becomes the clientToken, so a retried launch never starts a second task
	Generation int64
}

// Launch runs the sandbox task for spec and returns its ARN. RunTask is idempotent on the
// lease token: a retry after a lost response returns the same task. A user's launch
// that ECS throttles (RunTask's 20 calls a second, Fargate's launch rate) beyond the
// SDK's own retries is tried again with jittered backoff until ctx ends: the user is
// waiting, and the same token can start the task only once.
func (l *Launcher) Launch(ctx context.Context, spec Spec) (string, error) {
	in := l.runTaskInput(spec)
	arn, err := l.run(ctx, in, true)
	if err != nil {
		return "", err
	}
	l.Log.InfoContext(ctx, "task launched", logging.UserID, spec.UserID, logging.TaskARN, arn)
	return arn, nil
}

// LaunchPool runs a warm pool task, with no user, for pool item id (its clientToken
// too) and returns its ARN. It is not retried on throttling: the refill gives way to
// users' launches and tries later (ErrThrottled).
func (l *Launcher) LaunchPool(ctx context.Context, id string) (string, error) {
	in := l.baseInput(id, []types.KeyValuePair{kv(taskenv.PoolID, id)},
		[]types.Tag{{Key: aws.String(taskenv.TagPool), Value: aws.String(id)}})
	arn, err := l.run(ctx, in, false)
	if err != nil {
		return "", err
	}
	l.Log.InfoContext(ctx, "pool task launched", logPoolID, id, logging.TaskARN, arn)
	return arn, nil
}

// logPoolID is this package's log key for a pool task's id.
const logPoolID = "poolId"

// ErrThrottled: ECS refused the call for its rate (ThrottlingException) after the
// SDK's retries.
var ErrThrottled = errors.New("run task throttled")

// run calls RunTask, again after throttling when patient, and reads its answer.
func (l *Launcher) run(ctx context.Context, in *ecs.RunTaskInput, patient bool) (string, error) {
	delay := 200 * time.Millisecond
	var (
		out *ecs.RunTaskOutput
		err error
	)
	for {
		out, err = l.API.RunTask(ctx, in)
		if err == nil || !isThrottling(err) {
			break
		}
		err = fmt.Errorf("%w: %w", ErrThrottled, err)
		if !patient {
			return "", fmt.Errorf("run task: %w", err)
		}
		wait := delay/2 + rand.N(delay/2+1)
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) < wait {
			return "", fmt.Errorf("run task: %w", err)
		}
		l.Log.WarnContext(ctx, "run task throttled; trying again", logging.Error, err.Error())
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return "", fmt.Errorf("run task: %w", errors.Join(err, ctx.Err()))
		case <-t.C:
		}
		delay = min(2*delay, 2*time.Second)
	}
	if err != nil {
		return "", fmt.Errorf("run task: %w", err)
	}
	if len(out.Failures) > 0 {
		f := out.Failures[0]
		le := &LaunchError{Reason: aws.ToString(f.Reason), Detail: aws.ToString(f.Detail), ARN: aws.ToString(f.Arn), kind: ErrLaunch}
		if isCapacity(le.Reason) {
			le.kind = ErrCapacity
		}
		return "", le
	}
	if len(out.Tasks) == 0 || out.Tasks[0].TaskArn == nil {
		return "", &LaunchError{Reason: "RunTask returned neither a task nor a failure", kind: ErrLaunch}
	}
	return aws.ToString(out.Tasks[0].TaskArn), nil
}

// isThrottling reports ECS's refusal for its rate.
func isThrottling(err error) bool {
	var ae smithy.APIError
	return errors.As(err, &ae) && ae.ErrorCode() == "ThrottlingException"
}

func (l *Launcher) runTaskInput(spec Spec) *ecs.RunTaskInput {
	return l.baseInput(spec.LeaseToken, []types.KeyValuePair{
		kv(taskenv.UserID, spec.UserID),
		kv(taskenv.LeaseToken, spec.LeaseToken),
		kv(taskenv.Generation, strconv.FormatInt(spec.Generation, 10)),
		kv(taskenv.Prefix, taskenv.UserPrefix(spec.UserID)),
	}, []types.Tag{
		{Key: aws.String(taskenv.TagUserID), Value: aws.String(spec.UserID)},
		{Key: aws.String(taskenv.TagLease), Value: aws.String(strconv.FormatInt(spec.Generation, 10))},
	})
}

// baseInput is a sandbox task's RunTask input: clientToken token, the overrides env
// and what every task gets (table, bucket, management endpoint), tagged with tags.
func (l *Launcher) baseInput(token string, env []types.KeyValuePair, tags []types.Tag) *ecs.RunTaskInput {
	env = append(env,
		kv(taskenv.Table, l.Config.Table),
		kv(taskenv.Bucket, l.Config.Bucket),
		kv(taskenv.ManagementEndpoint, l.Config.ManagementEndpoint),
	)
	public := types.AssignPublicIpDisabled
	if l.Config.AssignPublicIP {
		public = types.AssignPublicIpEnabled
	}
	in := &ecs.RunTaskInput{
		Cluster:        aws.String(l.Config.Cluster),
		TaskDefinition: aws.String(l.Config.TaskDefinition),
		ClientToken:    aws.String(token),
		Count:          aws.Int32(1),
		StartedBy:      aws.String(l.startedBy()),
		NetworkConfiguration: &types.NetworkConfiguration{AwsvpcConfiguration: &types.AwsVpcConfiguration{
			Subnets:        l.Config.Subnets,
			SecurityGroups: l.Config.SecurityGroups,
			AssignPublicIp: public,
		}},
		Overrides: &types.TaskOverride{ContainerOverrides: []types.ContainerOverride{{
			Name:        aws.String(l.Config.Container),
			Environment: env,
		}}},
		Tags:          tags,
		PropagateTags: types.PropagateTagsTaskDefinition,
	}
	if l.Config.CapacityProvider == "" {
		in.LaunchType = types.LaunchTypeFargate
	} else {
		in.CapacityProviderStrategy = []types.CapacityProviderStrategyItem{
			{CapacityProvider: aws.String(l.Config.CapacityProvider), Weight: 1},
		}
	}
	return in
}

// Task is what the control plane needs to know of one task.
type Task struct {
	ARN    string
	UserID string // from the task's tags; empty when DescribeTasks did not include them
	// Generation is the lease generation the task was started for, from its tags; 0
	// when they do not say.
	Generation int64
	// PoolID is a warm pool task's pool item (its tag); empty for a user's task.
	PoolID        string
	LastStatus    string // PROVISIONING, PENDING, ACTIVATING, RUNNING, …, STOPPED
	DesiredStatus string
	PrivateIP     string // the awsvpc ENI address, once attached
	StopCode      string
	StoppedReason string
	StartedBy     string
	CreatedAt     time.Time
}

// Stopped reports whether the task has stopped or is on its way down.
func (t Task) Stopped() bool { return t.LastStatus == "STOPPED" || t.DesiredStatus == "STOPPED" }

// Describe returns one task.
func (l *Launcher) Describe(ctx context.Context, arn string) (Task, error) {
	tasks, err := l.describe(ctx, []string{arn})
	if err != nil {
		return Task{}, err
	}
	if len(tasks) == 0 {
		return Task{}, fmt.Errorf("describe task %s: %w", arn, ErrNotFound)
	}
	return tasks[0], nil
}

func (l *Launcher) describe(ctx context.Context, arns []string) ([]Task, error) {
	out, err := l.API.DescribeTasks(ctx, &ecs.DescribeTasksInput{
		Cluster: aws.String(l.Config.Cluster),
		Tasks:   arns,
		Include: []types.TaskField{types.TaskFieldTags},
	})
	if err != nil {
		return nil, fmt.Errorf("describe tasks: %w", err)
	}
	tasks := make([]Task, 0, len(out.Tasks))
	for _, t := range out.Tasks {
		tasks = append(tasks, toTask(t))
	}
	return tasks, nil
}

// Stop asks ECS to stop the task: SIGTERM, then SIGKILL after the task's stop timeout.
// Stopping a task that is already gone is not an error.
func (l *Launcher) Stop(ctx context.Context, arn, reason string) error {
	_, err := l.API.StopTask(ctx, &ecs.StopTaskInput{
		Cluster: aws.String(l.Config.Cluster),
		Task:    aws.String(arn),
		Reason:  aws.String(truncate(reason, 255)),
	})
	var inv *types.InvalidParameterException
	if errors.As(err, &inv) && strings.Contains(strings.ToLower(inv.ErrorMessage()), "not found") {
		return nil
	}
	if err != nil {
		return fmt.Errorf("stop task %s: %w", arn, err)
	}
	return nil
}

// List returns every task this launcher started that ECS still reports, with tags, for
// reconciliation (orphans are tasks whose user has no live lease naming them).
func (l *Launcher) List(ctx context.Context) ([]Task, error) {
	return l.list(ctx, "", "list tasks")
}

// list pages through ListTasks of this launcher's tasks with the desired status (empty:
// ECS's default, RUNNING) and describes them, with tags.
func (l *Launcher) list(ctx context.Context, desired types.DesiredStatus, what string) ([]Task, error) {
	var all []Task
	var next *string
	for {
		out, err := l.API.ListTasks(ctx, &ecs.ListTasksInput{
			Cluster:       aws.String(l.Config.Cluster),
			StartedBy:     aws.String(l.startedBy()),
			DesiredStatus: desired,
			NextToken:     next,
		})
		if err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		// DescribeTasks takes at most 100 tasks; ListTasks pages hold up to 100.
		for i := 0; i < len(out.TaskArns); i += 100 {
			tasks, err := l.describe(ctx, out.TaskArns[i:min(i+100, len(out.TaskArns))])
			if err != nil {
				return nil, err
			}
			all = append(all, tasks...)
		}
		if next = out.NextToken; next == nil {
			return all, nil
		}
	}
}

func (l *Launcher) startedBy() string {
	if l.StartedBy == "" {
		return DefaultStartedBy
	}
	return l.StartedBy
}

// isCapacity recognises Fargate's capacity failures, e.g. "Capacity is unavailable at
// this time" or RESOURCE:* reasons.
func isCapacity(reason string) bool {
	r := strings.ToLower(reason)
	return strings.Contains(r, "capacity") || strings.HasPrefix(r, "resource:")
}

func toTask(t types.Task) Task {
	out := Task{
		ARN:           aws.ToString(t.TaskArn),
		LastStatus:    aws.ToString(t.LastStatus),
		DesiredStatus: aws.ToString(t.DesiredStatus),
		StopCode:      string(t.StopCode),
		StoppedReason: aws.ToString(t.StoppedReason),
		StartedBy:     aws.ToString(t.StartedBy),
		CreatedAt:     aws.ToTime(t.CreatedAt),
	}
	for _, tag := range t.Tags {
		switch aws.ToString(tag.Key) {
		case taskenv.TagUserID:
			out.UserID = aws.ToString(tag.Value)
		case taskenv.TagLease:
			out.Generation, _ = strconv.ParseInt(aws.ToString(tag.Value), 10, 64)
		case taskenv.TagPool:
			out.PoolID = aws.ToString(tag.Value)
		}
	}
	for _, a := range t.Attachments {
		for _, d := range a.Details {
			if aws.ToString(d.Name) == "privateIPv4Address" {
				out.PrivateIP = aws.ToString(d.Value)
			}
		}
	}
	return out
}

func kv(k, v string) types.KeyValuePair {
	return types.KeyValuePair{Name: aws.String(k), Value: aws.String(v)}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}
