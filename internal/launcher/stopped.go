package launcher

import (
	"context"

	"github.com/aws/aws-sdk-go-v2/service/ecs/types"
)

// ListStopped returns the tasks this launcher started that ECS reports stopped or
// stopping (it keeps a stopped task about an hour), with tags and stop reasons: an
// operator's view of recent start failures and exits.
func (l *Launcher) ListStopped(ctx context.Context) ([]Task, error) {
	return l.list(ctx, types.DesiredStatusStopped, "list stopped tasks")
}
