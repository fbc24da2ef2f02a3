package disconnect

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"

	"github.com/sandgate/sandgate/internal/agentapi"
	"github.com/sandgate/sandgate/internal/config"
	"github.com/sandgate/sandgate/internal/logging"
	"github.com/sandgate/sandgate/internal/state"
	"github.com/sandgate/sandgate/internal/wsroute"
)

// Environment variables read by LoadConfig.
const (
	EnvTable    = "TABLE_NAME"
	EnvLogLevel = "LOG_LEVEL"
)

// Optional lists the variables LoadConfig reads that have defaults.
var Optional = []string{EnvLogLevel}

// Config is the Disconnect function's configuration.
type Config struct {
	Table    string
	LogLevel slog.Level
}

// LoadConfig reads the configuration from env; problems are collected in env.
func LoadConfig(env *config.Env) Config {
	return Config{Table: env.Required(EnvTable), LogLevel: env.Level(EnvLogLevel, slog.LevelInfo)}
}

// New builds the Handler c describes over the AWS configuration.
func New(c Config, awsCfg aws.Config, log *slog.Logger) *Handler {
	store := state.New(dynamodb.NewFromConfig(awsCfg), c.Table)
	store.Logger = log
	return &Handler{Store: store, Agent: &agentapi.Client{}, Log: log}
}

// Log keys of this package; the shared ones come from internal/logging.
const (
	logStatusCode = "disconnectStatusCode" // the close code API Gateway reports
	logAgent      = "agent"                // whether the agent was told: told, unreachable, none
)

// Store is the part of the state store the Handler uses.
type Store interface {
	RemoveConnection(ctx context.Context, userID, connectionID string) error
	ReleaseConnection(ctx context.Context, userID, connectionID string) error
	Get(ctx context.Context, userID string) (*state.Sandbox, error)
}

// Agent is the part of the agent API client the Handler uses.
type Agent interface {
	Close(ctx context.Context, t agentapi.Target, connectionID string) error
}

var (
	_ Store = (*state.Store)(nil)
	_ Agent = (*agentapi.Client)(nil)
)

// Handler serves the Disconnect function. API Gateway does not guarantee $disconnect,
// so nothing depends on it: a connection record it misses is removed by the next post
// that meets 410, or by its TTL, and an agent closes upstreams whose client is gone.
type Handler struct {
	Store Store
	Agent Agent
	Log   *slog.Logger
}

// Handle removes the connection's record and tells the agent, if one runs. It
// answers 200 (API Gateway ignores the answer) except to an event without an
// authorized user, which is refused with 500 before anything is written.
func (h *Handler) Handle(ctx context.Context, ev events.APIGatewayWebsocketProxyRequest) (events.APIGatewayProxyResponse, error) {
	rc := ev.RequestContext
	caller, err := wsroute.Identify(rc)
	if err == nil && rc.EventType != "DISCONNECT" {
		err = fmt.Errorf("not a $disconnect event: route %q, event type %q", rc.RouteKey, rc.EventType)
	}
	if err != nil {
		h.Log.ErrorContext(ctx, "disconnect refused", logging.ConnectionID, rc.ConnectionID, logging.Error, err.Error())
		return wsroute.Refused(), nil
	}
	log := h.Log.With(logging.UserID, caller.UserID, logging.ConnectionID, caller.ConnectionID)
	if err := h.Store.RemoveConnection(ctx, caller.UserID, caller.ConnectionID); err != nil {
		log.ErrorContext(ctx, "remove connection failed", logging.Error, err.Error())
	}
	// It no longer counts against the user's cap, and a connect notice still retrying
	// its first post sees it gone and stops.
	if err := h.Store.ReleaseConnection(ctx, caller.UserID, caller.ConnectionID); err != nil {
		log.ErrorContext(ctx, "release connection failed", logging.Error, err.Error())
	}
	agent := "none"
	sb, err := h.Store.Get(ctx, caller.UserID)
	switch {
	case errors.Is(err, state.ErrNotFound):
	case err != nil:
		log.WarnContext(ctx, "read sandbox failed", logging.Error, err.Error())
	case sb.Endpoint != "" && (sb.State == state.Running || sb.State == state.Stopping):
		t := agentapi.Target{Endpoint: sb.Endpoint, Token: sb.GatewayToken, UserID: sb.UserID}
		if err := h.Agent.Close(ctx, t, caller.ConnectionID); err != nil {
			agent = "unreachable"
			log.WarnContext(ctx, "agent close failed", logging.Error, err.Error())
		} else {
			agent = "told"
		}
	}
	log.InfoContext(ctx, "disconnected", logStatusCode, rc.DisconnectStatusCode, logAgent, agent)
	return wsroute.OK(), nil
}
