package connect

import (
	"log/slog"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/lambda"

	"github.com/sandgate/sandgate/internal/agentapi"
	"github.com/sandgate/sandgate/internal/config"
	"github.com/sandgate/sandgate/internal/ensure"
	"github.com/sandgate/sandgate/internal/metrics"
	"github.com/sandgate/sandgate/internal/notice"
	"github.com/sandgate/sandgate/internal/relay"
)

// EnvLogLevel sets the log level (DEBUG, INFO, WARN, ERROR; default INFO).
const EnvLogLevel = "LOG_LEVEL"

// Optional lists the variables LoadConfig reads that have defaults.
var Optional = append([]string{EnvLogLevel}, ensure.Optional...)

// Config is the Connect function's configuration: the ensure set and the log level.
type Config struct {
	Sandbox  ensure.Config
	LogLevel slog.Level
}

// LoadConfig reads the configuration from env; problems are collected in env.
func LoadConfig(env *config.Env) Config {
	return Config{Sandbox: ensure.LoadConfig(env), LogLevel: env.Level(EnvLogLevel, slog.LevelInfo)}
}

// New builds the Handler c describes over the AWS configuration. function is the
// Connect function's own name (Lambda sets AWS_LAMBDA_FUNCTION_NAME; see
// lambdacontext.FunctionName), which its notices invoke.
func New(c Config, awsCfg aws.Config, function string, log *slog.Logger, m *metrics.Emitter) *Handler {
	ens, store := c.Sandbox.NewEnsurer(awsCfg, log)
	return &Handler{
		Store:    store,
		Ensurer:  ens,
		Mgmt:     relay.NewClient(awsCfg, c.Sandbox.Launcher.ManagementEndpoint),
		Agent:    &agentapi.Client{},
		Notifier: &notice.Notifier{API: lambda.NewFromConfig(awsCfg), Function: function},
		Metrics:  m,
		Log:      log,
	}
}
