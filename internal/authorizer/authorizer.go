package authorizer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/aws/aws-lambda-go/events"

	"github.com/sandgate/sandgate/internal/auth"
	"github.com/sandgate/sandgate/internal/config"
	"github.com/sandgate/sandgate/internal/logging"
	"github.com/sandgate/sandgate/internal/secretcache"
	"github.com/sandgate/sandgate/internal/userid"
)

// Environment variables read by LoadConfig.
const (
	// EnvSigningSecretID names the Secrets Manager secret (its name or ARN, not its
	// value) whose SecretString is the comma-separated list of signing secrets: the
	// first signs, all verify. The value is read at run time, never from the
	// environment, where anyone allowed lambda:GetFunctionConfiguration could read it.
	EnvSigningSecretID = "SIGNING_SECRET_ID"
	// EnvSecretsRefresh is how often the secret is read again (secretcache.DefaultRefresh).
	EnvSecretsRefresh = secretcache.EnvRefresh
	EnvMaxLifetime    = "SIGNATURE_MAX_LIFETIME"
	EnvClockSkew      = "SIGNATURE_CLOCK_SKEW"
	EnvLogLevel       = "LOG_LEVEL"
)

// Optional lists the variables LoadConfig reads that have defaults
// (secretcache.DefaultRefresh, auth.DefaultMaxLifetime, auth.DefaultClockSkew, INFO).
var Optional = []string{EnvSecretsRefresh, EnvMaxLifetime, EnvClockSkew, EnvLogLevel}

// ContextUserID is the authorizer context key that carries the verified user id to
// every route; nothing downstream parses the URL again.
const ContextUserID = "userId"

// Config is the authorizer's configuration.
type Config struct {
	// SecretID is the signing secrets' Secrets Manager secret.
	SecretID string
	// Table holds the users' revocations (NewRevokingVerifier).
	Table string
	// Refresh is how often the secret is read again.
	Refresh     time.Duration
	MaxLifetime time.Duration
	ClockSkew   time.Duration
	LogLevel    slog.Level
	// MaxStale bounds how long secrets read earlier serve while they cannot be read
	// again (secretcache.DefaultMaxStale when zero; not read from the environment).
	MaxStale time.Duration
	// Now is the verifier's clock (time.Now when nil); tests set it.
	Now func() time.Time
}

// LoadConfig reads the configuration from env; problems are collected in env.
func LoadConfig(env *config.Env) Config {
	var c Config
	c.SecretID = env.Required(EnvSigningSecretID)
	c.Table = env.Required(EnvTable)
	c.Refresh = env.Duration(EnvSecretsRefresh, secretcache.DefaultRefresh)
	if c.Refresh <= 0 || c.Refresh > time.Hour {
		env.Check(EnvSecretsRefresh, fmt.Errorf("%s is outside (0, 1h]", c.Refresh))
	}
	c.MaxLifetime = env.Duration(EnvMaxLifetime, auth.DefaultMaxLifetime)
	c.ClockSkew = env.Duration(EnvClockSkew, auth.DefaultClockSkew)
	c.LogLevel = env.Level(EnvLogLevel, slog.LevelInfo)
	return c
}

// ParseVerifier returns the verifier of the signing secret's value (the comma-separated
// list) under c's lifetime and skew. No secret, or a short one, is an error that never
// contains a secret.
func (c Config) ParseVerifier(list string) (*auth.Verifier, error) {
	secrets, err := auth.ParseSecrets(list)
	if err != nil {
		return nil, err
	}
	v, err := auth.NewVerifier(secrets)
	if err != nil {
		return nil, err
	}
	v.MaxLifetime, v.ClockSkew = c.MaxLifetime, c.ClockSkew
	if c.Now != nil {
		v.Now = c.Now
	}
	return v, nil
}

// NewVerifier reads the signing secrets from Secrets Manager and returns the verifier
// that keeps them current. It fails closed: a secret that cannot be read, or holds no
// usable secret, is an error, and the function does not start.
func (c Config) NewVerifier(ctx context.Context, api secretcache.API, log *slog.Logger) (*Verifier, error) {
	v := &Verifier{keys: &secretcache.Cache[*auth.Verifier]{
		API: api, SecretID: c.SecretID, Parse: c.ParseVerifier, Refresh: c.Refresh, MaxStale: c.MaxStale, Log: log,
	}}
	if _, err := v.keys.Get(ctx); err != nil {
		return nil, fmt.Errorf("signing secrets: %w", err)
	}
	return v, nil
}

// QueryVerifier verifies a signed query string (url.Values, or API Gateway's
// multiValueQueryStringParameters) and returns the verified user id.
type QueryVerifier interface {
	VerifyQuery(ctx context.Context, q map[string][]string) (string, error)
}

