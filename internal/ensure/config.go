package ensure

import (
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/ecs"
	"github.com/aws/aws-sdk-go-v2/service/lambda"

	"github.com/sandgate/sandgate/internal/agentapi"
	"github.com/sandgate/sandgate/internal/config"
	"github.com/sandgate/sandgate/internal/launcher"
	"github.com/sandgate/sandgate/internal/metrics"
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
	// The warm pool: its size (0, or unset, is no pool), the oldest a pool task may be
	// (seconds, or a Go duration), and the pool function asked to refill it.
	EnvPoolSize     = "POOL_SIZE"
	EnvPoolMaxAge   = "POOL_MAX_AGE"
	EnvPoolFunction = "POOL_FUNCTION"
)

// Bounds of the pool, as template.yaml's PoolSize and PoolMaxAge parameters allow.
const (
	MaxPoolSize       = 1000
	DefaultPoolMaxAge = time.Hour
	MinPoolMaxAge     = 5 * time.Minute
	MaxPoolMaxAge     = 24 * time.Hour
)

// Bounds of LEASE_TTL, as template.yaml's LeaseTtl parameter allows.
const (
	MinLeaseTTL = 15 * time.Second
	MaxLeaseTTL = 600 * time.Second
)

// Optional lists the ensure set's variables that have defaults.
var Optional = []string{EnvSecurityGroups, EnvCapacityProvider, EnvMaxSandboxes, EnvLeaseTTL,
	EnvPoolSize, EnvPoolMaxAge, EnvPoolFunction}

// Config is the ensure set.
type Config struct {
	Table        string
	Launcher     launcher.Config
	MaxSandboxes int
	LeaseTTL     time.Duration
	// PoolSize is the warm pool's size (0: no pool); PoolMaxAge the oldest a pool
	// task may be; PoolFunction the function that refills it (empty: only its
	// schedule does).
	PoolSize     int
	PoolMaxAge   time.Duration
	PoolFunction string
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
		PoolSize:     env.Int(EnvPoolSize, 0, 0, MaxPoolSize),
		PoolMaxAge:   env.Duration(EnvPoolMaxAge, DefaultPoolMaxAge),
		PoolFunction: env.String(EnvPoolFunction, ""),
	}
	if c.PoolMaxAge < MinPoolMaxAge || c.PoolMaxAge > MaxPoolMaxAge {
		env.Check(EnvPoolMaxAge, fmt.Errorf("want %s to %s, got %s", MinPoolMaxAge, MaxPoolMaxAge, c.PoolMaxAge))
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
	e := &Ensurer{Store: store, Launcher: l, Log: log}
	if c.PoolSize > 0 {
		e.Pool = &Pool{Store: store, TaskDefinition: c.Launcher.TaskDefinition, MaxAge: c.PoolMaxAge,
			Claimer: &agentapi.Client{}, Metrics: metrics.New(os.Stdout), Stage: metrics.StageOf(c.Launcher.ManagementEndpoint)}
		if c.PoolFunction != "" {
			e.Pool.Refill = &LambdaRefiller{Lambda: lambda.NewFromConfig(awsCfg), Function: c.PoolFunction}
		}
	}
	return e, store
}
