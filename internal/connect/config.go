package connect

import (
	"log/slog"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/lambda"

	"github.com/sandgate/sandgate/internal/agentapi"
	"github.com/sandgate/sandgate/internal/config"
	"github.com/sandgate/sandgate/internal/ensure"
	"github.com/sandgate/sandgate/internal/metrics"
	"github.com/sandgate/sandgate/internal/notice"
	"github.com/sandgate/sandgate/internal/relay"
	"github.com/sandgate/sandgate/internal/state"
)

// Environment variables read by LoadConfig besides the ensure set's.
const (
	// EnvLogLevel sets the log level (DEBUG, INFO, WARN, ERROR; default INFO).
	EnvLogLevel = "LOG_LEVEL"
	// EnvMaxConnections is the most connections one user may hold at once
	// (template.yaml's MaxConnectionsPerUser).
	EnvMaxConnections = "MAX_CONNECTIONS_PER_USER"
	// EnvConnectRate is the connects per minute one user may make, sustained, and
	// EnvConnectBurst how many at once (ConnectsPerMinute, ConnectBurst).
	EnvConnectRate  = "CONNECTS_PER_MINUTE"
	EnvConnectBurst = "CONNECT_BURST"
)

// Optional lists the variables LoadConfig reads that have defaults.
var Optional = append([]string{EnvLogLevel, EnvMaxConnections, EnvConnectRate, EnvConnectBurst}, ensure.Optional...)

// Config is the Connect function's configuration: the ensure set, the per-user limits
// and the log level.
type Config struct {
	Sandbox  ensure.Config
	Limits   state.ConnectLimits
	LogLevel slog.Level
}

// LoadConfig reads the configuration from env; problems are collected in env.
func LoadConfig(env *config.Env) Config {
	return Config{Sandbox: ensure.LoadConfig(env), Limits: LoadLimits(env), LogLevel: env.Level(EnvLogLevel, slog.LevelInfo)}
}

// LoadLimits reads the per-user connection limits.
func LoadLimits(env *config.Env) state.ConnectLimits {
	perMinute := env.Int(EnvConnectRate, state.DefaultConnectRate, 1, 60000)
	return state.ConnectLimits{
		MaxConnections: env.Int(EnvMaxConnections, state.DefaultMaxConnections, 1, 10000),
		Interval:       time.Minute / time.Duration(perMinute),
		Burst:          env.Int(EnvConnectBurst, state.DefaultConnectBurst, 1, 10000),
	}
}

// New builds the Handler c describes over the AWS configuration. function is the
// Connect function's own name (Lambda sets AWS_LAMBDA_FUNCTION_NAME; see
// lambdacontext.FunctionName), which its notices invoke.
func New(c Config, awsCfg aws.Config, function string, log *slog.Logger, m *metrics.Emitter) *Handler {
	ens, store := c.Sandbox.NewEnsurer(awsCfg, log)
	store.ConnectLimits = c.Limits
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
