package message

import (
	"log/slog"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/lambda"

	"github.com/sandgate/sandgate/internal/agentapi"
	"github.com/sandgate/sandgate/internal/config"
	"github.com/sandgate/sandgate/internal/metrics"
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
	// EnvMessageRateLimit is the frames per second one user may send (burst twice
	// that): the agent enforces it exactly, this function per process before any work.
	EnvMessageRateLimit = "MESSAGE_RATE_LIMIT"
	// EnvRateLimitCloseAfter is how many of one connection's frames a process refuses
	// for the rate, without a pause, before it closes the connection (0: never).
	EnvRateLimitCloseAfter = "RATE_LIMIT_CLOSE_AFTER"
)

// DefaultMessageRate is the agent's default MESSAGE_RATE_LIMIT (template.yaml's
// MessageRateLimit).
const DefaultMessageRate = 20

// Optional lists the variables LoadConfig reads that have defaults.
var Optional = []string{EnvLogLevel, EnvInboxMaxFrames, EnvInboxMaxBytes, EnvAgentTimeout, EnvMessageRateLimit, EnvRateLimitCloseAfter}

// Config is the Message function's configuration.
type Config struct {
	Table              string
	ManagementEndpoint string
	InboxMaxFrames     int
	InboxMaxBytes      int
	AgentTimeout       time.Duration
	ConnectFunction    string
	// MessageRate is the per-user frames per second (burst twice that).
	MessageRate         int
	RateLimitCloseAfter int
	LogLevel            slog.Level
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
		// The agent's bounds (internal/agent), so both agree.
		MessageRate:         env.Int(EnvMessageRateLimit, DefaultMessageRate, 1, 100000),
		RateLimitCloseAfter: env.Int(EnvRateLimitCloseAfter, DefaultRateLimitCloseAfter, 0, 1000000),
		LogLevel:            env.Level(EnvLogLevel, slog.LevelInfo),
	}
}

// New builds the Handler c describes over the AWS configuration.
func New(c Config, awsCfg aws.Config, log *slog.Logger, m *metrics.Emitter) *Handler {
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
		// The sandbox's agent holds the user's exact bucket; this one spares it (and
		// DynamoDB, and the inbox) the frames over the rate.
		FrameRate:           float64(c.MessageRate),
		RateLimitCloseAfter: c.RateLimitCloseAfter,
		Metrics:             m,
	}
}
