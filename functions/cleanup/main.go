// Command cleanup is the scheduled Lambda that reaps dead sandboxes, stops orphan tasks
// and purges the data of long-inactive users.
package main

import (
	"log/slog"

	"github.com/sandgate/sandgate/internal/cleanup"
	"github.com/sandgate/sandgate/internal/lambdamain"
)

func main() {
	lambdamain.Main(lambdamain.Function[cleanup.Config]{
		Load:     cleanup.LoadConfig,
		LogLevel: func(c cleanup.Config) slog.Level { return c.LogLevel },
		AWS:      true,
		Build: func(c cleanup.Config, d lambdamain.Deps) (any, error) {
			return cleanup.New(c, d.AWS, d.Log, d.Metrics).Handle, nil
		},
	})
}
