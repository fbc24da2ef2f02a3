// Command vend is the credential vendor's Lambda, behind an IAM-authenticated function
// URL: a sandbox task's scoped credentials, for the task its user's record names.
package main

import (
	"log/slog"

	"github.com/sandgate/sandgate/internal/lambdamain"
	"github.com/sandgate/sandgate/internal/vend"
)

func main() {
	lambdamain.Main(lambdamain.Function[vend.Config]{
		Load:     vend.LoadConfig,
		LogLevel: func(c vend.Config) slog.Level { return c.LogLevel },
		AWS:      true,
		Build: func(c vend.Config, d lambdamain.Deps) (any, error) {
			h, err := vend.New(c, d.AWS, d.Log)
			if err != nil {
				return nil, err
			}
			return h.Handle, nil
		},
	})
}
