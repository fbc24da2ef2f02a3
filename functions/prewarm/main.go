// Command prewarm is the HTTP API's POST /prewarm Lambda: it starts the signed user's
// sandbox before they connect.
package main

import (
	"log/slog"

	"github.com/sandgate/sandgate/internal/lambdamain"
	"github.com/sandgate/sandgate/internal/prewarm"
)

func main() {
	lambdamain.Main(lambdamain.Function[prewarm.Config]{
		Load:     prewarm.LoadConfig,
		LogLevel: func(c prewarm.Config) slog.Level { return c.Auth.LogLevel },
		AWS:      true,
		Build: func(c prewarm.Config, d lambdamain.Deps) (any, error) {
			// Fail closed: without a usable secret, no one is answered.
			h, err := prewarm.New(c, d.AWS, d.Log, d.Metrics)
			if err != nil {
				return nil, err
			}
			return h.Handle, nil
		},
	})
}
