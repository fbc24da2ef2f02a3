package connrelay

import (
	"log/slog"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"

	"github.com/sandgate/sandgate/internal/config"
	"github.com/sandgate/sandgate/internal/funcurl"
	"github.com/sandgate/sandgate/internal/relay"
	"github.com/sandgate/sandgate/internal/state"
)

// Environment variables of the relay function (template.yaml's RelayFunction).
const (
	EnvTable              = "TABLE_NAME"
	EnvLogLevel           = "LOG_LEVEL"
	EnvManagementEndpoint = "MANAGEMENT_ENDPOINT" // the WebSocket stage's management API
	EnvSandboxRole        = "SANDBOX_ROLE_ARN"    // only its sessions may call
	EnvCluster            = "ECS_CLUSTER"         // the cluster's name
)

// Optional lists the variables LoadConfig reads with a default.
var Optional = []string{EnvLogLevel}

// Config is the relay function's configuration.
type Config struct {
	Table              string
	ManagementEndpoint string
	SandboxRole        string
	Cluster            string
	LogLevel           slog.Level
}

// LoadConfig reads the configuration from env; problems are collected in env.
func LoadConfig(env *config.Env) Config {
	c := Config{
		Table:              env.Required(EnvTable),
		ManagementEndpoint: env.Required(EnvManagementEndpoint),
		SandboxRole:        env.Required(EnvSandboxRole),
		Cluster:            env.Required(EnvCluster),
		LogLevel:           env.Level(EnvLogLevel, slog.LevelInfo),
	}
	if c.SandboxRole != "" {
		if _, _, err := funcurl.RoleName(c.SandboxRole); err != nil {
			env.Check(EnvSandboxRole, err)
		}
	}
	return c
}

// New builds the Handler c describes, over the function's AWS configuration.
func New(c Config, awsCfg aws.Config, log *slog.Logger) (*Handler, error) {
	name, account, err := funcurl.RoleName(c.SandboxRole)
	if err != nil {
		return nil, err
	}
	store := state.New(dynamodb.NewFromConfig(awsCfg), c.Table)
	store.Logger = log
	return &Handler{
		Store: store, API: relay.NewClient(awsCfg, c.ManagementEndpoint),
		SandboxRole: name, Account: account, Cluster: c.Cluster, Log: log,
	}, nil
}
