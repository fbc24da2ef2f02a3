// Command authorize is the WebSocket $connect REQUEST authorizer Lambda.
package main

import (
	"context"
	"log/slog"

	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"

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
			// read from Secrets Manager now and again every refresh interval.
			v, err := c.NewVerifier(context.Background(), secretsmanager.NewFromConfig(d.AWS), d.Log)
			if err != nil {
				return nil, err
			}
			h := &authorizer.Handler{Verifier: v, Log: d.Log}
			return h.Handle, nil
		},
	})
}
