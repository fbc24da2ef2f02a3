// Command taskevents is the Lambda an EventBridge rule invokes with the sandbox
// cluster's ECS task state changes: a task that stopped gives its capacity slot back,
// and one that died before it was ready or while it ran ends its sandbox's lease and
// tells the user's connections.
package main

import (
	"log/slog"

	"github.com/sandgate/sandgate/internal/lambdamain"
	"github.com/sandgate/sandgate/internal/taskevents"
)

func main() {
	lambdamain.Main(lambdamain.Function[taskevents.Config]{
		Load:     taskevents.LoadConfig,
		LogLevel: func(c taskevents.Config) slog.Level { return c.LogLevel },
		AWS:      true,
		Build: func(c taskevents.Config, d lambdamain.Deps) (any, error) {
			return taskevents.New(c, d.AWS, d.Log, d.Metrics).Handle, nil
		},
	})
}
