// Command disconnect is the WebSocket $disconnect Lambda: it forgets the connection and
// tells the user's agent.
package main

import (
	"context"
	"errors"
	"os"

	"github.com/aws/aws-lambda-go/lambda"

	"github.com/sandgate/sandgate/internal/awsconf"
	"github.com/sandgate/sandgate/internal/config"
	"github.com/sandgate/sandgate/internal/disconnect"
	"github.com/sandgate/sandgate/internal/logging"
)

func main() {
	env := config.New(os.LookupEnv)
	cfg := disconnect.LoadConfig(env)
	log := logging.New(os.Stdout, cfg.LogLevel)
	awsCfg, err := awsconf.Load(context.Background())
	if err = errors.Join(env.Err(), err); err != nil {
		log.Error("start-up failed", logging.Error, err.Error())
		os.Exit(1)
	}
	h := disconnect.New(cfg, awsCfg, log)
	lambda.Start(h.Handle)
}
