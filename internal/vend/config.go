package vend

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/ecs"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/aws/aws-sdk-go-v2/service/sts"

	"github.com/sandgate/sandgate/internal/config"
	"github.com/sandgate/sandgate/internal/funcurl"
	"github.com/sandgate/sandgate/internal/state"
)

// Environment variables of the vendor function (template.yaml's VendFunction).
const (
	EnvTable       = "TABLE_NAME"
	EnvLogLevel    = "LOG_LEVEL"
	EnvTaskRole    = "TASK_ROLE_ARN"    // the sandbox tasks' role: only its sessions may ask
	EnvSandboxRole = "SANDBOX_ROLE_ARN" // the role the credentials are a session of
	EnvCluster     = "ECS_CLUSTER"      // the cluster's name
	// EnvSessionDuration is the sessions' length, between MinSessionDuration and
	// MaxSessionDuration (DefaultSessionDuration when unset).
	EnvSessionDuration = "SESSION_DURATION"
	// With R2 storage (all three set, or none): the secret holding the parent API
	// token's S3 key (accessKeyId, secretAccessKey), the R2 endpoint and the bucket
	// the minted credentials are for.
	EnvStorageSecret   = "STORAGE_CREDENTIALS_SECRET"
	EnvStorageEndpoint = "STORAGE_ENDPOINT"
	EnvBucket          = "BUCKET"
	// EnvAgentPort is the agent's port, for a registered pool task's endpoint
	// (DefaultAgentPort when unset).
	EnvAgentPort = "AGENT_PORT"
)

// Optional lists the variables LoadConfig reads with a default, or only with R2.
var Optional = []string{EnvLogLevel, EnvSessionDuration, EnvStorageSecret, EnvStorageEndpoint, EnvBucket, EnvAgentPort}

// Config is the vendor's configuration.
type Config struct {
	Table                 string
	TaskRole, SandboxRole string
	Cluster               string
	SessionDuration       time.Duration
	AgentPort             int
	LogLevel              slog.Level
	// StorageSecret, StorageEndpoint and Bucket are set with R2 storage only.
	StorageSecret, StorageEndpoint, Bucket string
}

// LoadConfig reads the configuration from env; problems are collected in env.
func LoadConfig(env *config.Env) Config {
	c := Config{
		Table:           env.Required(EnvTable),
		TaskRole:        env.Required(EnvTaskRole),
		SandboxRole:     env.Required(EnvSandboxRole),
		Cluster:         env.Required(EnvCluster),
		SessionDuration: env.Duration(EnvSessionDuration, DefaultSessionDuration),
		AgentPort:       env.Int(EnvAgentPort, DefaultAgentPort, 1, 65535),
		LogLevel:        env.Level(EnvLogLevel, slog.LevelInfo),
		StorageSecret:   env.String(EnvStorageSecret, ""),
		StorageEndpoint: env.String(EnvStorageEndpoint, ""),
		Bucket:          env.String(EnvBucket, ""),
	}
	if set := btoi(c.StorageSecret != "") + btoi(c.StorageEndpoint != "") + btoi(c.Bucket != ""); set != 0 && set != 3 {
		env.Check(EnvStorageSecret, fmt.Errorf("set %s, %s and %s together (R2 storage), or none", EnvStorageSecret, EnvStorageEndpoint, EnvBucket))
	}
	if c.StorageEndpoint != "" {
		if _, err := AccountOf(c.StorageEndpoint); err != nil {
			env.Check(EnvStorageEndpoint, err)
		}
	}
	for name, arn := range map[string]string{EnvTaskRole: c.TaskRole, EnvSandboxRole: c.SandboxRole} {
		if arn != "" {
			if _, _, err := funcurl.RoleName(arn); err != nil {
				env.Check(name, err)
			}
		}
	}
	if c.SessionDuration < MinSessionDuration || c.SessionDuration > MaxSessionDuration {
		env.Check(EnvSessionDuration, fmt.Errorf("%s is outside [%s, %s]", c.SessionDuration, MinSessionDuration, MaxSessionDuration))
	}
	return c
}

// New builds the Handler c describes, over the function's AWS configuration.
func New(c Config, awsCfg aws.Config, log *slog.Logger) (*Handler, error) {
	name, account, err := funcurl.RoleName(c.TaskRole)
	if err != nil {
		return nil, err
	}
	store := state.New(dynamodb.NewFromConfig(awsCfg), c.Table)
	store.Logger = log
	h := &Handler{
		Records: store, STS: sts.NewFromConfig(awsCfg),
		TaskRole: name, Account: account, SandboxRole: c.SandboxRole, Cluster: c.Cluster,
		Duration: c.SessionDuration, Log: log,
		ECS: ecs.NewFromConfig(awsCfg), Pool: store, AgentPort: c.AgentPort,
	}
	if c.StorageSecret != "" {
		h.Storage = &R2Minter{Secrets: secretsmanager.NewFromConfig(awsCfg), SecretID: c.StorageSecret,
			Endpoint: c.StorageEndpoint, Bucket: c.Bucket}
	}
	return h, nil
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}
