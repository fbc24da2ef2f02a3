package webhook

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	svix "github.com/svix/svix-webhooks/go"

	"github.com/sandgate/sandgate/internal/config"
	"github.com/sandgate/sandgate/internal/logging"
	"github.com/sandgate/sandgate/internal/secretcache"
	"github.com/sandgate/sandgate/internal/state"
)

// Environment variables read by LoadConfig.
const (
	EnvTable = "TABLE_NAME"
	// EnvSecretID names the Secrets Manager secret (its name or ARN, never its value)
	// whose SecretString is the endpoint's signing secret, whsec_…, as Clerk shows it.
	EnvSecretID = "WEBHOOK_SECRET_ID"
	// EnvEraseFunction is the function that deletes a user (invoked asynchronously).
	EnvEraseFunction  = "ERASE_FUNCTION"
	EnvSecretsRefresh = secretcache.EnvRefresh
	EnvLogLevel       = "LOG_LEVEL"
)

// Optional lists the variables LoadConfig reads that have defaults.
var Optional = []string{EnvSecretsRefresh, EnvLogLevel}

// Config is the webhook function's configuration.
type Config struct {
	Table, SecretID, EraseFunction string
	Refresh                        time.Duration
	LogLevel                       slog.Level
}

// LoadConfig reads the configuration from env; problems are collected in env.
func LoadConfig(env *config.Env) Config {
	c := Config{
		Table: env.Required(EnvTable), SecretID: env.Required(EnvSecretID), EraseFunction: env.Required(EnvEraseFunction),
		Refresh:  env.Duration(EnvSecretsRefresh, secretcache.DefaultRefresh),
		LogLevel: env.Level(EnvLogLevel, slog.LevelInfo),
	}
	if c.Refresh <= 0 || c.Refresh > time.Hour {
		env.Check(EnvSecretsRefresh, fmt.Errorf("%s is outside (0, 1h]", c.Refresh))
	}
	return c
}

// ParseSecret turns the secret's value into Svix's verifier: whsec_ and the base64 key.
// The error never holds the value.
func ParseSecret(v string) (*svix.Webhook, error) {
	v = strings.TrimSpace(v)
	if !strings.HasPrefix(v, "whsec_") {
		return nil, fmt.Errorf("the webhook secret does not start with whsec_ (copy it from the endpoint's page in Clerk)")
	}
	wh, err := svix.NewWebhook(v)
	if err != nil {
		return nil, fmt.Errorf("the webhook secret is not whsec_ and base64")
	}
	return wh, nil
}

// New builds the Handler c describes. The secret is read now and again every
// Refresh; one that cannot be read is logged, and requests are answered 503 until it
// can (Svix retries them).
func New(c Config, awsCfg aws.Config, log *slog.Logger) *Handler {
	keys := &secretcache.Cache[*svix.Webhook]{API: secretsmanager.NewFromConfig(awsCfg), SecretID: c.SecretID,
		Parse: ParseSecret, Refresh: c.Refresh, Log: log}
	if _, err := keys.Get(context.Background()); err != nil {
		log.Warn("webhook secret not read", logging.Error, err.Error())
	}
	store := state.New(dynamodb.NewFromConfig(awsCfg), c.Table)
	store.Logger = log
	return &Handler{Secret: keys, Messages: store,
		Eraser: &Invoker{API: lambda.NewFromConfig(awsCfg), Function: c.EraseFunction}, Log: log}
}
