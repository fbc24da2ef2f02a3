package pool

import (
	"log/slog"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/ecs"

	"github.com/sandgate/sandgate/internal/config"
	"github.com/sandgate/sandgate/internal/ensure"
	"github.com/sandgate/sandgate/internal/launcher"
	"github.com/sandgate/sandgate/internal/metrics"
)

// EnvLogLevel is the function's log level.
const EnvLogLevel = "LOG_LEVEL"

// Optional lists the variables LoadConfig reads that have defaults.
var Optional = append([]string{EnvLogLevel}, ensure.Optional...)

// Config is the pool function's configuration: the ensure set (where and how
// sandbox tasks run, the capacity limit, the pool's size and age).
type Config struct {
	Sandbox  ensure.Config
	LogLevel slog.Level
}

// LoadConfig reads the configuration from env; problems are collected in env.
func LoadConfig(env *config.Env) Config {
	return Config{Sandbox: ensure.LoadConfig(env), LogLevel: env.Level(EnvLogLevel, slog.LevelInfo)}
}

// New builds the Refiller c describes over the function's AWS configuration.
func New(c Config, awsCfg aws.Config, log *slog.Logger, m *metrics.Emitter) *Refiller {
	store := c.Sandbox.NewStore(dynamodb.NewFromConfig(awsCfg))
	store.Logger = log
	return &Refiller{
		Store: store, Launcher: launcher.New(ecs.NewFromConfig(awsCfg), c.Sandbox.Launcher, log),
		Log: log, Metrics: m, Stage: metrics.StageOf(c.Sandbox.Launcher.ManagementEndpoint),
		Size: c.Sandbox.PoolSize, TaskDefinition: c.Sandbox.Launcher.TaskDefinition, MaxAge: c.Sandbox.PoolMaxAge,
	}
}
