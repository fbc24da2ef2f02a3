package auth

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"strconv"
	"time"

	"github.com/sandgate/sandgate/internal/userid"
)

// maxExpDigits bounds exp before parsing: unix seconds have 10 digits until 2286.
const maxExpDigits = 12

// sigLen is the length of an unpadded base64url HMAC-SHA256.
var sigLen = base64.RawURLEncoding.EncodedLen(sha256.Size)

// Verifier checks signed connection URLs against every active secret.
type Verifier struct {
	// MaxLifetime is how far ahead of now an exp may lie (DefaultMaxLifetime).
	MaxLifetime time.Duration
	// ClockSkew is tolerated on both bounds (DefaultClockSkew).
	ClockSkew time.Duration
	// Now returns the current time; tests replace it.
	Now func() time.Time

	keys [][]byte
}

// NewVerifier returns a Verifier that accepts a signature made with any of secrets.
// It fails closed: no secret, or a secret shorter than MinSecretBytes, is an error.
func NewVerifier(secrets []string) (*Verifier, error) {
	if err := checkSecrets(secrets); err != nil {
		return nil, err
	}
	v := &Verifier{MaxLifetime: DefaultMaxLifetime, ClockSkew: DefaultClockSkew, Now: time.Now}
	for _, s := range secrets {
		v.keys = append(v.keys, []byte(s))
	}
	return v, nil
}

// VerifyQuery verifies the userId, exp and sig parameters of a parsed query string
// (url.Values, or API Gateway's multiValueQueryStringParameters) and returns the
// verified user id. A missing or repeated parameter is ErrMalformed: a repeated one
// could otherwise mean different things to us and to whatever parsed it first.
func (v *Verifier) VerifyQuery(q map[string][]string) (string, error) {
	var vals [3]string
	for i, name := range [...]string{ParamUserID, ParamExp, ParamSig} {
		switch len(q[name]) {
		case 0:
			return "", fmt.Errorf("%w: missing %s", ErrMalformed, name)
		case 1:
			vals[i] = q[name][0]
		default:
			return "", fmt.Errorf("%w: repeated %s", ErrMalformed, name)
		}
	}
	if err := v.Verify(vals[0], vals[1], vals[2]); err != nil {
		return "", err
	}
	return vals[0], nil
}

// Verify checks one signed identity. The signature is checked before the expiry, so
// that ErrExpired and ErrTooFarAhead are only ever reported for URLs we really signed.
func (v *Verifier) Verify(userID, exp, sig string) error {
	if !userid.Valid(userID) {
		return ErrBadUserID
	}
	expUnix, err := parseExp(exp)
	if err != nil {
		return err
	}
	// The decoder skips newlines, so the length is checked on the encoded form too:
	// one signature has exactly one accepted spelling.
	got, err := base64.RawURLEncoding.Strict().DecodeString(sig)
	if err != nil || len(sig) != sigLen || len(got) != sha256.Size {
		return fmt.Errorf("%w: sig is not a base64url HMAC-SHA256", ErrMalformed)
	}
	// Check every key, whether or not an earlier one matched, so the time taken does
	// not tell which secret (or whether a rotated-out one) signed the URL.
	match := false
	for _, key := range v.keys {
		if hmac.Equal(mac(key, userID, exp), got) {
			match = true
		}
	}
	if !match {
		return ErrBadSignature
	}
	now := v.Now()
	switch at := time.Unix(expUnix, 0); {
	case at.Before(now.Add(-v.ClockSkew)):
		return ErrExpired
	case at.After(now.Add(v.MaxLifetime + v.ClockSkew)):
		return ErrTooFarAhead
	}
	return nil
}

// parseExp accepts only plain decimal digits: the signature covers the exact string,
// and "+12" or " 12" would otherwise parse to the same instant as "12".
func parseExp(exp string) (int64, error) {
	if exp == "" || len(exp) > maxExpDigits {
		return 0, fmt.Errorf("%w: exp is not unix seconds", ErrMalformed)
	}
	for i := 0; i < len(exp); i++ {
		if exp[i] < '0' || exp[i] > '9' {
			return 0, fmt.Errorf("%w: exp is not unix seconds", ErrMalformed)
		}
	}
	n, err := strconv.ParseInt(exp, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%w: exp is not unix seconds", ErrMalformed)
	}
	return n, nil
}
