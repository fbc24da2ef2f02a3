package agent

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/url"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/sandgate/sandgate/internal/agentapi"
	"github.com/sandgate/sandgate/internal/apiproxy"
	"github.com/sandgate/sandgate/internal/config"
	"github.com/sandgate/sandgate/internal/s3bucket"
	"github.com/sandgate/sandgate/internal/taskenv"
	"github.com/sandgate/sandgate/internal/userid"
	"github.com/sandgate/sandgate/internal/workload"
)

// Variables the task definition sets (template.yaml), beside the storage options
// s3bucket.LoadOptions reads.
const (
	EnvPort             = "AGENT_PORT"
	EnvSleepAfter       = "SLEEP_AFTER"
	EnvMaxLifetime      = "MAX_LIFETIME"
	EnvSyncInterval     = "SYNC_INTERVAL"
	EnvLeaseTTL         = "LEASE_TTL"
	EnvCommand          = "SANDBOX_COMMAND"
	EnvDataDir          = "DATA_DIR"
	EnvMessageRateLimit = "MESSAGE_RATE_LIMIT"
	EnvLogLevel         = "LOG_LEVEL"
	// Optional: read with a default that suits the template's StopTimeout of 120 s.
	EnvStopTimeout   = "STOP_TIMEOUT"
	EnvWorkloadGrace = "WORKLOAD_GRACE"
	// The workload's identity, environment and limits (internal/workload's defaults).
	EnvWorkloadUID          = "WORKLOAD_UID"
	EnvWorkloadGID          = "WORKLOAD_GID"
	EnvWorkloadEnv          = "WORKLOAD_ENV" // NAME1,NAME2: the agent's variables the workload also gets
	EnvWorkloadMaxProcs     = "WORKLOAD_MAX_PROCS"
	EnvWorkloadMaxFiles     = "WORKLOAD_MAX_FILES"
	EnvWorkloadAddressSpace = "WORKLOAD_MAX_ADDRESS_SPACE_MB" // 0 or unset: no RLIMIT_AS
	// EnvMetadataURI is set by ECS (Fargate platform 1.4.0 and later) in every container.
	EnvMetadataURI = "ECS_CONTAINER_METADATA_URI_V4"
	// The function URLs of the credential vendor (asked with the task role, the one
	// thing the task role may do) and of the relay (reached with the scoped
	// credentials): LoadServices reads them.
	EnvVendURL  = "VEND_URL"
	EnvRelayURL = "RELAY_URL"
)

// Optional lists the variables LoadConfig reads with a default that the task
// definition need not set; SANDBOX_COMMAND is there because empty means the demo.
var Optional = append([]string{EnvStopTimeout, EnvWorkloadGrace, EnvCommand,
	s3bucket.EnvAccessKeyID, s3bucket.EnvSecretAccessKey,
	EnvWorkloadUID, EnvWorkloadGID, EnvWorkloadEnv, EnvWorkloadMaxProcs, EnvWorkloadMaxFiles, EnvWorkloadAddressSpace,
	apiproxy.EnvUpstreams},
	workload.PassThrough...)

// PerTask lists the variables that come from RunTask overrides (internal/taskenv) and
// Platform those ECS itself injects: neither belongs in the task definition. The agent
// no longer reads taskenv.ManagementEndpoint (its replies go through the relay), but a
// launcher may still set it: it stays here, never to be declared for the workload.
var (
	PerTask = []string{taskenv.UserID, taskenv.LeaseToken, taskenv.Generation, taskenv.Table,
		taskenv.Bucket, taskenv.Prefix, taskenv.ManagementEndpoint, taskenv.PoolID}
	Platform = []string{EnvMetadataURI}
)

