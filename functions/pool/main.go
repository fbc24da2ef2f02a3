// Command pool is the Lambda that keeps the warm pool full: on its schedule and when a
// start asks (asynchronously), it launches pool tasks up to the pool's size and drains
// those too old or of an older task definition.
package main

import (
	"log/slog"

	"github.com/sandgate/sandgate/internal/lambdamain"
	"github.com/sandgate/sandgate/internal/pool"
)

func main() {
	lambdamain.Main(lambdamain.Function[pool.Config]{
		Load:     pool.LoadConfig,
		LogLevel: func(c pool.Config) slog.Level { return c.LogLevel },
		AWS:      true,
		Build: func(c pool.Config, d lambdamain.Deps) (any, error) {
			return pool.New(c, d.AWS, d.Log, d.Metrics).Handle, nil
		},
	})
}
