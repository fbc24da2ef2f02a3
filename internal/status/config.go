package status

import (
	"context"
	"log/slog"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"

	"github.com/sandgate/sandgate/internal/authorizer"
	"github.com/sandgate/sandgate/internal/config"
	"github.com/sandgate/sandgate/internal/ensure"
	"github.com/sandgate/sandgate/internal/state"
)

// EnvTable names the table.
const EnvTable = ensure.EnvTable

// Optional lists the variables LoadConfig reads that have defaults.
var Optional = authorizer.Optional

// Config is the Status function's configuration: the verifier's (the authorizer's, so
// both check URLs alike) and the table.
type Config struct {
	Auth  authorizer.Config
	Table string
}

// LoadConfig reads the configuration from env; problems are collected in env.
func LoadConfig(env *config.Env) Config {
	return Config{Auth: authorizer.LoadConfig(env), Table: env.Required(EnvTable)}
}

// New builds the Handler c describes.
func New(c Config, awsCfg aws.Config, log *slog.Logger) (*Handler, error) {
	v, err := c.Auth.NewRevokingVerifier(context.Background(), awsCfg, log)
	if err != nil {
		return nil, err
	}
	store := state.New(dynamodb.NewFromConfig(awsCfg), c.Table)
	store.Logger = log
	return &Handler{Verifier: v, Store: store, Log: log}, nil
}
