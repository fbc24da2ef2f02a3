// Command message is the WebSocket $default Lambda: it delivers each frame to the user's
// agent, or queues it while the sandbox starts or stops.
package main

import (
	"context"
	"errors"
	"os"

	"github.com/aws/aws-lambda-go/lambda"

	"github.com/sandgate/sandgate/internal/awsconf"
	"github.com/sandgate/sandgate/internal/config"
	"github.com/sandgate/sandgate/internal/logging"
	"github.com/sandgate/sandgate/internal/message"
	"github.com/sandgate/sandgate/internal/metrics"
)

func main() {
	env := config.New(os.LookupEnv)
	cfg := message.LoadConfig(env)
	log := logging.New(os.Stdout, cfg.LogLevel)
	awsCfg, err := awsconf.Load(context.Background())
	if err = errors.Join(env.Err(), err); err != nil {
		log.Error("start-up failed", logging.Error, err.Error())
		os.Exit(1)
	}
	h := message.New(cfg, awsCfg, log, metrics.New(os.Stdout))
	lambda.Start(h.Handle)
}
