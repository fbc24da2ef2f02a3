package message

import (
	"log/slog"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/lambda"

	"github.com/sandgate/sandgate/internal/agentapi"
	"github.com/sandgate/sandgate/internal/config"
	"github.com/sandgate/sandgate/internal/notice"
	"github.com/sandgate/sandgate/internal/relay"
	"github.com/sandgate/sandgate/internal/state"
)

// Environment variables read by LoadConfig. None of the ensure set's ECS variables:
// this function starts no task; it asks the Connect function to.
const (
	EnvTable = "TABLE_NAME"
	// EnvManagementEndpoint is the WebSocket stage's management API, for error and
	// status frames to the sender.
	EnvManagementEndpoint = "MANAGEMENT_ENDPOINT"
	EnvLogLevel           = "LOG_LEVEL"
	EnvInboxMaxFrames     = "INBOX_MAX_FRAMES"
	EnvInboxMaxBytes      = "INBOX_MAX_BYTES"
	// EnvAgentTimeout bounds one call to the agent (seconds or a Go duration).
	EnvAgentTimeout = "AGENT_TIMEOUT"
	// EnvConnectFunction names the Connect function, which ensure and restart notices
	// invoke.
	EnvConnectFunction = "CONNECT_FUNCTION"
)

// Optional lists the variables LoadConfig reads that have defaults.
var Optional = []string{EnvLogLevel, EnvInboxMaxFrames, EnvInboxMaxBytes, EnvAgentTimeout}

// Config is the Message function's configuration.
type Config struct {
	Table              string
	ManagementEndpoint string
	InboxMaxFrames     int
	InboxMaxBytes      int
	AgentTimeout       time.Duration
	ConnectFunction    string
	LogLevel           slog.Level
}

// LoadConfig reads the configuration from env; problems are collected in env.
func LoadConfig(env *config.Env) Config {
	return Config{
		Table:              env.Required(EnvTable),
		ManagementEndpoint: env.Required(EnvManagementEndpoint),
		InboxMaxFrames:     env.Int(EnvInboxMaxFrames, state.DefaultInboxMaxItems, 1, 10000),
		InboxMaxBytes:      env.Int(EnvInboxMaxBytes, state.DefaultInboxMaxBytes, state.DefaultMaxMessageBytes, 64<<20),
		AgentTimeout:       env.Duration(EnvAgentTimeout, agentapi.DefaultTimeout),
		ConnectFunction:    env.Required(EnvConnectFunction),
		LogLevel:           env.Level(EnvLogLevel, slog.LevelInfo),
	}
}

// New builds the Handler c describes over the AWS configuration.
func New(c Config, awsCfg aws.Config, log *slog.Logger) *Handler {
	store := state.New(dynamodb.NewFromConfig(awsCfg), c.Table)
	store.Logger = log
	store.InboxMaxItems, store.InboxMaxBytes = c.InboxMaxFrames, c.InboxMaxBytes
	connect := lambda.NewFromConfig(awsCfg)
	return &Handler{
		Store:   store,
		Ensurer: &notice.Ensurer{API: connect, Function: c.ConnectFunction},
		// One client per process: connections to warm agents are reused.
		Agent:    &agentapi.Client{Timeout: c.AgentTimeout},
		Relay:    &relay.Relay{API: relay.NewClient(awsCfg, c.ManagementEndpoint), Conns: store, Log: log},
		Notifier: &notice.Notifier{API: connect, Function: c.ConnectFunction},
		Log:      log,
	}
}
