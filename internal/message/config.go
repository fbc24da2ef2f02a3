package message

import (
	"log/slog"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/lambda"

	"github.com/sandgate/sandgate/internal/agentapi"
	"github.com/sandgate/sandgate/internal/config"
	"github.com/sandgate/sandgate/internal/ensure"
	"github.com/sandgate/sandgate/internal/metrics"
	"github.com/sandgate/sandgate/internal/notice"
	"github.com/sandgate/sandgate/internal/relay"
	"github.com/sandgate/sandgate/internal/state"
)

// Environment variables read by LoadConfig, besides the ensure set.
const (
	EnvLogLevel       = "LOG_LEVEL"
	EnvInboxMaxFrames = "INBOX_MAX_FRAMES"
	EnvInboxMaxBytes  = "INBOX_MAX_BYTES"
	// EnvAgentTimeout bounds one call to the agent (seconds or a Go duration).
	EnvAgentTimeout = "AGENT_TIMEOUT"
	// EnvConnectFunction names the Connect function, which restart notices invoke.
	EnvConnectFunction = "CONNECT_FUNCTION"
)

// Optional lists the variables LoadConfig reads that have defaults.
var Optional = append([]string{EnvLogLevel, EnvInboxMaxFrames, EnvInboxMaxBytes, EnvAgentTimeout}, ensure.Optional...)

// Config is the Message function's configuration.
type Config struct {
	Sandbox         ensure.Config
	InboxMaxFrames  int
	InboxMaxBytes   int
	AgentTimeout    time.Duration
	ConnectFunction string
	LogLevel        slog.Level
}

// LoadConfig reads the configuration from env; problems are collected in env.
func LoadConfig(env *config.Env) Config {
	return Config{
		Sandbox:         ensure.LoadConfig(env),
		InboxMaxFrames:  env.Int(EnvInboxMaxFrames, state.DefaultInboxMaxItems, 1, 10000),
		InboxMaxBytes:   env.Int(EnvInboxMaxBytes, state.DefaultInboxMaxBytes, state.DefaultMaxMessageBytes, 64<<20),
		AgentTimeout:    env.Duration(EnvAgentTimeout, agentapi.DefaultTimeout),
		ConnectFunction: env.Required(EnvConnectFunction),
		LogLevel:        env.Level(EnvLogLevel, slog.LevelInfo),
	}
}

// New builds the Handler c describes over the AWS configuration.
func New(c Config, awsCfg aws.Config, log *slog.Logger, m *metrics.Emitter) *Handler {
	ens, store := c.Sandbox.NewEnsurer(awsCfg, log)
	store.InboxMaxItems, store.InboxMaxBytes = c.InboxMaxFrames, c.InboxMaxBytes
	return &Handler{
		Store:   store,
		Ensurer: ens,
		// One client per process: connections to warm agents are reused.
		Agent:    &agentapi.Client{Timeout: c.AgentTimeout},
		Relay:    &relay.Relay{API: relay.NewClient(awsCfg, c.Sandbox.Launcher.ManagementEndpoint), Conns: store, Log: log},
		Notifier: &notice.Notifier{API: lambda.NewFromConfig(awsCfg), Function: c.ConnectFunction},
		Metrics:  m,
		Log:      log,
	}
}
