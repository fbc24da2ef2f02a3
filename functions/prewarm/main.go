// Command prewarm is the HTTP API's POST /prewarm Lambda: it starts the signed user's
// sandbox before they connect.
package main

import (
	"context"
	"errors"
	"os"

	"github.com/aws/aws-lambda-go/lambda"

	"github.com/sandgate/sandgate/internal/awsconf"
	"github.com/sandgate/sandgate/internal/config"
	"github.com/sandgate/sandgate/internal/logging"
	"github.com/sandgate/sandgate/internal/metrics"
	"github.com/sandgate/sandgate/internal/prewarm"
)

func main() {
	env := config.New(os.LookupEnv)
	cfg := prewarm.LoadConfig(env)
	log := logging.New(os.Stdout, cfg.Auth.LogLevel)
	awsCfg, err := awsconf.Load(context.Background())
	var h *prewarm.Handler
	if err == nil {
		h, err = prewarm.New(cfg, awsCfg, log, metrics.New(os.Stdout))
	}
	if err = errors.Join(env.Err(), err); err != nil {
		// Fail closed: without a usable secret, no one is answered.
		log.Error("start-up failed", logging.Error, err.Error())
		os.Exit(1)
	}
	lambda.Start(h.Handle)
}
