package status

import (
	"log/slog"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"

	"github.com/sandgate/sandgate/internal/authorizer"
	"github.com/sandgate/sandgate/internal/config"
	"github.com/sandgate/sandgate/internal/ensure"
	"github.com/sandgate/sandgate/internal/metrics"
	"github.com/sandgate/sandgate/internal/state"
)

// EnvTable names the table (the Status function's; Prewarm reads it with the ensure set).
const EnvTable = ensure.EnvTable

// StatusOptional and PrewarmOptional list the variables the loaders read that have
// defaults.
var (
	StatusOptional  = authorizer.Optional
	PrewarmOptional = append(append([]string{}, authorizer.Optional...), ensure.Optional...)
)

// StatusConfig is the Status function's configuration: the verifier's (the
// authorizer's, so both check URLs alike) and the table.
type StatusConfig struct {
	Auth  authorizer.Config
	Table string
}

// LoadStatusConfig reads the Status function's configuration; problems are collected in env.
func LoadStatusConfig(env *config.Env) StatusConfig {
	return StatusConfig{Auth: authorizer.LoadConfig(env), Table: env.Required(EnvTable)}
}

// PrewarmConfig is the Prewarm function's configuration: the verifier's and the ensure set.
type PrewarmConfig struct {
	Auth    authorizer.Config
	Sandbox ensure.Config
}

// LoadPrewarmConfig reads the Prewarm function's configuration; problems are collected in env.
func LoadPrewarmConfig(env *config.Env) PrewarmConfig {
	return PrewarmConfig{Auth: authorizer.LoadConfig(env), Sandbox: ensure.LoadConfig(env)}
}

// NewStatus builds the Status handler c describes.
func NewStatus(c StatusConfig, awsCfg aws.Config, log *slog.Logger) (*StatusHandler, error) {
	v, err := c.Auth.NewVerifier()
	if err != nil {
		return nil, err
	}
	store := state.New(dynamodb.NewFromConfig(awsCfg), c.Table)
	store.Logger = log
	return &StatusHandler{Verifier: v, Store: store, Log: log}, nil
}

// NewPrewarm builds the Prewarm handler c describes.
func NewPrewarm(c PrewarmConfig, awsCfg aws.Config, log *slog.Logger, m *metrics.Emitter) (*PrewarmHandler, error) {
	v, err := c.Auth.NewVerifier()
	if err != nil {
		return nil, err
	}
	ens, _ := c.Sandbox.NewEnsurer(awsCfg, log)
	return &PrewarmHandler{Verifier: v, Ensurer: ens, Metrics: m, Log: log}, nil
}
