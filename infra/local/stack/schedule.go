package stack

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	"github.com/aws/aws-sdk-go-v2/service/lambda/types"

	"github.com/sandgate/sandgate/infra/local/iampolicy"
	"github.com/sandgate/sandgate/infra/local/template"
	"github.com/sandgate/sandgate/internal/logging"
)

// startSchedules invokes each scheduled function on its rate, with the fixed input the
// template's schedules deliver ({}). A ScheduleV2 event invokes as EventBridge Scheduler
// does: asynchronously, through the Lambda Invoke API, signed by a session of the
// schedule's role (so the role's trust and its lambda:InvokeFunction are enforced).
// cron() expressions are not run locally: `make invoke` runs such a function on demand.
func (s *Stack) startSchedules(tpl *template.Template) {
	ctx, cancel := context.WithCancel(context.Background())
	s.stop = cancel
	for _, f := range tpl.Functions {
		for _, ev := range f.Events {
			if ev.Schedule == "" || !ev.Enabled {
				continue
			}
			every, ok := parseRate(ev.Schedule)
			if !ok {
				s.log.Warn("schedule not run locally", "function", f.LogicalID, "schedule", ev.Schedule)
				continue
			}
			s.sched.Add(1)
			go func(name, role string) {
				defer s.sched.Done()
				t := time.NewTicker(every)
				defer t.Stop()
				for {
					select {
					case <-ctx.Done():
						return
					case <-t.C:
						if err := s.invokeScheduled(ctx, name, role); err != nil && ctx.Err() == nil {
							s.log.Error("scheduled invocation failed", "function", name, logging.Error, err.Error())
						}
					}
				}
			}(FunctionName(f), ev.RoleArn)
		}
	}
}

// RunSchedule makes the scheduled invocations of the function logicalID now, as its
// schedules would (through the Invoke API, as each schedule's role); the invocations
// are asynchronous, as the scheduler's are.
func (s *Stack) RunSchedule(ctx context.Context, logicalID string) error {
	f := s.Template.Functions[logicalID]
	if f == nil {
		return fmt.Errorf("run schedule: no function %s", logicalID)
	}
	ran := false
	for _, ev := range f.Events {
		if ev.Schedule == "" {
			continue
		}
		if err := s.invokeScheduled(ctx, FunctionName(f), ev.RoleArn); err != nil {
			return fmt.Errorf("run schedule %s of %s: %w", ev.Name, logicalID, err)
		}
		ran = true
	}
	if !ran {
		return fmt.Errorf("run schedule: %s has no schedule", logicalID)
	}
	return nil
}

// invokeScheduled runs one scheduled invocation of function name.
func (s *Stack) invokeScheduled(ctx context.Context, name, role string) error {
	if role == "" {
		_, err := s.Runtime.Invoke(ctx, name, []byte("{}"))
		return err
	}
	creds, _, err := s.ids.sessions.IssueForService(ctx, iampolicy.SchedulerService, role, "sandgate-schedule-"+name, 0)
	if err != nil {
		return err
	}
	cfg := s.AWS.Copy()
	cfg.Credentials = credentials.NewStaticCredentialsProvider(creds.AccessKeyID, creds.SecretAccessKey, creds.SessionToken)
	cl := lambda.NewFromConfig(cfg, func(o *lambda.Options) { o.BaseEndpoint = aws.String(s.Endpoints["AWS_ENDPOINT_URL_LAMBDA"]) })
	_, err = cl.Invoke(ctx, &lambda.InvokeInput{FunctionName: aws.String(name), InvocationType: types.InvocationTypeEvent, Payload: []byte("{}")})
	return err
}

// parseRate reads rate(<n> <unit>) with units minute(s), hour(s), day(s).
func parseRate(expr string) (time.Duration, bool) {
	inner, ok := strings.CutPrefix(expr, "rate(")
	if !ok || !strings.HasSuffix(inner, ")") {
		return 0, false
	}
	fields := strings.Fields(strings.TrimSuffix(inner, ")"))
	if len(fields) != 2 {
		return 0, false
	}
	n, err := strconv.Atoi(fields[0])
	if err != nil || n <= 0 {
		return 0, false
	}
	unit := map[string]time.Duration{"minute": time.Minute, "hour": time.Hour, "day": 24 * time.Hour}[strings.TrimSuffix(fields[1], "s")]
	if unit == 0 {
		return 0, false
	}
	return time.Duration(n) * unit, true
}
