package taskevents

import (
	"fmt"
	"log/slog"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"

	"github.com/sandgate/sandgate/internal/config"
	"github.com/sandgate/sandgate/internal/launcher"
	"github.com/sandgate/sandgate/internal/metrics"
	"github.com/sandgate/sandgate/internal/relay"
	"github.com/sandgate/sandgate/internal/state"
)

// Environment variables read by LoadConfig.
const (
	EnvTable              = "TABLE_NAME"
	EnvCluster            = "ECS_CLUSTER"
	EnvManagementEndpoint = "MANAGEMENT_ENDPOINT"
	EnvLogLevel           = "LOG_LEVEL"
)

// Optional lists the variables LoadConfig reads that have defaults.
var Optional = []string{EnvLogLevel}

// Config is the TaskEvents function's configuration.
type Config struct {
	Table string
	// Cluster is the sandbox cluster's name (the rule matches its ARN; the handler
	// checks it again).
	Cluster string
	// ManagementEndpoint reaches the WebSocket stage (telling a dead sandbox's
	// clients); its last path segment is the metrics' Stage.
	ManagementEndpoint string
	LogLevel           slog.Level
}

// LoadConfig reads the configuration from env; problems are collected in env.
func LoadConfig(env *config.Env) Config {
	c := Config{
		Table:              env.Required(EnvTable),
		Cluster:            env.Required(EnvCluster),
		ManagementEndpoint: env.Required(EnvManagementEndpoint),
		LogLevel:           env.Level(EnvLogLevel, slog.LevelInfo),
	}
	if c.ManagementEndpoint != "" && metrics.StageOf(c.ManagementEndpoint) == "" {
		env.Check(EnvManagementEndpoint, fmt.Errorf("want https://<api>.execute-api.<region>.amazonaws.com/<stage>, got no stage in %q", c.ManagementEndpoint))
	}
	return c
}

// New builds the Handler c describes over the AWS configuration.
func New(c Config, awsCfg aws.Config, log *slog.Logger, m *metrics.Emitter) *Handler {
	store := state.New(dynamodb.NewFromConfig(awsCfg), c.Table)
	store.Logger = log
	return &Handler{
		Store:     store,
		Relay:     &relay.Relay{API: relay.NewClient(awsCfg, c.ManagementEndpoint), Conns: store, Log: log},
		Metrics:   m,
		Log:       log,
		Cluster:   c.Cluster,
		StartedBy: launcher.DefaultStartedBy,
		Stage:     metrics.StageOf(c.ManagementEndpoint),
	}
}
