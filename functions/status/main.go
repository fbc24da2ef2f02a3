// Command status is the HTTP API's GET /status Lambda: the signed user's sandbox state,
// read only.
package main

import (
	"context"
	"errors"
	"os"

	"github.com/aws/aws-lambda-go/lambda"

	"github.com/sandgate/sandgate/internal/awsconf"
	"github.com/sandgate/sandgate/internal/config"
	"github.com/sandgate/sandgate/internal/logging"
	"github.com/sandgate/sandgate/internal/status"
)

func main() {
	env := config.New(os.LookupEnv)
	cfg := status.LoadConfig(env)
	log := logging.New(os.Stdout, cfg.Auth.LogLevel)
	awsCfg, err := awsconf.Load(context.Background())
	var h *status.Handler
	if err == nil {
		h, err = status.New(cfg, awsCfg, log)
	}
	if err = errors.Join(env.Err(), err); err != nil {
		// Fail closed: without a usable secret, no one is answered.
		log.Error("start-up failed", logging.Error, err.Error())
		os.Exit(1)
	}
	lambda.Start(h.Handle)
}