// Verifier verifies signed URLs with the signing secrets as Secrets Manager holds them
// now: read at start-up, read again every Refresh, so a rotation (put "new,old", then
// "new") reaches the functions within that time, without a deploy.
type Verifier struct {
	keys *secretcache.Cache[*auth.Verifier]
}

var _ QueryVerifier = (*Verifier)(nil)

// VerifyQuery verifies q with the current secrets. When they cannot be read (and the
// ones held are older than secretcache.DefaultMaxStale) the error is
// secretcache.ErrUnavailable: no one is admitted, and no URL is called bad for it.
func (v *Verifier) VerifyQuery(ctx context.Context, q map[string][]string) (string, error) {
	av, err := v.keys.Get(ctx)
	if err != nil {
		return "", err
	}
	return av.VerifyQuery(q)
}

// Static verifies with fixed secrets (tests and tools).
func Static(v *auth.Verifier) QueryVerifier { return static{v} }

type static struct{ v *auth.Verifier }

func (s static) VerifyQuery(_ context.Context, q map[string][]string) (string, error) {
	return s.v.VerifyQuery(q)
}

// Request is API Gateway's WebSocket REQUEST authorizer event. Its request context is
// the WebSocket one (with connectionId), which aws-lambda-go's REST-shaped authorizer
// type lacks; the outer field takes precedence when decoding.
type Request struct {
	events.APIGatewayCustomAuthorizerRequestTypeRequest
	RequestContext events.APIGatewayWebsocketProxyRequestContext `json:"requestContext"`
}

// Handler answers authorizer invocations.
type Handler struct {
	Verifier QueryVerifier
	Log      *slog.Logger
}

// Handle returns an Allow policy for the $connect route with userId in the context,
// or a Deny policy. API Gateway refuses the handshake on Deny; the client learns
// nothing more, and the reason goes to the log only, never the signature. Signing
// secrets that cannot be read fail the invocation (API Gateway answers 500) rather
// than call a good URL bad.
func (h *Handler) Handle(ctx context.Context, req Request) (events.APIGatewayCustomAuthorizerResponse, error) {
	log := h.Log.With(logging.ConnectionID, req.RequestContext.ConnectionID)
	q := req.MultiValueQueryStringParameters
	if q == nil {
		q = make(map[string][]string, len(req.QueryStringParameters))
		for k, v := range req.QueryStringParameters {
			q[k] = []string{v}
		}
	}
	userID, err := h.Verifier.VerifyQuery(ctx, q)
	if errors.Is(err, secretcache.ErrUnavailable) {
		log.ErrorContext(ctx, "connect not decided", logging.Reason, Reason(err), logging.Error, err.Error())
		return events.APIGatewayCustomAuthorizerResponse{}, err
	}
	if err != nil {
		attrs := []any{logging.Reason, Reason(err), logging.Error, err.Error()}
		// Name the user only when the id is well-formed: a refused id is attacker
		// input, and a 10 KB one has no place in a log line.
		if ids := q[auth.ParamUserID]; len(ids) == 1 && userid.Valid(ids[0]) {
			attrs = append(attrs, logging.UserID, ids[0])
		}
		log.WarnContext(ctx, "connect refused", attrs...)
		return policy("anonymous", "Deny", req.MethodArn, nil), nil
	}
	log.InfoContext(ctx, "connect authorized", logging.UserID, userID)
	return policy(userID, "Allow", req.MethodArn, map[string]any{ContextUserID: userID}), nil
}

func policy(principal, effect, resource string, ctx map[string]any) events.APIGatewayCustomAuthorizerResponse {
	return events.APIGatewayCustomAuthorizerResponse{
		PrincipalID: principal,
		PolicyDocument: events.APIGatewayCustomAuthorizerPolicy{
			Version: "2012-10-17",
			Statement: []events.IAMPolicyStatement{{
				Action:   []string{"execute-api:Invoke"},
				Effect:   effect,
				Resource: []string{resource},
			}},
		},
		Context: ctx,
	}
}

// Reason is a stable, low-cardinality name for a refusal of a signed URL, for log
// queries and alarms; every function that verifies URLs logs these.
func Reason(err error) string {
	for _, r := range []struct {
		err  error
		name string
	}{
		{auth.ErrMalformed, "malformed"},
		{auth.ErrBadUserID, "bad_user_id"},
		{auth.ErrExpired, "expired"},
		{auth.ErrTooFarAhead, "too_far_ahead"},
		{auth.ErrBadSignature, "bad_signature"},
		{auth.ErrRevoked, "revoked"},
		{secretcache.ErrUnavailable, "unavailable"},
	} {
		if errors.Is(err, r.err) {
			return r.name
		}
	}
	return "error"
}
