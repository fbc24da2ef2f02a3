// Command authorize is the WebSocket $connect REQUEST authorizer Lambda.
package main

import (
	"log/slog"

	"github.com/sandgate/sandgate/internal/authorizer"
	"github.com/sandgate/sandgate/internal/lambdamain"
)

func main() {
	lambdamain.Main(lambdamain.Function[authorizer.Config]{
		Load:     authorizer.LoadConfig,
		LogLevel: func(c authorizer.Config) slog.Level { return c.LogLevel },
		Build: func(c authorizer.Config, d lambdamain.Deps) (any, error) {
			// Fail closed: without a usable secret, no one is admitted.
			v, err := c.NewVerifier()
			if err != nil {
				return nil, err
			}
			h := &authorizer.Handler{Verifier: v, Log: d.Log}
			return h.Handle, nil
		},
	})
}
