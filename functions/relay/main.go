// Command relay is the relay function's Lambda, behind an IAM-authenticated function
// URL: a sandbox's posts to, and reads and closes of, its own user's connections.
package main

import (
	"log/slog"

	"github.com/sandgate/sandgate/internal/connrelay"
	"github.com/sandgate/sandgate/internal/lambdamain"
)

func main() {
	lambdamain.Main(lambdamain.Function[connrelay.Config]{
		Load:     connrelay.LoadConfig,
		LogLevel: func(c connrelay.Config) slog.Level { return c.LogLevel },
		AWS:      true,
		Build: func(c connrelay.Config, d lambdamain.Deps) (any, error) {
			h, err := connrelay.New(c, d.AWS, d.Log)
			if err != nil {
				return nil, err
			}
			return h.Handle, nil
		},
	})
}
