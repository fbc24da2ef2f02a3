package auth

import (
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/sandgate/sandgate/internal/userid"
)

// Signed is one signed identity: the three query parameters of a connection URL.
type Signed struct {
	UserID string
	Exp    int64 // unix seconds
	Sig    string
}

// Query encodes s as a URL query string (without the leading "?").
func (s Signed) Query() string {
	// The order is fixed so that URLs are stable and easy to compare in logs of the
	// frontend (never ours: we do not log signatures).
	return ParamUserID + "=" + url.QueryEscape(s.UserID) +
		"&" + ParamExp + "=" + strconv.FormatInt(s.Exp, 10) +
		"&" + ParamSig + "=" + s.Sig
}

// Signer makes signed connection URLs. Frontends normally sign with the TypeScript
// signer in sdk/node; this one serves Go backends, tests and `make sign`.
type Signer struct {
	// TTL is how long a signed URL stays valid. Keep it within the verifier's
	// maximum lifetime (DefaultMaxLifetime).
	TTL time.Duration
	// Now returns the current time; tests replace it.
	Now func() time.Time

	key []byte
}

// NewSigner returns a Signer for secret, which must be at least MinSecretBytes long.
func NewSigner(secret string) (*Signer, error) {
	if err := checkSecrets([]string{secret}); err != nil {
		return nil, err
	}
	return &Signer{TTL: DefaultTTL, Now: time.Now, key: []byte(secret)}, nil
}

// Sign signs userID with an expiry of now + TTL.
func (s *Signer) Sign(userID string) (Signed, error) {
	if !userid.Valid(userID) {
		return Signed{}, fmt.Errorf("sign %q: %w", userID, ErrBadUserID)
	}
	exp := s.Now().Add(s.TTL).Unix()
	return Signed{UserID: userID, Exp: exp, Sig: Signature(s.key, userID, exp)}, nil
}

// SignURL appends a signed query for userID to base, for example
// wss://abc.execute-api.eu-west-1.amazonaws.com/prod.
func (s *Signer) SignURL(base, userID string) (string, error) {
	signed, err := s.Sign(userID)
	if err != nil {
		return "", err
	}
	sep := "?"
	if strings.Contains(base, "?") {
		sep = "&"
	}
	return base + sep + signed.Query(), nil
}
