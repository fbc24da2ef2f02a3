package vend

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
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
)

// Optional lists the variables LoadConfig reads with a default.
var Optional = []string{EnvLogLevel, EnvSessionDuration}

// Config is the vendor's configuration.
type Config struct {
	Table                 string
	TaskRole, SandboxRole string
	Cluster               string
	SessionDuration       time.Duration
	LogLevel              slog.Level
}

// LoadConfig reads the configuration from env; problems are collected in env.
func LoadConfig(env *config.Env) Config {
	c := Config{
		Table:           env.Required(EnvTable),
		TaskRole:        env.Required(EnvTaskRole),
		SandboxRole:     env.Required(EnvSandboxRole),
		Cluster:         env.Required(EnvCluster),
		SessionDuration: env.Duration(EnvSessionDuration, DefaultSessionDuration),
		LogLevel:        env.Level(EnvLogLevel, slog.LevelInfo),
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
	return &Handler{
		Records: store, STS: sts.NewFromConfig(awsCfg),
		TaskRole: name, Account: account, SandboxRole: c.SandboxRole, Cluster: c.Cluster,
		Duration: c.SessionDuration, Log: log,
	}, nil
}
