package authorizer

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/aws/aws-lambda-go/events"

	"github.com/sandgate/sandgate/internal/auth"
	"github.com/sandgate/sandgate/internal/config"
	"github.com/sandgate/sandgate/internal/logging"
	"github.com/sandgate/sandgate/internal/userid"
)

// Environment variables read by LoadConfig.
const (
	EnvSigningSecrets = "SIGNING_SECRETS"
	EnvMaxLifetime    = "SIGNATURE_MAX_LIFETIME"
	EnvClockSkew      = "SIGNATURE_CLOCK_SKEW"
	EnvLogLevel       = "LOG_LEVEL"
)

// Optional lists the variables LoadConfig reads that have defaults
// (auth.DefaultMaxLifetime, auth.DefaultClockSkew, INFO).
var Optional = []string{EnvMaxLifetime, EnvClockSkew, EnvLogLevel}

// ContextUserID is the authorizer context key that carries the verified user id to
// every route; nothing downstream parses the URL again.
const ContextUserID = "userId"

// Config is the authorizer's configuration.
type Config struct {
	Secrets     []string
	MaxLifetime time.Duration
	ClockSkew   time.Duration
	LogLevel    slog.Level
}

// LoadConfig reads the configuration from env. No secret, or a short one, is an error:
// the authorizer fails closed rather than admit anyone.
func LoadConfig(env *config.Env) Config {
	var c Config
	var err error
	c.Secrets, err = auth.ParseSecrets(env.Required(EnvSigningSecrets))
	env.Check(EnvSigningSecrets, err)
	c.MaxLifetime = env.Duration(EnvMaxLifetime, auth.DefaultMaxLifetime)
	c.ClockSkew = env.Duration(EnvClockSkew, auth.DefaultClockSkew)
	c.LogLevel = env.Level(EnvLogLevel, slog.LevelInfo)
	return c
}

// NewVerifier builds the verifier c describes.
func (c Config) NewVerifier() (*auth.Verifier, error) {
	v, err := auth.NewVerifier(c.Secrets)
	if err != nil {
		return nil, err
	}
	v.MaxLifetime, v.ClockSkew = c.MaxLifetime, c.ClockSkew
	return v, nil
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
	Verifier *auth.Verifier
	Log      *slog.Logger
}

// Handle returns an Allow policy for the $connect route with userId in the context,
// or a Deny policy. API Gateway refuses the handshake on Deny; the client learns
// nothing more, and the reason goes to the log only, never the signature.
func (h *Handler) Handle(ctx context.Context, req Request) (events.APIGatewayCustomAuthorizerResponse, error) {
	log := h.Log.With(logging.ConnectionID, req.RequestContext.ConnectionID)
	q := req.MultiValueQueryStringParameters
	if q == nil {
		q = make(map[string][]string, len(req.QueryStringParameters))
		for k, v := range req.QueryStringParameters {
			q[k] = []string{v}
		}
	}
	userID, err := h.Verifier.VerifyQuery(q)
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
	} {
		if errors.Is(err, r.err) {
			return r.name
		}
	}
	return "error"
}
