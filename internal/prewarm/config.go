package prewarm

import (
	"context"
	"log/slog"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/sandgate/sandgate/internal/authorizer"
	"github.com/sandgate/sandgate/internal/config"
	"github.com/sandgate/sandgate/internal/ensure"
	"github.com/sandgate/sandgate/internal/metrics"
)

// Optional lists the variables LoadConfig reads that have defaults.
var Optional = append(append([]string{}, authorizer.Optional...), ensure.Optional...)

// Config is the Prewarm function's configuration: the verifier's (the authorizer's, so
// both check URLs alike) and the ensure set.
type Config struct {
	Auth    authorizer.Config
	Sandbox ensure.Config
}

// LoadConfig reads the configuration from env; problems are collected in env.
func LoadConfig(env *config.Env) Config {
	return Config{Auth: authorizer.LoadConfig(env), Sandbox: ensure.LoadConfig(env)}
}

// New builds the Handler c describes.
func New(c Config, awsCfg aws.Config, log *slog.Logger, m *metrics.Emitter) (*Handler, error) {
	v, err := c.Auth.NewRevokingVerifier(context.Background(), awsCfg, log)
	if err != nil {
		return nil, err
	}
	ens, _ := c.Sandbox.NewEnsurer(awsCfg, log)
	return &Handler{Verifier: v, Ensurer: ens, Metrics: m, Log: log}, nil
}
