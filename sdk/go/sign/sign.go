// Package sign makes sandgate's signed connection URLs from a Go backend:
//
//	wss://<api>/<stage>?userId=<id>&exp=<unix seconds>&sig=<base64url, no padding, of HMAC-SHA256(userId + "." + exp)>
//
// keyed by the UTF-8 bytes of the signing secret. It is the Go twin of the Node signer
// in sdk/node, checked against the same test vectors (sdk/testdata/vectors.json), and
// what sandgate's own verifier accepts. Sign on your backend, never in a browser.
//
//	s, err := sign.NewSigner(os.Getenv("SANDGATE_SIGNING_SECRET"))
//	url, err := s.SignURL("wss://abc123.execute-api.eu-west-1.amazonaws.com/prod", userID)
package sign

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/sandgate/sandgate/internal/userid"
)

// Query parameter names, fixed by the URL format.
const (
	ParamUserID = "userId"
	ParamExp    = "exp"
	ParamSig    = "sig"
)

const (
	// DefaultTTL is how long a URL made by a Signer lives. sandgate refuses URLs that
	// expire more than its maximum lifetime (15 minutes by default) ahead.
	DefaultTTL = 10 * time.Minute
	// MinSecretBytes is the shortest secret accepted: an HMAC key shorter than this
	// can be brute-forced offline from one captured URL.
	MinSecretBytes = 32
)

// Errors of NewSigner and Sign.
var (
	ErrNoSecret   = errors.New("no signing secret configured")
	ErrWeakSecret = fmt.Errorf("signing secret shorter than %d bytes", MinSecretBytes)
	// ErrBadUserID: the id is not user_ and 1 to 64 ASCII letters or digits.
	ErrBadUserID = errors.New("invalid user id")
)

// Signature returns the URL signature for userID and exp under secret:
// base64url without padding of HMAC-SHA256(secret, userID + "." + exp).
func Signature(secret []byte, userID string, exp int64) string {
	return base64.RawURLEncoding.EncodeToString(MAC(secret, userID, strconv.FormatInt(exp, 10)))
}

// MAC is the raw HMAC-SHA256 of userID + "." + exp, exp as it appears in the URL.
func MAC(key []byte, userID, exp string) []byte {
	h := hmac.New(sha256.New, key)
	h.Write([]byte(userID))
	h.Write([]byte{'.'})
	h.Write([]byte(exp))
	return h.Sum(nil)
}

// Signed is one signed identity: the three query parameters of a connection URL.
type Signed struct {
	UserID string
	Exp    int64 // unix seconds
	Sig    string
}

// Query encodes s as a URL query string (without the leading "?").
func (s Signed) Query() string {
	// A fixed order keeps URLs stable and easy to compare.
	return ParamUserID + "=" + url.QueryEscape(s.UserID) +
		"&" + ParamExp + "=" + strconv.FormatInt(s.Exp, 10) +
		"&" + ParamSig + "=" + s.Sig
}

// Signer makes signed connection URLs.
type Signer struct {
	// TTL is how long a signed URL stays valid. Keep it within the verifier's maximum
	// lifetime.
	TTL time.Duration
	// Now returns the current time; tests replace it.
	Now func() time.Time

	key []byte
}

// NewSigner returns a Signer for secret, which must be at least MinSecretBytes long.
func NewSigner(secret string) (*Signer, error) {
	switch {
	case secret == "":
		return nil, ErrNoSecret
	case len(secret) < MinSecretBytes:
		return nil, ErrWeakSecret
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
