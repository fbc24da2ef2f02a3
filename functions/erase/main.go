// Command erase is the Lambda that deletes a user for the identity provider (the
// webhook function invokes it asynchronously): the operator's delete-user.
package main

import (
	"context"
	"log/slog"

	"github.com/aws/aws-sdk-go-v2/service/sts"

	ops "github.com/sandgate/sandgate/internal/admin"
	"github.com/sandgate/sandgate/internal/cleanup"
	"github.com/sandgate/sandgate/internal/lambdamain"
	"github.com/sandgate/sandgate/internal/webhook"
)

func main() {
	lambdamain.Main(lambdamain.Function[cleanup.Config]{
		Load:     webhook.LoadEraseConfig,
		LogLevel: func(c cleanup.Config) slog.Level { return c.LogLevel },
		AWS:      true,
		Build: func(c cleanup.Config, d lambdamain.Deps) (any, error) {
			// The audit names the function's own role session, as STS does.
			caller, err := ops.CallerIdentity(context.Background(), sts.NewFromConfig(d.AWS))
			if err != nil {
				return nil, err
			}
			a := ops.New(c, d.AWS, d.Log, &ops.Audit{Log: d.Log, Caller: caller})
			return (&webhook.EraseHandler{Admin: a, Log: d.Log}).Handle, nil
		},
	})
}
