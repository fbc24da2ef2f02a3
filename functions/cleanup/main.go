// Command cleanup is the scheduled Lambda that reaps dead sandboxes, stops orphan tasks
// and purges the data of long-inactive users.
package main

import (
	"context"
	"errors"
	"os"

	"github.com/aws/aws-lambda-go/lambda"

	"github.com/sandgate/sandgate/internal/awsconf"
	"github.com/sandgate/sandgate/internal/cleanup"
	"github.com/sandgate/sandgate/internal/config"
	"github.com/sandgate/sandgate/internal/logging"
	"github.com/sandgate/sandgate/internal/metrics"
)

func main() {
	env := config.New(os.LookupEnv)
	cfg := cleanup.LoadConfig(env)
	log := logging.New(os.Stdout, cfg.LogLevel)
	awsCfg, err := awsconf.Load(context.Background())
	if err = errors.Join(env.Err(), err); err != nil {
		log.Error("start-up failed", logging.Error, err.Error())
		os.Exit(1)
	}
	c := cleanup.New(cfg, awsCfg, log, metrics.New(os.Stdout))
	lambda.Start(c.Handle)
}
