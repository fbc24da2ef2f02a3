package cleanup

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/ecs"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"

	"github.com/sandgate/sandgate/internal/backup"
	"github.com/sandgate/sandgate/internal/config"
	"github.com/sandgate/sandgate/internal/launcher"
	"github.com/sandgate/sandgate/internal/logging"
	"github.com/sandgate/sandgate/internal/metrics"
	"github.com/sandgate/sandgate/internal/relay"
	"github.com/sandgate/sandgate/internal/s3bucket"
	"github.com/sandgate/sandgate/internal/secretcache"
	"github.com/sandgate/sandgate/internal/state"
)

// Environment variables read by LoadConfig, besides the storage options
// (s3bucket.EnvRegion and EnvPathStyle; the endpoint is the SDK's AWS_ENDPOINT_URL_S3).
const (
	EnvTable              = "TABLE_NAME"
	EnvCluster            = "ECS_CLUSTER"
	EnvBucket             = "BUCKET"
	EnvRetentionDays      = "RETENTION_DAYS"
	EnvDryRun             = "DRY_RUN"
	EnvManagementEndpoint = "MANAGEMENT_ENDPOINT"
	EnvLogLevel           = "LOG_LEVEL"
	// EnvStorageSecret, with R2 (or another S3-compatible store), names the Secrets
	// Manager secret holding the store's keys (JSON accessKeyId, secretAccessKey). The
	// keys are read at run time, never from the environment; unset, the bucket is S3,
	// reached with the function's role.
	EnvStorageSecret = "STORAGE_CREDENTIALS_SECRET"
	// EnvSecretsRefresh is how often the keys are read again (a rotation needs no deploy).
	EnvSecretsRefresh = secretcache.EnvRefresh
	// EnvBackups turns the backup step on ("true", the default) or off.
	EnvBackups = "BACKUPS"
	// EnvBackupKeep is how many backups of a user are kept at most, and
	// EnvBackupMaxAgeDays how old a backup may grow (the newest is always kept).
	EnvBackupKeep       = "BACKUP_KEEP"
	EnvBackupMaxAgeDays = "BACKUP_MAX_AGE_DAYS"
)

// DefaultRetentionDays is how long a user may stay inactive before their data is deleted.
const DefaultRetentionDays = 90

// Optional lists the variables LoadConfig reads that have defaults.
var Optional = []string{EnvRetentionDays, EnvDryRun, EnvLogLevel,
	s3bucket.EnvRegion, s3bucket.EnvPathStyle, EnvStorageSecret, EnvSecretsRefresh,
	EnvBackups, EnvBackupKeep, EnvBackupMaxAgeDays}

// Config is the Cleanup function's configuration.
type Config struct {
	Table, Cluster, Bucket string
	// ManagementEndpoint reaches the WebSocket stage (telling a dead sandbox's clients);
	// its last path segment is the metrics' Stage.
	ManagementEndpoint string
	Retention          time.Duration
	DryRun             bool
	Storage            s3bucket.Options
	// StorageSecret names the store's keys in Secrets Manager ("" for S3 through the role).
	StorageSecret  string
	SecretsRefresh time.Duration
	LogLevel       slog.Level
	// Backups turns the backup step on; BackupRetention is what it keeps.
	Backups         bool
	BackupRetention backup.Retention
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
		Storage: s3bucket.Options{
			Region:       env.String(s3bucket.EnvRegion, ""),
			UsePathStyle: env.Bool(s3bucket.EnvPathStyle, false),
		},
		StorageSecret:  env.String(EnvStorageSecret, ""),
		SecretsRefresh: env.Duration(EnvSecretsRefresh, secretcache.DefaultRefresh),
		LogLevel:       env.Level(EnvLogLevel, slog.LevelInfo),
		Backups:        env.Bool(EnvBackups, true),
		BackupRetention: backup.Retention{
			Keep:   env.Int(EnvBackupKeep, backup.DefaultKeep, 1, 10000),
			MaxAge: time.Duration(env.Int(EnvBackupMaxAgeDays, int(backup.DefaultMaxAge/(24*time.Hour)), 1, 36500)) * 24 * time.Hour,
		},
	}
	if c.SecretsRefresh <= 0 || c.SecretsRefresh > time.Hour {
		env.Check(EnvSecretsRefresh, fmt.Errorf("%s is outside (0, 1h]", c.SecretsRefresh))
	}
	if c.ManagementEndpoint != "" && metrics.StageOf(c.ManagementEndpoint) == "" {
		env.Check(EnvManagementEndpoint, fmt.Errorf("want https://<api>.execute-api.<region>.amazonaws.com/<stage>, got no stage in %q", c.ManagementEndpoint))
	}
	return c
}

// New builds the Cleaner c describes over the AWS configuration. With stored keys, it
// reads them now; a failure is logged, not fatal: reaping and orphan stops need no
// storage, and a purge that cannot get the keys fails with the reason.
func New(c Config, awsCfg aws.Config, log *slog.Logger, m *metrics.Emitter) *Cleaner {
	store := state.New(dynamodb.NewFromConfig(awsCfg), c.Table)
	store.Logger = log
	if c.StorageSecret != "" {
		keys := &secretcache.Cache[secretcache.Keys]{API: secretsmanager.NewFromConfig(awsCfg), SecretID: c.StorageSecret,
			Parse: secretcache.ParseKeys, Refresh: c.SecretsRefresh, Log: log}
		if _, err := keys.Get(context.Background()); err != nil {
			log.Warn("storage keys not read", logging.Error, err.Error())
		}
		c.Storage.Credentials = &secretcache.Credentials{Cache: keys}
	}
	bucket := s3bucket.New(s3bucket.NewClient(awsCfg, c.Storage), c.Bucket)
	var backups *backup.Pass
	if c.Backups {
		backups = &backup.Pass{Backer: backup.Backer{Store: bucket, Log: log}, Retention: c.BackupRetention, Holder: "cleanup"}
	}
	return &Cleaner{
		Backups:   backups,
		Store:     store,
		Tasks:     launcher.New(ecs.NewFromConfig(awsCfg), launcher.Config{Cluster: c.Cluster}, log),
		Bucket:    bucket,
		Relay:     &relay.Relay{API: relay.NewClient(awsCfg, c.ManagementEndpoint), Conns: store, Log: log},
		Metrics:   m,
		Log:       log,
		Stage:     metrics.StageOf(c.ManagementEndpoint),
		Retention: c.Retention,
		DryRun:    c.DryRun,
	}
}
