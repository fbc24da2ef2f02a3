// Command authorize is the WebSocket $connect REQUEST authorizer Lambda.
package main

import (
	"context"
	"log/slog"

	"github.com/sandgate/sandgate/internal/authorizer"
	"github.com/sandgate/sandgate/internal/lambdamain"
)

func main() {
	lambdamain.Main(lambdamain.Function[authorizer.Config]{
		Load:     authorizer.LoadConfig,
		LogLevel: func(c authorizer.Config) slog.Level { return c.LogLevel },
		AWS:      true,
		Build: func(c authorizer.Config, d lambdamain.Deps) (any, error) {
			// Fail closed: without a usable secret, no one is admitted. The secrets are
			// read from Secrets Manager now and again every refresh interval; each
			// verified URL is checked against its user's revocation.
			v, err := c.NewRevokingVerifier(context.Background(), d.AWS, d.Log)
			if err != nil {
				return nil, err
			}
			h := &authorizer.Handler{Verifier: v, Log: d.Log}
			return h.Handle, nil
		},
	})
}
