// Command webhook is the HTTP API's POST /webhooks/clerk Lambda: Clerk's user.deleted,
// verified, starts the user's deletion (the erase function) once per message.
package main

import (
	"log/slog"

	"github.com/sandgate/sandgate/internal/lambdamain"
	"github.com/sandgate/sandgate/internal/webhook"
)

func main() {
	lambdamain.Main(lambdamain.Function[webhook.Config]{
		Load:     webhook.LoadConfig,
		LogLevel: func(c webhook.Config) slog.Level { return c.LogLevel },
		AWS:      true,
		Build: func(c webhook.Config, d lambdamain.Deps) (any, error) {
			return webhook.New(c, d.AWS, d.Log).Handle, nil
		},
	})
}
