package undeploy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ecs"
	ecstypes "github.com/aws/aws-sdk-go-v2/service/ecs/types"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	"github.com/aws/smithy-go"
)

// Defaults of an Undeployer.
const (
	// DefaultTimeout bounds the wait for the sandboxes to stop: the task definition's
	// StopTimeout (120 s between SIGTERM and SIGKILL) for the final syncs, and Fargate's
	// own teardown, several times over.
	DefaultTimeout = 10 * time.Minute
	// DefaultPoll is the wait between two looks at the cluster's tasks.
	DefaultPoll = 3 * time.Second
)

// StopReason is the reason StopTask records on each sandbox (ECS keeps at most 255
// characters).
const StopReason = "sandgate undeploy: the stack is being deleted"

// ECSAPI is what stopping the sandboxes calls.
type ECSAPI interface {
	ListTasks(context.Context, *ecs.ListTasksInput, ...func(*ecs.Options)) (*ecs.ListTasksOutput, error)
	StopTask(context.Context, *ecs.StopTaskInput, ...func(*ecs.Options)) (*ecs.StopTaskOutput, error)
	DescribeTasks(context.Context, *ecs.DescribeTasksInput, ...func(*ecs.Options)) (*ecs.DescribeTasksOutput, error)
}

// LambdaAPI is what holding the starts calls.
type LambdaAPI interface {
	GetFunctionConcurrency(context.Context, *lambda.GetFunctionConcurrencyInput, ...func(*lambda.Options)) (*lambda.GetFunctionConcurrencyOutput, error)
	PutFunctionConcurrency(context.Context, *lambda.PutFunctionConcurrencyInput, ...func(*lambda.Options)) (*lambda.PutFunctionConcurrencyOutput, error)
	DeleteFunctionConcurrency(context.Context, *lambda.DeleteFunctionConcurrencyInput, ...func(*lambda.Options)) (*lambda.DeleteFunctionConcurrencyOutput, error)
}

// ErrStillRunning: some sandboxes had not stopped when the wait ran out.
var ErrStillRunning = errors.New("sandboxes still running")

// Undeployer takes one stack's sandboxes down.
type Undeployer struct {
	Target Target
	ECS    ECSAPI
	Lambda LambdaAPI
	// Out receives the progress, one line per step.
	Out io.Writer
	// Timeout bounds the wait for the sandboxes to stop (DefaultTimeout when zero);
	// Poll is the wait between two looks (DefaultPoll when zero).
	Timeout, Poll time.Duration
}

// Hold is the start functions' reserved concurrency before HoldStarts set it to 0.
type Hold struct {
	u *Undeployer
	// before holds each throttled function's previous reserved concurrency, nil when it
	// had none; in the order they were throttled.
	names  []string
	before map[string]*int32
}

// HoldStarts refuses new sandboxes: it sets the reserved concurrency of every start
// function to 0, which throttles all their invocations
// (https://docs.aws.amazon.com/lambda/latest/dg/configuration-concurrency.html), so no
// connect, frame or prewarm can start a task. The Hold remembers the previous values;
// on an error the functions already throttled are released again.
func (u *Undeployer) HoldStarts(ctx context.Context) (*Hold, error) {
	h := &Hold{u: u, before: map[string]*int32{}}
	ids := slices.Sorted(func(yield func(string) bool) {
		for id := range u.Target.StartFunctions {
			if !yield(id) {
				return
			}
		}
	})
	zero := int32(0)
	for _, id := range ids {
		name := u.Target.StartFunctions[id]
		cur, err := u.Lambda.GetFunctionConcurrency(ctx, &lambda.GetFunctionConcurrencyInput{FunctionName: aws.String(name)})
		if err != nil {
			return nil, errors.Join(fmt.Errorf("read the reserved concurrency of %s (%s): %w", id, name, err), h.Release(ctx))
		}
		if _, err := u.Lambda.PutFunctionConcurrency(ctx, &lambda.PutFunctionConcurrencyInput{
			FunctionName: aws.String(name), ReservedConcurrentExecutions: &zero}); err != nil {
			return nil, errors.Join(fmt.Errorf("throttle %s (%s): %w", id, name, err), h.Release(ctx))
		}
		h.names = append(h.names, name)
		h.before[name] = cur.ReservedConcurrentExecutions
		u.printf("  %s (%s): reserved concurrency 0, every invocation throttled\n", id, name)
	}
	return h, nil
}

// Functions returns the names of the functions the hold throttles.
func (h *Hold) Functions() []string { return append([]string(nil), h.names...) }

// Release gives the throttled functions their previous reserved concurrency back (none
// where they had none).
func (h *Hold) Release(ctx context.Context) error {
	var errs []error
	for _, name := range h.names {
		prev := h.before[name]
		var err error
		if prev == nil {
			_, err = h.u.Lambda.DeleteFunctionConcurrency(ctx, &lambda.DeleteFunctionConcurrencyInput{FunctionName: aws.String(name)})
		} else {
			_, err = h.u.Lambda.PutFunctionConcurrency(ctx, &lambda.PutFunctionConcurrencyInput{FunctionName: aws.String(name), ReservedConcurrentExecutions: prev})
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("restore the reserved concurrency of %s: %w", name, err))
			continue
		}
		h.u.printf("  %s takes invocations again\n", name)
	}
	h.names = nil
	return errors.Join(errs...)
}