// Defaults of the configuration.
const (
	DefaultPort         = 8080
	DefaultSleepAfter   = 10 * time.Minute
	DefaultMaxLifetime  = 8 * time.Hour
	DefaultSyncInterval = 30 * time.Second
	DefaultLeaseTTL     = 60 * time.Second
	DefaultDataDir      = "data"
	// DefaultMessageRate is frames per second per user, as template.yaml's
	// MessageRateLimit; the burst is twice the rate.
	DefaultMessageRate = 20
	// DefaultStopTimeout leaves 10 s of the task definition's 120 s StopTimeout, so
	// the agent has exited when ECS would SIGKILL it.
	DefaultStopTimeout = 110 * time.Second
	// DefaultWorkloadGrace is how long the workload may flush after SIGTERM.
	DefaultWorkloadGrace = 10 * time.Second

	// MinLeaseTTL keeps heartbeats (every third of the TTL) at least a second apart.
	MinLeaseTTL = 3 * time.Second
	// MaxLeaseTTL matches the template's LeaseTtl MaxValue.
	MaxLeaseTTL = 10 * time.Minute
	// MinSyncInterval keeps periodic syncs from hammering the store.
	MinSyncInterval = time.Second
	// MinStopTimeout leaves room for a flush, the workload's grace and a final sync.
	MinStopTimeout = 2 * time.Second
)

// The directories under DATA_DIR: the user's files, and the agent's own state (the
// sync manifest), which must lie outside them.
const (
	WorkspaceDir = "workspace"
	StateDir     = ".sandgate"
)

// Config is the agent's configuration, read once at start-up.
type Config struct {
	// From RunTask overrides, or for a pool task from its claim (Claimed).
	UserID        string
	LeaseToken    string
	Generation    int64
	Table, Bucket string
	Prefix        string
	// PoolID is set for a warm pool task (taskenv.PoolID): it starts with no user,
	// waits for a claim (PoolWait) and takes the user from it (Claimed).
	PoolID string
	// From the platform.
	MetadataURI string
	// From the task definition.
	Port          int
	SleepAfter    time.Duration
	MaxLifetime   time.Duration
	SyncInterval  time.Duration
	LeaseTTL      time.Duration
	StopTimeout   time.Duration
	WorkloadGrace time.Duration
	// Command is SANDBOX_COMMAND split on spaces; empty runs the built-in demo.
	Command []string
	// WorkloadUID and WorkloadGID are the workload's credentials (never 0).
	WorkloadUID, WorkloadGID uint32
	// WorkloadEnv is the workload's environment beside what internal/workload sets:
	// the pass-through variables that are set, then the names WORKLOAD_ENV declares
	// that are set, as NAME=value.
	WorkloadEnv []string
	// WorkloadLimits are the workload's resource limits and nice value.
	WorkloadLimits workload.Limits
	// Upstreams are the APIs the agent proxies for the workload, adding the team's
	// key (apiproxy.LoadUpstreams: UPSTREAMS, UPSTREAM_<NAME>_*).
	Upstreams []apiproxy.Upstream
	// DataDir is DATA_DIR made absolute.
	DataDir     string
	MessageRate int
	LogLevel    slog.Level
	Storage     s3bucket.Options
}

// Workspace is the user's files: the workload's working directory.
func (c Config) Workspace() string { return filepath.Join(c.DataDir, WorkspaceDir) }

// StatePath is where the sync manifest lives, outside the workspace.
func (c Config) StatePath() string { return filepath.Join(c.DataDir, StateDir) }

// Heartbeat is how often the lease is renewed: a third of its TTL.
func (c Config) Heartbeat() time.Duration { return c.LeaseTTL / 3 }

