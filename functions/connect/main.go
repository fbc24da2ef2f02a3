// Command connect is the WebSocket $connect Lambda; it also serves the notices it sends
// itself to tell a new connection what happens to its sandbox.
package main

import (
	"context"
	"errors"
	"os"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-lambda-go/lambdacontext"

	"github.com/sandgate/sandgate/internal/awsconf"
	"github.com/sandgate/sandgate/internal/config"
	"github.com/sandgate/sandgate/internal/connect"
	"github.com/sandgate/sandgate/internal/logging"
	"github.com/sandgate/sandgate/internal/metrics"
)

func main() {
	env := config.New(os.LookupEnv)
	cfg := connect.LoadConfig(env)
	log := logging.New(os.Stdout, cfg.LogLevel)
	err := env.Err()
	if lambdacontext.FunctionName == "" {
		err = errors.Join(err, errors.New("AWS_LAMBDA_FUNCTION_NAME is not set: not running in Lambda"))
	}
	awsCfg, cerr := awsconf.Load(context.Background())
	if err = errors.Join(err, cerr); err != nil {
		log.Error("start-up failed", logging.Error, err.Error())
		os.Exit(1)
	}
	h := connect.New(cfg, awsCfg, lambdacontext.FunctionName, log, metrics.New(os.Stdout))
	lambda.Start(h.Handle)
}
