package r2creds

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"
)

// What R2 documents, and where:
//
//   - https://developers.cloudflare.com/r2/api/s3/temporary-credentials/ ("Locally
//     (client-side signing)"): build a JWT payload naming the bucket and the scope of
//     access; sign it with HS256 using the parent secret access key; the temporary
//     secret access key is the SHA-256 hex digest of the signed JWT; the session token
//     is base64("jwt/" + <signed-jwt>); the parent access key ID is reused as the
//     temporary access key ID. Paths: paths.prefixPaths (keys starting with any
//     listed prefix) and paths.objectPaths (exact keys); actions, an optional list of
//     S3 operations, narrows the scope further.
//   - https://developers.cloudflare.com/r2/examples/authenticate-r2-temp-credentials/
//     (the reference helper, with jose): claims {bucket, scope, actions?, paths?}
//     with paths = {prefixPaths: [...] or [], objectPaths: [...] or []} when given,
//     protected header {alg: HS256, typ: JWT}, sub = the account ID, iss = the parent
//     access key ID, aud = the S3 endpoint's host, iat = now, exp = now + TTL (default
//     one hour), signed with the UTF-8 bytes of the parent secret; the session token
//     is btoa("jwt/" + jwt), i.e. standard base64 with padding.
//   - The Temporary Credentials API caps ttlSeconds at 604800
//     (https://developers.cloudflare.com/api/resources/r2/subresources/temporary_credentials/);
//     the local-signing pages name no bound, so Mint keeps the API's.
//   - A temporary credential cannot exceed its parent token's permissions, and dies
//     with it (https://developers.cloudflare.com/r2/api/tokens/).

// Permission is a temporary credential's scope (the Temporary Credentials API's
// "permission").
type Permission string

// The four scopes R2 defines
// (https://developers.cloudflare.com/r2/api/s3/temporary-credentials/#scope).
const (
	// ObjectReadOnly reads and lists objects in the bucket.
	ObjectReadOnly Permission = "object-read-only"
	// ObjectReadWrite reads, writes and lists objects in the bucket.
	ObjectReadWrite Permission = "object-read-write"
	// AdminReadOnly also views the bucket's configuration.
	AdminReadOnly Permission = "admin-read-only"
	// AdminReadWrite also edits the bucket's configuration.
	AdminReadWrite Permission = "admin-read-write"
)

// Valid reports whether p is one of the four scopes.
func (p Permission) Valid() bool {
	switch p {
	case ObjectReadOnly, ObjectReadWrite, AdminReadOnly, AdminReadWrite:
		return true
	}
	return false
}

// Actions are the S3 operations a credential may be narrowed to (R2's "Valid
// actions": read, write and multipart).
var Actions = []string{
	"HeadObject", "GetObject", "GetBucketLocation", "ListObjectsV1", "ListObjectsV2", "ListMultipartUploads", "ListParts",
	"PutObject", "DeleteObject", "DeleteObjects", "CopyObject",
	"CreateMultipartUpload", "UploadPart", "UploadPartCopy", "AbortMultipartUpload", "CompleteMultipartUpload",
}

// Bounds and defaults of a credential's lifetime.
const (
	// DefaultTTL is the reference helper's default.
	DefaultTTL = time.Hour
	// MaxTTL is the Temporary Credentials API's maximum (604800 s).
	MaxTTL = 7 * 24 * time.Hour
)

// TokenPrefix starts the decoded session token, before the JWT.
const TokenPrefix = "jwt/"

// ErrInvalid marks an argument Mint refuses.
var ErrInvalid = errors.New("invalid r2 temporary credential request")

// Parent is the R2 API token temporary credentials derive from: its S3 access key ID
// and secret access key, and the account that owns the bucket. It lives only with the
// minter.
type Parent struct {
	AccessKeyID     string
	SecretAccessKey string
	AccountID       string
	// Endpoint is the S3 endpoint the credentials are used with; its host is the
	// JWT's audience. Empty means https://<AccountID>.r2.cloudflarestorage.com (a
	// bucket in a jurisdiction has its own: <AccountID>.eu.r2.cloudflarestorage.com).
	Endpoint string
}

// Audience returns the JWT audience for p: its endpoint's host.
func (p Parent) Audience() (string, error) {
	if p.Endpoint == "" {
		return p.AccountID + ".r2.cloudflarestorage.com", nil
	}
	u, err := url.Parse(p.Endpoint)
	if err != nil || u.Host == "" {
		return "", fmt.Errorf("%w: endpoint %q has no host", ErrInvalid, p.Endpoint)
	}
	return u.Host, nil
}

// Scope is what a temporary credential may do.
type Scope struct {
	// Bucket is the one bucket the credential reaches.
	Bucket string
	// Permission is required.
	Permission Permission
	// Prefixes and Objects, when either is set, limit the credential to keys starting
	// with one of Prefixes or equal to one of Objects; neither set means the whole
	// bucket. A prefix for one user's data ends with "/" (users/<id>/), so that it is
	// not also the start of another's.
	Prefixes []string
	Objects  []string
	// Actions, when set, limits the credential to these operations (see Actions).
	Actions []string
}