// LoadConfig reads the agent's configuration from env and validates it; env.Err()
// then reports every problem at once. Relative DATA_DIR paths are resolved against the
// working directory.
func LoadConfig(env *config.Env) Config {
	var c Config
	c.PoolID = env.String(taskenv.PoolID, "")
	if c.PoolID != "" {
		// A pool task has no user until it is claimed: one that names a user was not
		// started as the launcher starts pool tasks, and is refused.
		for _, name := range []string{taskenv.UserID, taskenv.LeaseToken, taskenv.Generation, taskenv.Prefix} {
			if env.String(name, "") != "" {
				env.Check(name, fmt.Errorf("set on a pool task (%s): a pool task takes its user from its claim", taskenv.PoolID))
			}
		}
	} else {
		c.UserID = env.Required(taskenv.UserID)
		if c.UserID != "" && !userid.Valid(c.UserID) {
			env.Check(taskenv.UserID, fmt.Errorf("%q is not a valid user id", c.UserID))
		}
		c.LeaseToken = env.Required(taskenv.LeaseToken)
		if len(c.LeaseToken) > 256 {
			env.Check(taskenv.LeaseToken, errors.New("longer than 256 bytes"))
		}
		c.Generation = int64(env.Int(taskenv.Generation, 0, 1, math.MaxInt))
		if c.Generation == 0 {
			env.Check(taskenv.Generation, errors.New("required: the lease generation, at least 1"))
		}
		c.Prefix = env.Required(taskenv.Prefix)
		if c.Prefix != "" && c.UserID != "" && c.Prefix != taskenv.UserPrefix(c.UserID) {
			// Never sync one user's files under another's prefix.
			env.Check(taskenv.Prefix, fmt.Errorf("%q is not the prefix of %s (%s)", c.Prefix, c.UserID, taskenv.UserPrefix(c.UserID)))
		}
	}
	c.Table = env.Required(taskenv.Table)
	c.Bucket = env.Required(taskenv.Bucket)
	c.MetadataURI = env.Required(EnvMetadataURI)
	if c.MetadataURI != "" {
		env.Check(EnvMetadataURI, checkURL(c.MetadataURI))
	}

	c.Port = env.Int(EnvPort, DefaultPort, 1, 65535)
	c.SleepAfter = env.Duration(EnvSleepAfter, DefaultSleepAfter)
	c.MaxLifetime = env.Duration(EnvMaxLifetime, DefaultMaxLifetime)
	c.SyncInterval = env.Duration(EnvSyncInterval, DefaultSyncInterval)
	if c.SyncInterval < MinSyncInterval {
		env.Check(EnvSyncInterval, fmt.Errorf("%s is under the minimum of %s", c.SyncInterval, MinSyncInterval))
	}
	c.LeaseTTL = env.Duration(EnvLeaseTTL, DefaultLeaseTTL)
	if c.LeaseTTL < MinLeaseTTL || c.LeaseTTL > MaxLeaseTTL {
		env.Check(EnvLeaseTTL, fmt.Errorf("%s is outside [%s, %s]", c.LeaseTTL, MinLeaseTTL, MaxLeaseTTL))
	}
	c.StopTimeout = env.Duration(EnvStopTimeout, DefaultStopTimeout)
	if c.StopTimeout < MinStopTimeout {
		env.Check(EnvStopTimeout, fmt.Errorf("%s is under the minimum of %s", c.StopTimeout, MinStopTimeout))
	}
	c.WorkloadGrace = env.Duration(EnvWorkloadGrace, DefaultWorkloadGrace)
	if c.WorkloadGrace > c.StopTimeout/2 {
		env.Check(EnvWorkloadGrace, fmt.Errorf("%s is more than half of %s %s: the final sync needs the rest", c.WorkloadGrace, EnvStopTimeout, c.StopTimeout))
	}
	c.Command = workload.ParseCommand(env.String(EnvCommand, ""))
	loadWorkload(env, &c)
	c.Upstreams = apiproxy.LoadUpstreams(env)
	dir := env.String(EnvDataDir, DefaultDataDir)
	abs, err := filepath.Abs(dir)
	env.Check(EnvDataDir, err)
	c.DataDir = abs
	c.MessageRate = env.Int(EnvMessageRateLimit, DefaultMessageRate, 1, 100000)
	c.LogLevel = env.Level(EnvLogLevel, slog.LevelInfo)
	c.Storage = s3bucket.LoadOptions(env)
	return c
}

// Claimed returns a pool task's configuration for the user its claim names: the
// claim's user, lease token and generation, and that user's prefix. The claim is
// believed only once the credential vendor has checked it against the user's record.
func (c Config) Claimed(claim agentapi.Claim) (Config, error) {
	if c.PoolID == "" {
		return Config{}, errors.New("a claim for a task that is not a pool task")
	}
	if err := claim.Validate(); err != nil {
		return Config{}, err
	}
	c.UserID, c.LeaseToken, c.Generation = claim.UserID, claim.LeaseToken, claim.Generation
	c.Prefix = taskenv.UserPrefix(claim.UserID)
	return c, nil
}

// MaxID is the highest uid or gid the workload may be given: (uid_t)-1 means "none".
const MaxID = math.MaxUint32 - 1

