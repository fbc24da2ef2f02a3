package authorizer

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"

	"github.com/sandgate/sandgate/internal/auth"
	"github.com/sandgate/sandgate/internal/secretcache"
	"github.com/sandgate/sandgate/internal/state"
)

// EnvTable names the table whose access items hold the users' revocations.
const EnvTable = "TABLE_NAME"

// Revocations reads a user's revocation time; *state.Store is one.
type Revocations interface {
	NotBefore(ctx context.Context, userID string) (time.Time, error)
}

var _ Revocations = (*state.Store)(nil)

// Revoking verifies as Verifier does, then refuses a URL its user's revocation covers
// (auth.MayPredate: signed, as far as its exp tells, before the revocation) with
// auth.ErrRevoked. It costs one strongly consistent GetItem per verification, on the
// connect and the HTTP API only: frames on an open connection are never verified again,
// and a revocation closes the user's connections itself.
type Revoking struct {
	Verifier    QueryVerifier
	Revocations Revocations
	// MaxLifetime and ClockSkew are the verifier's.
	MaxLifetime, ClockSkew time.Duration
}

// VerifyQuery returns the verified user id, or why the URL is refused. A revocation
// that cannot be read is secretcache.ErrUnavailable, as unreadable secrets are: no one
// is admitted, and no URL is called bad for it.
func (r *Revoking) VerifyQuery(ctx context.Context, q map[string][]string) (string, error) {
	userID, err := r.Verifier.VerifyQuery(ctx, q)
	if err != nil {
		return "", err
	}
	nb, err := r.Revocations.NotBefore(ctx, userID)
	if err != nil {
		return "", fmt.Errorf("%w: revocation of %s not read: %w", secretcache.ErrUnavailable, userID, err)
	}
	if nb.IsZero() {
		return userID, nil
	}
	// Verified: exactly one exp, plain digits.
	exp, err := strconv.ParseInt(q[auth.ParamExp][0], 10, 64)
	if err != nil {
		return "", fmt.Errorf("%w: %w", auth.ErrMalformed, err)
	}
	if auth.MayPredate(exp, nb, r.MaxLifetime, r.ClockSkew) {
		return "", fmt.Errorf("%w: user revoked at %s", auth.ErrRevoked, nb.UTC().Format(time.RFC3339Nano))
	}
	return userID, nil
}

// NewRevokingVerifier is NewVerifier, checking each verified URL against its user's
// revocation in c.Table as well (Revoking).
func (c Config) NewRevokingVerifier(ctx context.Context, awsCfg aws.Config, log *slog.Logger) (QueryVerifier, error) {
	v, err := c.NewVerifier(ctx, secretsmanager.NewFromConfig(awsCfg), log)
	if err != nil {
		return nil, err
	}
	store := state.New(dynamodb.NewFromConfig(awsCfg), c.Table)
	store.Logger = log
	return &Revoking{Verifier: v, Revocations: store, MaxLifetime: c.MaxLifetime, ClockSkew: c.ClockSkew}, nil
}