// Credentials are a minted temporary credential, for an S3 client's access key ID,
// secret access key and session token (X-Amz-Security-Token).
type Credentials struct {
	AccessKeyID     string
	SecretAccessKey string
	SessionToken    string
	// Expires is when R2 stops accepting them (the JWT's exp).
	Expires time.Time
}

// Claims is the JWT payload, in the reference helper's order.
type Claims struct {
	Bucket   string     `json:"bucket"`
	Scope    Permission `json:"scope"`
	Actions  []string   `json:"actions,omitempty"`
	Paths    *Paths     `json:"paths,omitempty"`
	Subject  string     `json:"sub"`
	Issuer   string     `json:"iss"`
	Audience string     `json:"aud"`
	IssuedAt int64      `json:"iat"`
	Expiry   int64      `json:"exp"`
}

// Paths are a credential's key limits.
type Paths struct {
	PrefixPaths []string `json:"prefixPaths"`
	ObjectPaths []string `json:"objectPaths"`
}

// header is the JWT's protected header, as the reference helper sets it.
var header = base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`))

// Mint returns temporary credentials for s, derived from p, valid for ttl from now.
func Mint(p Parent, s Scope, ttl time.Duration) (Credentials, error) {
	return MintAt(p, s, ttl, time.Now())
}

// MintAt is Mint at the given time (whole seconds, as the JWT keeps them).
func MintAt(p Parent, s Scope, ttl time.Duration, now time.Time) (Credentials, error) {
	c, err := claims(p, s, ttl, now)
	if err != nil {
		return Credentials{}, err
	}
	// As JSON.stringify writes it: no HTML escaping, no trailing newline.
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(c); err != nil {
		return Credentials{}, fmt.Errorf("mint r2 credentials: encode claims: %w", err)
	}
	payload := bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
	jwt := sign(header+"."+base64.RawURLEncoding.EncodeToString(payload), p.SecretAccessKey)
	sum := sha256.Sum256([]byte(jwt))
	return Credentials{
		AccessKeyID:     p.AccessKeyID,
		SecretAccessKey: hex.EncodeToString(sum[:]),
		SessionToken:    base64.StdEncoding.EncodeToString([]byte(TokenPrefix + jwt)),
		Expires:         time.Unix(c.Expiry, 0),
	}, nil
}

// sign appends the HS256 signature of signingInput (header.payload), keyed by the
// UTF-8 bytes of secret, and returns the JWT.
func sign(signingInput, secret string) string {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(signingInput))
	return signingInput + "." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
}

func claims(p Parent, s Scope, ttl time.Duration, now time.Time) (Claims, error) {
	switch {
	case p.AccessKeyID == "" || p.SecretAccessKey == "" || p.AccountID == "":
		return Claims{}, fmt.Errorf("%w: the parent's access key ID, secret and account ID are required", ErrInvalid)
	case s.Bucket == "":
		return Claims{}, fmt.Errorf("%w: no bucket", ErrInvalid)
	case !s.Permission.Valid():
		return Claims{}, fmt.Errorf("%w: permission %q is none of %s, %s, %s, %s", ErrInvalid, s.Permission,
			ObjectReadOnly, ObjectReadWrite, AdminReadOnly, AdminReadWrite)
	case ttl <= 0 || ttl > MaxTTL || ttl%time.Second != 0:
		return Claims{}, fmt.Errorf("%w: ttl %s is not whole seconds in (0, %s]", ErrInvalid, ttl, MaxTTL)
	}
	for _, a := range s.Actions {
		if !slices.Contains(Actions, a) {
			return Claims{}, fmt.Errorf("%w: unknown action %q", ErrInvalid, a)
		}
	}
	for _, k := range slices.Concat(s.Prefixes, s.Objects) {
		if k == "" || strings.HasPrefix(k, "/") {
			return Claims{}, fmt.Errorf("%w: path %q must be a non-empty key or prefix without a leading /", ErrInvalid, k)
		}
	}
	aud, err := p.Audience()
	if err != nil {
		return Claims{}, err
	}
	iat := now.Unix()
	c := Claims{Bucket: s.Bucket, Scope: s.Permission, Actions: s.Actions, Subject: p.AccountID, Issuer: p.AccessKeyID,
		Audience: aud, IssuedAt: iat, Expiry: iat + int64(ttl/time.Second)}
	if len(s.Prefixes) > 0 || len(s.Objects) > 0 {
		c.Paths = &Paths{PrefixPaths: nonNil(s.Prefixes), ObjectPaths: nonNil(s.Objects)}
	}
	return c, nil
}

// nonNil keeps an empty list "[]" in the JSON, as the reference helper sends it.
func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
