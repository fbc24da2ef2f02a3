// Command connect is the WebSocket $connect Lambda; it also serves the notices it sends
// itself to tell a new connection what happens to its sandbox, and the Message
// function's ensure notices (the only function of the socket that may start tasks).
package main

import (
	"errors"
	"log/slog"

	"github.com/aws/aws-lambda-go/lambdacontext"

	"github.com/sandgate/sandgate/internal/connect"
	"github.com/sandgate/sandgate/internal/lambdamain"
)

func main() {
	lambdamain.Main(lambdamain.Function[connect.Config]{
		Load:     connect.LoadConfig,
		LogLevel: func(c connect.Config) slog.Level { return c.LogLevel },
		AWS:      true,
		Build: func(c connect.Config, d lambdamain.Deps) (any, error) {
			// Notices invoke this function by the name Lambda gives it.
			if lambdacontext.FunctionName == "" {
				return nil, errors.New("AWS_LAMBDA_FUNCTION_NAME is not set: not running in Lambda")
			}
			return connect.New(c, d.AWS, lambdacontext.FunctionName, d.Log, d.Metrics).Handle, nil
		},
	})
}
