// Command disconnect is the WebSocket $disconnect Lambda: it forgets the connection and
// tells the user's agent.
package main

import (
	"log/slog"

	"github.com/sandgate/sandgate/internal/disconnect"
	"github.com/sandgate/sandgate/internal/lambdamain"
)

func main() {
	lambdamain.Main(lambdamain.Function[disconnect.Config]{
		Load:     disconnect.LoadConfig,
		LogLevel: func(c disconnect.Config) slog.Level { return c.LogLevel },
		AWS:      true,
		Build: func(c disconnect.Config, d lambdamain.Deps) (any, error) {
			return disconnect.New(c, d.AWS, d.Log).Handle, nil
		},
	})
}
