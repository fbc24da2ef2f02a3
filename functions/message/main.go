// Command message is the WebSocket $default Lambda: it delivers each frame to the user's
// agent, or queues it while the sandbox starts or stops; a sandbox it needs started it
// asks the Connect function for (it holds no right to start tasks).
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
