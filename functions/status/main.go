// Command status is the HTTP API's GET /status Lambda: the signed user's sandbox state,
// read only.
package main

import (
	"log/slog"

	"github.com/sandgate/sandgate/internal/lambdamain"
	"github.com/sandgate/sandgate/internal/status"
)

func main() {
	lambdamain.Main(lambdamain.Function[status.Config]{
		Load:     status.LoadConfig,
		LogLevel: func(c status.Config) slog.Level { return c.Auth.LogLevel },
		AWS:      true,
		Build: func(c status.Config, d lambdamain.Deps) (any, error) {
			// Fail closed: without a usable secret, no one is answered.
			h, err := status.New(c, d.AWS, d.Log)
			if err != nil {
				return nil, err
			}
			return h.Handle, nil
		},
	})
}
