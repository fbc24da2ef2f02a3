// Command message is the WebSocket $default Lambda: it delivers each frame to the user's
// agent, or queues it while the sandbox starts or stops.
package main

import (
	"log/slog"

	"github.com/sandgate/sandgate/internal/lambdamain"
	"github.com/sandgate/sandgate/internal/message"
)

func main() {
	lambdamain.Main(lambdamain.Function[message.Config]{
		Load:     message.LoadConfig,
		LogLevel: func(c message.Config) slog.Level { return c.LogLevel },
		AWS:      true,
		Build: func(c message.Config, d lambdamain.Deps) (any, error) {
			return message.New(c, d.AWS, d.Log, d.Metrics).Handle, nil
		},
	})
}