// loadWorkload reads the workload's identity, limits and environment.
func loadWorkload(env *config.Env, c *Config) {
	c.WorkloadUID = uint32(env.Int(EnvWorkloadUID, workload.DefaultUID, 1, MaxID))
	c.WorkloadGID = uint32(env.Int(EnvWorkloadGID, workload.DefaultGID, 1, MaxID))
	c.WorkloadLimits = workload.Limits{
		Procs: uint64(env.Int(EnvWorkloadMaxProcs, workload.DefaultMaxProcs, 16, 1<<22)),
		Files: uint64(env.Int(EnvWorkloadMaxFiles, workload.DefaultMaxFiles, 64, 1<<20)),
		Nice:  workload.DefaultNice,
	}
	c.WorkloadLimits.AddressSpace = uint64(env.Int(EnvWorkloadAddressSpace, 0, 0, 1<<30)) << 20
	c.WorkloadEnv = nil
	for _, name := range workload.PassThrough {
		def := ""
		if name == "PATH" {
			def = workload.DefaultPath
		}
		if v := env.String(name, def); v != "" {
			c.WorkloadEnv = append(c.WorkloadEnv, name+"="+v)
		}
	}
	for _, name := range env.List(EnvWorkloadEnv) {
		if err := checkDeclared(name); err != nil {
			env.Check(EnvWorkloadEnv, err)
			continue
		}
		if slices.Contains(workload.PassThrough, name) {
			continue
		}
		if v := env.String(name, ""); v != "" {
			c.WorkloadEnv = append(c.WorkloadEnv, name+"="+v)
		}
	}
}

var envName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// neverDeclared are the agent's own secrets and credentials, and what points at them:
// a team that declares one of them by mistake is refused, not obeyed.
var neverDeclared = []string{
	s3bucket.EnvAccessKeyID, s3bucket.EnvSecretAccessKey,
	"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
	"AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
	"AWS_CONTAINER_AUTHORIZATION_TOKEN", "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
	"ECS_CONTAINER_METADATA_URI", EnvMetadataURI,
}

// checkDeclared refuses a name the workload must not be given: not a variable name,
// one of the agent's secrets or per-task variables (the lease token among them), or
// one internal/workload sets itself.
func checkDeclared(name string) error {
	switch {
	case !envName.MatchString(name):
		return fmt.Errorf("%q is not a variable name", name)
	case slices.Contains(neverDeclared, name) || slices.Contains(PerTask, name) || apiproxy.IsKeyVar(name):
		return fmt.Errorf("%s is the agent's, never the workload's", name)
	case name == EnvWorkloadActivityURL || name == EnvWorkloadSleepAfter || strings.HasPrefix(name, "SANDGATE_UPSTREAM_"):
		return fmt.Errorf("%s is set by the agent for the workload", name)
	case slices.Contains(workload.Own, name):
		return fmt.Errorf("%s is set by the agent for the workload", name)
	}
	return nil
}

// Services are the function URLs the agent reaches its services at (the task
// definition's VEND_URL and RELAY_URL).
type Services struct {
	VendURL, RelayURL string
}

// LoadServices reads the services' URLs from env; problems are collected in env.
func LoadServices(env *config.Env) Services {
	s := Services{VendURL: env.Required(EnvVendURL), RelayURL: env.Required(EnvRelayURL)}
	for name, u := range map[string]string{EnvVendURL: s.VendURL, EnvRelayURL: s.RelayURL} {
		if u != "" {
			env.Check(name, checkURL(u))
		}
	}
	return s
}

// HealthConfig is what `sandgate-agent healthcheck` needs: the agent's port and the
// metadata endpoint it learns its address from.
type HealthConfig struct {
	Port        int
	MetadataURI string
}

// LoadHealthConfig reads the health check's configuration from env.
func LoadHealthConfig(env *config.Env) HealthConfig {
	h := HealthConfig{
		Port:        env.Int(EnvPort, DefaultPort, 1, 65535),
		MetadataURI: env.Required(EnvMetadataURI),
	}
	if h.MetadataURI != "" {
		env.Check(EnvMetadataURI, checkURL(h.MetadataURI))
	}
	return h
}

func checkURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return err
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("%q is not an http(s) URL", s)
	}
	return nil
}