// StopSandboxes stops every task of the cluster (StopTask: SIGTERM, on which the agent
// syncs its user's files and releases its lease) and waits until ECS reports each
// STOPPED. Tasks that appear meanwhile (a start that was under way when the hold began)
// are stopped too. It returns how many it stopped, or ErrStillRunning, naming them,
// when the wait runs out.
func (u *Undeployer) StopSandboxes(ctx context.Context) (int, error) {
	if u.Target.Cluster == "" {
		u.printf("the stack has no cluster: no sandboxes to stop\n")
		return 0, nil
	}
	timeout, poll := cmpOr(u.Timeout, DefaultTimeout), cmpOr(u.Poll, DefaultPoll)
	start := time.Now()
	deadline := start.Add(timeout)
	stopping := map[string]bool{} // task ARN → stopped
	reported := -1
	for {
		live, err := u.listLive(ctx)
		if err != nil {
			return len(stopping), err
		}
		var fresh []string
		for _, arn := range live {
			if _, seen := stopping[arn]; !seen {
				fresh = append(fresh, arn)
			}
		}
		if len(fresh) > 0 {
			u.printf("stopping %d sandbox(es) in cluster %s; each syncs its user's files before it exits\n", len(fresh), u.Target.Cluster)
		}
		for _, arn := range fresh {
			stopping[arn] = false
			_, err := u.ECS.StopTask(ctx, &ecs.StopTaskInput{Cluster: aws.String(u.Target.Cluster), Task: aws.String(arn), Reason: aws.String(StopReason)})
			if err != nil && !taskGone(err) {
				return len(stopping), fmt.Errorf("stop task %s: %w", arn, err)
			}
		}
		if err := u.refresh(ctx, stopping); err != nil {
			return len(stopping), err
		}
		done := 0
		for _, stopped := range stopping {
			if stopped {
				done++
			}
		}
		if len(stopping) == 0 {
			u.printf("no sandbox is running in cluster %s\n", u.Target.Cluster)
			return 0, nil
		}
		if done != reported {
			u.printf("  %d of %d stopped (%s)\n", done, len(stopping), time.Since(start).Round(time.Second))
			reported = done
		}
		if done == len(stopping) && len(fresh) == 0 {
			return done, nil
		}
		if !time.Now().Before(deadline) {
			var left []string
			for arn, stopped := range stopping {
				if !stopped {
					left = append(left, arn)
				}
			}
			sort.Strings(left)
			return done, fmt.Errorf("%w after %s: %d of %d: %s", ErrStillRunning, timeout, len(left), len(stopping), strings.Join(left, ", "))
		}
		select {
		case <-ctx.Done():
			return done, ctx.Err()
		case <-time.After(min(poll, time.Until(deadline))):
		}
	}
}

// listLive returns the cluster's tasks that ECS still means to run (desired status
// RUNNING: pending, provisioning and running ones).
func (u *Undeployer) listLive(ctx context.Context) ([]string, error) {
	var arns []string
	p := ecs.NewListTasksPaginator(u.ECS, &ecs.ListTasksInput{Cluster: aws.String(u.Target.Cluster), DesiredStatus: ecstypes.DesiredStatusRunning})
	for p.HasMorePages() {
		out, err := p.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("list the tasks of cluster %s: %w", u.Target.Cluster, err)
		}
		arns = append(arns, out.TaskArns...)
	}
	return arns, nil
}

// refresh marks the tasks ECS reports STOPPED, or no longer knows.
func (u *Undeployer) refresh(ctx context.Context, stopping map[string]bool) error {
	var pending []string
	for arn, stopped := range stopping {
		if !stopped {
			pending = append(pending, arn)
		}
	}
	sort.Strings(pending)
	for chunk := range slices.Chunk(pending, 100) { // DescribeTasks takes at most 100
		out, err := u.ECS.DescribeTasks(ctx, &ecs.DescribeTasksInput{Cluster: aws.String(u.Target.Cluster), Tasks: chunk})
		if err != nil {
			return fmt.Errorf("describe the stopping tasks: %w", err)
		}
		for _, t := range out.Tasks {
			if aws.ToString(t.LastStatus) == string(ecstypes.DesiredStatusStopped) {
				stopping[aws.ToString(t.TaskArn)] = true
			}
		}
		for _, f := range out.Failures {
			if aws.ToString(f.Reason) == "MISSING" { // stopped long enough ago to be forgotten
				stopping[aws.ToString(f.Arn)] = true
			}
		}
	}
	return nil
}

// Run refuses new starts, then stops every sandbox and waits for them. When it returns
// nil the stack can be deleted and the start functions stay throttled (the deletion
// removes them); on an error it gives them their previous concurrency back, so the
// stack keeps serving as before (the stopped sandboxes start again on their users'
// next frames).
func (u *Undeployer) Run(ctx context.Context) error {
	u.printf("stack %s: refusing new sandboxes\n", u.Target.Stack)
	hold, err := u.HoldStarts(ctx)
	if err != nil {
		return err
	}
	if _, err := u.StopSandboxes(ctx); err != nil {
		u.printf("not every sandbox stopped; new sandboxes are allowed again\n")
		// The caller's context may be what ended: restoring must not depend on it.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		return errors.Join(err, hold.Release(rctx))
	}
	u.printf("every sandbox has stopped\n")
	return nil
}

func (u *Undeployer) printf(format string, args ...any) {
	if u.Out != nil {
		fmt.Fprintf(u.Out, format, args...)
	}
}

// taskGone reports ECS's answer to StopTask of a task it no longer knows.
func taskGone(err error) bool {
	var ae smithy.APIError
	return errors.As(err, &ae) && ae.ErrorCode() == "InvalidParameterException" && strings.Contains(ae.ErrorMessage(), "not found")
}

func cmpOr(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}
