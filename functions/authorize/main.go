// Command authorize is the WebSocket $connect REQUEST authorizer Lambda.
package main

import (
	"errors"
	"os"

	"github.com/aws/aws-lambda-go/lambda"

	"github.com/sandgate/sandgate/internal/authorizer"
	"github.com/sandgate/sandgate/internal/config"
	"github.com/sandgate/sandgate/internal/logging"
)

func main() {
	env := config.New(os.LookupEnv)
	cfg := authorizer.LoadConfig(env)
	log := logging.New(os.Stdout, cfg.LogLevel)
	v, err := cfg.NewVerifier()
	if err = errors.Join(env.Err(), err); err != nil {
		// Fail closed: without a usable secret, no one is admitted.
		log.Error("start-up failed", logging.Error, err.Error())
		os.Exit(1)
	}
	h := &authorizer.Handler{Verifier: v, Log: log}
	lambda.Start(h.Handle)
}
