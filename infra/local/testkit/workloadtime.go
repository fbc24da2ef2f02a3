package testkit

import (
	"context"
	"fmt"
	"time"
)

// WorkloadStart returns how long the agent of taskARN took from the end of its restore
// to its workload accepting connections (the workspace handed over, the launcher, the
// program's own start until it listens), by the agent's own log lines' times, waiting
// for them until ctx ends.
func (o *Output) WorkloadStart(ctx context.Context, taskARN string) (time.Duration, error) {
	restored, err := o.Await(ctx, func(l Line) bool { return l.Task(taskARN) && IsRestored(l) })
	if err != nil {
		return 0, fmt.Errorf("workload start of %s: %w", taskARN, err)
	}
	started, err := o.Await(ctx, func(l Line) bool { return l.Task(taskARN) && IsWorkloadStarted(l) })
	if err != nil {
		return 0, fmt.Errorf("workload start of %s: %w", taskARN, err)
	}
	var at [2]time.Time
	for i, l := range []Line{restored, started} {
		s, _ := l.Fields["time"].(string)
		if at[i], err = time.Parse(time.RFC3339Nano, s); err != nil {
			return 0, fmt.Errorf("workload start of %s: a line without its time: %v", taskARN, l.Fields)
		}
	}
	return at[1].Sub(at[0]), nil
}
