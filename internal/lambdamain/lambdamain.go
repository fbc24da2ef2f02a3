package lambdamain

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/sandgate/sandgate/internal/awsconf"
	"github.com/sandgate/sandgate/internal/config"
	"github.com/sandgate/sandgate/internal/logging"
	"github.com/sandgate/sandgate/internal/metrics"
)

// Function describes one Lambda function's start-up over its configuration type C.
type Function[C any] struct {
	// Load reads the configuration; problems are collected in the Env (LoadConfig).
	Load func(*config.Env) C
	// LogLevel picks the log level out of the configuration.
	LogLevel func(C) slog.Level
	// AWS loads the one AWS configuration (awsconf.Load) for Build.
	AWS bool
	// Build makes the handler, a function lambda.Start accepts, from a configuration
	// that loaded without a problem. An error stops the start-up.
	Build func(C, Deps) (any, error)
}

// Deps is what Build receives besides the configuration.
type Deps struct {
	// Log writes JSON lines to the process's stdout at the configured level.
	Log *slog.Logger
	// AWS is the AWS configuration (zero unless Function.AWS).
	AWS aws.Config
	// Metrics writes CloudWatch embedded metrics to the same stdout as the log.
	Metrics *metrics.Emitter
}

// Process is what a start-up takes from its process; Main passes the real ones.
type Process struct {
	// LookupEnv reads the environment (os.LookupEnv).
	LookupEnv func(string) (string, bool)
	// Stdout receives the log and the metrics (os.Stdout).
	Stdout io.Writer
	// LoadAWS loads the AWS configuration (awsconf.Load).
	LoadAWS func(context.Context) (aws.Config, error)
	// Start hands the handler to the Lambda runtime (lambda.Start, which does not return).
	Start func(handler any)
}

// errNoHandler: Build returned neither a handler nor an error.
var errNoHandler = errors.New("no handler built")

// Run starts f in p: it reads the configuration, loads the AWS configuration if f needs
// it, builds the handler and passes it to p.Start. When the configuration has a problem
// or anything cannot be built, it logs "start-up failed" with every reason it found and
// returns the error without starting: a function never serves with a partial
// configuration (without a usable secret, for one, no one is admitted).
func Run[C any](f Function[C], p Process) error {
	env := config.New(p.LookupEnv)
	cfg := f.Load(env)
	log := logging.New(p.Stdout, f.LogLevel(cfg))
	d := Deps{Log: log, Metrics: metrics.New(p.Stdout)}
	var awsErr error
	if f.AWS {
		d.AWS, awsErr = p.LoadAWS(context.Background())
	}
	err := errors.Join(env.Err(), awsErr)
	var handler any
	if err == nil {
		handler, err = f.Build(cfg, d)
		if err == nil && handler == nil {
			err = errNoHandler
		}
	}
	if err != nil {
		log.Error("start-up failed", logging.Error, err.Error())
		return err
	}
	p.Start(handler)
	return nil
}

// Main runs f as this process's Lambda function and exits 1 when it cannot start.
func Main[C any](f Function[C]) {
	err := Run(f, Process{
		LookupEnv: os.LookupEnv,
		Stdout:    os.Stdout,
		LoadAWS:   func(ctx context.Context) (aws.Config, error) { return awsconf.Load(ctx) },
		Start:     lambda.Start,
	})
	if err != nil {
		os.Exit(1)
	}
}
