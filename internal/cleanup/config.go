package cleanup

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/ecs"

	"github.com/sandgate/sandgate/internal/config"
	"github.com/sandgate/sandgate/internal/launcher"
	"github.com/sandgate/sandgate/internal/metrics"
	"github.com/sandgate/sandgate/internal/relay"
	"github.com/sandgate/sandgate/internal/s3bucket"
	"github.com/sandgate/sandgate/internal/state"
)

// Environment variables read by LoadConfig, besides the storage options
// (s3bucket.LoadOptions; the endpoint is the SDK's AWS_ENDPOINT_URL_S3).
const (
	EnvTable              = "TABLE_NAME"
	EnvCluster            = "ECS_CLUSTER"
	EnvBucket             = "BUCKET"
	EnvRetentionDays      = "RETENTION_DAYS"
	EnvDryRun             = "DRY_RUN"
	EnvManagementEndpoint = "MANAGEMENT_ENDPOINT"
	EnvLogLevel           = "LOG_LEVEL"
)

// DefaultRetentionDays is how long a user may stay inactive before their data is deleted.
const DefaultRetentionDays = 90

// Optional lists the variables LoadConfig reads that have defaults.
var Optional = []string{EnvRetentionDays, EnvDryRun, EnvLogLevel,
	s3bucket.EnvRegion, s3bucket.EnvPathStyle, s3bucket.EnvAccessKeyID, s3bucket.EnvSecretAccessKey}

// Config is the Cleanup function's configuration.
type Config struct {
	Table, Cluster, Bucket string
	// ManagementEndpoint reaches the WebSocket stage (telling a dead sandbox's clients);
	// its last path segment is the metrics' Stage.
	ManagementEndpoint string
	Retention          time.Duration
	DryRun             bool
	Storage            s3bucket.Options
	LogLevel           slog.Level
}

// LoadConfig reads the configuration from env; problems are collected in env.
func LoadConfig(env *config.Env) Config {
	c := Config{
		Table:              env.Required(EnvTable),
		Cluster:            env.Required(EnvCluster),
		Bucket:             env.Required(EnvBucket),
		ManagementEndpoint: env.Required(EnvManagementEndpoint),
		Retention:          time.Duration(env.Int(EnvRetentionDays, DefaultRetentionDays, 1, 36500)) * 24 * time.Hour,
		DryRun:             env.Bool(EnvDryRun, false),
		Storage:            s3bucket.LoadOptions(env),
		LogLevel:           env.Level(EnvLogLevel, slog.LevelInfo),
	}
	if c.ManagementEndpoint != "" && metrics.StageOf(c.ManagementEndpoint) == "" {
		env.Check(EnvManagementEndpoint, fmt.Errorf("want https://<api>.execute-api.<region>.amazonaws.com/<stage>, got no stage in %q", c.ManagementEndpoint))
	}
	return c
}

// New builds the Cleaner c describes over the AWS configuration.
func New(c Config, awsCfg aws.Config, log *slog.Logger, m *metrics.Emitter) *Cleaner {
	store := state.New(dynamodb.NewFromConfig(awsCfg), c.Table)
	store.Logger = log
	return &Cleaner{
		Store:     store,
		Tasks:     launcher.New(ecs.NewFromConfig(awsCfg), launcher.Config{Cluster: c.Cluster}, log),
		Bucket:    s3bucket.New(s3bucket.NewClient(awsCfg, c.Storage), c.Bucket),
		Relay:     &relay.Relay{API: relay.NewClient(awsCfg, c.ManagementEndpoint), Conns: store, Log: log},
		Metrics:   m,
		Log:       log,
		Stage:     metrics.StageOf(c.ManagementEndpoint),
		Retention: c.Retention,
		DryRun:    c.DryRun,
	}
}
