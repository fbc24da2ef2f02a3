package auth

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/sandgate/sandgate/sdk/go/sign"
)

// Query parameter names, fixed by the URL format.
const (
	ParamUserID = sign.ParamUserID
	ParamExp    = sign.ParamExp
	ParamSig    = sign.ParamSig
)

// Defaults for a Verifier.
const (
	// DefaultMaxLifetime bounds how far ahead of now an exp may lie, so a leaked URL
	// is useful for minutes, not months.
	DefaultMaxLifetime = 15 * time.Minute
	// DefaultClockSkew tolerates the signer's clock running a little apart from ours.
	DefaultClockSkew = 30 * time.Second
	// DefaultTTL is how long a URL made by a Signer lives.
	DefaultTTL = sign.DefaultTTL
	// MinSecretBytes is the shortest secret accepted: an HMAC key shorter than this
	// can be brute-forced offline from one captured URL.
	MinSecretBytes = sign.MinSecretBytes
)

// Errors returned by Verify. Each names why a URL was refused; callers log the reason
// and tell the client nothing more than that it was refused.
var (
	ErrMalformed    = errors.New("malformed signed parameters")
	ErrBadUserID    = sign.ErrBadUserID
	ErrExpired      = errors.New("signature expired")
	ErrTooFarAhead  = errors.New("expiry beyond maximum lifetime")
	ErrBadSignature = errors.New("signature mismatch")
)

// Configuration errors. A service with no usable secret refuses to start.
var (
	ErrNoSecret   = sign.ErrNoSecret
	ErrWeakSecret = sign.ErrWeakSecret
)

// Signature returns the URL signature for userID and exp under secret:
// base64url without padding of HMAC-SHA256(secret, userID + "." + exp).
func Signature(secret []byte, userID string, exp int64) string {
	return sign.Signature(secret, userID, exp)
}

func mac(key []byte, userID, exp string) []byte { return sign.MAC(key, userID, exp) }

// ParseSecrets splits a comma-separated secret list (the SIGNING_SECRETS format),
// trimming spaces around each. It fails closed: no secret, or any secret shorter than
// MinSecretBytes, is an error.
func ParseSecrets(list string) ([]string, error) {
	var secrets []string
	for i, s := range strings.Split(list, ",") {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		if len(s) < MinSecretBytes {
			// Say which position is weak, never the secret itself.
			return nil, fmt.Errorf("secret %d: %w", i+1, ErrWeakSecret)
		}
		secrets = append(secrets, s)
	}
	if len(secrets) == 0 {
		return nil, ErrNoSecret
	}
	return secrets, nil
}

func checkSecrets(secrets []string) error {
	if len(secrets) == 0 {
		return ErrNoSecret
	}
	for i, s := range secrets {
		if len(s) < MinSecretBytes {
			return fmt.Errorf("secret %d: %w", i+1, ErrWeakSecret)
		}
	}
	return nil
}
