package launcher

import (
	"context"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ecs"
	"github.com/aws/aws-sdk-go-v2/service/ecs/types"
)

// ListStopped returns the tasks this launcher started that ECS reports stopped or
// stopping (it keeps a stopped task about an hour), with tags and stop reasons: an
// operator's view of recent start failures and exits.
func (l *Launcher) ListStopped(ctx context.Context) ([]Task, error) {
	var all []Task
	var next *string
	for {
		out, err := l.API.ListTasks(ctx, &ecs.ListTasksInput{
			Cluster:       aws.String(l.Config.Cluster),
			StartedBy:     aws.String(l.startedBy()),
			DesiredStatus: types.DesiredStatusStopped,
			NextToken:     next,
		})
		if err != nil {
			return nil, fmt.Errorf("list stopped tasks: %w", err)
		}
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
