package ensure

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/ecs"

	"github.com/sandgate/sandgate/internal/config"
	"github.com/sandgate/sandgate/internal/launcher"
	"github.com/sandgate/sandgate/internal/state"
)

// Environment variables of the ensure set: what Connect and Prewarm need to start a
// sandbox. template.yaml sets the same names on both.
const (
	EnvTable              = "TABLE_NAME"
	EnvCluster            = "ECS_CLUSTER"
	EnvTaskDefinition     = "TASK_DEFINITION"
	EnvContainer          = "SANDBOX_CONTAINER"
	EnvSubnets            = "SUBNET_IDS"         // comma-joined
	EnvSecurityGroups     = "SECURITY_GROUP_IDS" // comma-joined
	EnvCapacityProvider   = "CAPACITY_PROVIDER"  // FARGATE or FARGATE_SPOT
	EnvMaxSandboxes       = "MAX_SANDBOXES"
	EnvLeaseTTL           = "LEASE_TTL" // seconds, or a Go duration
	EnvBucket             = "BUCKET"
	EnvManagementEndpoint = "MANAGEMENT_ENDPOINT"
)

// Bounds of LEASE_TTL, as template.yaml's LeaseTtl parameter allows.
const (
	MinLeaseTTL = 15 * time.Second
	MaxLeaseTTL = 600 * time.Second
)

// Optional lists the ensure set's variables that have defaults.
var Optional = []string{EnvSecurityGroups, EnvCapacityProvider, EnvMaxSandboxes, EnvLeaseTTL}

// Config is the ensure set.
type Config struct {
	Table        string
	Launcher     launcher.Config
	MaxSandboxes int
	LeaseTTL     time.Duration
}

// LoadConfig reads the ensure set from env; problems are collected in env.
func LoadConfig(env *config.Env) Config {
	c := Config{
		Table: env.Required(EnvTable),
		Launcher: launcher.Config{
			Cluster:            env.Required(EnvCluster),
			TaskDefinition:     env.Required(EnvTaskDefinition),
			Container:          env.Required(EnvContainer),
			Subnets:            env.List(EnvSubnets),
			SecurityGroups:     env.List(EnvSecurityGroups),
			CapacityProvider:   env.String(EnvCapacityProvider, ""),
			Bucket:             env.Required(EnvBucket),
			ManagementEndpoint: env.Required(EnvManagementEndpoint),
		},
		MaxSandboxes: env.Int(EnvMaxSandboxes, state.DefaultMaxSandboxes, 1, 100000),
		LeaseTTL:     env.Duration(EnvLeaseTTL, state.DefaultLeaseTTL),
	}
	c.Launcher.Table = c.Table
	if len(c.Launcher.Subnets) == 0 {
		env.Check(EnvSubnets, fmt.Errorf("required but not set"))
	}
	if c.LeaseTTL < MinLeaseTTL || c.LeaseTTL > MaxLeaseTTL {
		env.Check(EnvLeaseTTL, fmt.Errorf("want %s to %s, got %s", MinLeaseTTL, MaxLeaseTTL, c.LeaseTTL))
	}
	// Only a configuration complete enough to name a field is worth validating; the
	// variables' own errors above already say what is missing.
	if c.Launcher.CapacityProvider != "" {
		switch c.Launcher.CapacityProvider {
		case "FARGATE", "FARGATE_SPOT":
		default:
			env.Check(EnvCapacityProvider, fmt.Errorf("want FARGATE or FARGATE_SPOT, got %q", c.Launcher.CapacityProvider))
		}
	}
	return c
}

// NewStore returns a Store over api configured by c.
func (c Config) NewStore(api state.API) *state.Store {
	s := state.New(api, c.Table)
	s.MaxSandboxes = c.MaxSandboxes
	s.LeaseTTL = c.LeaseTTL
	return s
}

// NewEnsurer builds the store and the Ensurer c describes over the AWS configuration
// (endpoints come from the SDK's own settings, AWS_ENDPOINT_URL_DYNAMODB and _ECS).
func (c Config) NewEnsurer(awsCfg aws.Config, log *slog.Logger) (*Ensurer, *state.Store) {
	store := c.NewStore(dynamodb.NewFromConfig(awsCfg))
	store.Logger = log
	l := launcher.New(ecs.NewFromConfig(awsCfg), c.Launcher, log)
	return &Ensurer{Store: store, Launcher: l, Log: log}, store
}
